from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import FIXTURE_VAULT


def check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check", "--vault", str(FIXTURE_VAULT)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def test_check_says_claude_and_bwrap_are_usable_here(claude: Path) -> None:
    done = check({**os.environ, "VAULTGATE_CLAUDE_BIN": str(claude), "ANTHROPIC_API_KEY": "k"})
    assert done.returncode == 0, done.stdout + done.stderr
    lines = {
        line.split()[1]: line
        for line in done.stdout.splitlines()
        if line.strip() and line.split()[0] in ("OK", "WARN", "FAIL")
    }
    assert lines["claude"].startswith("OK") and "2.1." in lines["claude"]
    assert lines["bwrap"].startswith("OK")
    assert lines["credential"].startswith("OK")
    assert "all good" in done.stdout


def test_check_says_what_is_missing_on_a_machine_without_them(tmp_path: Path) -> None:
    python_only = tmp_path / "bin"
    python_only.mkdir()
    env = {"PATH": str(python_only), "VAULTGATE_CLAUDE_BIN": "", "HOME": str(tmp_path)}
    done = check(env)
    assert done.returncode == 1
    out = done.stdout
    assert "FAIL  claude" in out and "not found (PATH)" in out
    assert "npm install -g @anthropic-ai/claude-code" in out
    assert "FAIL  bwrap" in out and "apt-get install -y bubblewrap" in out
    assert "FAIL  credential" in out
