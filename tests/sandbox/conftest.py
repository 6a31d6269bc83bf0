"""Fixtures for the sandbox tests: a workspace, a host directory outside it, real bubblewrap,
the pids cgroup controller."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sandbox import SandboxSpec
from sandbox.pids import NoController, PidsController, find_controller

BASE_ENV = {"PATH": "/usr/bin:/bin"}


@pytest.fixture
def require_bwrap() -> None:
    """These tests are about real bwrap: missing it fails in CI and skips elsewhere."""
    if shutil.which("bwrap") is None:
        message = "bwrap is not installed (apt-get install -y bubblewrap)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def pids_controller() -> PidsController:
    """The pids cgroup controller the process limit uses: missing, fails in CI, skips elsewhere."""
    found = find_controller()
    if isinstance(found, NoController):
        message = f"no usable pids cgroup controller: {found.reason}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "workspace"
    path.mkdir()
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A host directory next to the workspace, holding a file the sandbox must not see."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / "secret.txt").write_text("host secret\n")
    return path


@pytest.fixture
def make_spec(workspace: Path) -> Callable[..., SandboxSpec]:
    def make(**overrides: Any) -> SandboxSpec:
        fields: dict[str, Any] = {"workspace": workspace, "env": BASE_ENV}
        fields.update(overrides)
        return SandboxSpec(**fields)

    return make
