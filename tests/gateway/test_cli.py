from __future__ import annotations

import subprocess
import sys


def test_demo_runs_a_full_round_trip_offline() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "=== The reply note" in out and "=== The thread note" in out
    assert "status: done" in out
    assert "> What changed in the Acme contract since last week?" in out
    assert "turn_count: 1" in out


def test_serve_without_a_vault_says_what_to_do(tmp_path: object) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--vault", "/nonexistent/vault"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2
    assert "no vault at /nonexistent/vault" in done.stderr
