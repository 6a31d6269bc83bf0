"""Fixtures for the reliability tests: small disks, and the figures printed at the end.

Each test prints one ``RELIABILITY <test>: ...`` line of figures (messages
sent, lost, duplicated; edits lost; peak RSS; health p99). Passing tests'
output is captured by pytest, so the lines are printed again in a section of
the terminal summary, where the CI log always shows them.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.reliability.support import FIGURES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("reliability figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


def _cannot(message: str) -> None:
    # CI runs as root and must exercise the full-disk path; elsewhere, say why not.
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def tmpfs() -> Iterator[Callable[[Path, str], Path]]:
    """Mount a tmpfs of a given size on a folder (root only); unmounted afterwards."""
    mounted: list[Path] = []

    def mount(target: Path, size: str) -> Path:
        if os.geteuid() != 0:
            _cannot("mounting a small tmpfs needs root")
        target.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(target)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if done.returncode != 0:
            _cannot(f"cannot mount a tmpfs on {target}: {done.stderr.strip()}")
        mounted.append(target)
        return target

    yield mount
    for target in reversed(mounted):
        # Lazy: a watcher thread that has not let go yet must not leave the mount behind.
        subprocess.run(["umount", "-l", str(target)], capture_output=True, timeout=30)
