"""The CLI as a user runs it: real processes, a real ``vaultgate serve``, a pty for top."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.helpers.serve import Serve


def vg(
    *args: str, vault: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "gateway.cli", *args]
    if vault is not None:
        argv += ["--vault", str(vault)]
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


async def avg(*args: str, vault: Path | None = None) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(vg, *args, vault=vault)


@pytest.fixture
def vault(tmp_path: Path) -> Path:
    root = tmp_path / "notes"
    done = vg("init", str(root))
    assert done.returncode == 0, done.stderr
    return root


@pytest.fixture
async def served(vault: Path) -> AsyncIterator[Serve]:
    serve = Serve(vault)
    await serve.start()
    yield serve
    assert await serve.terminate() == 0
    assert not (vault / ".vaultgate" / "gateway.json").exists()


def test_init_creates_a_vault_and_never_overwrites(vault: Path) -> None:
    assert (vault / "Agents" / "echo.md").exists()
    assert (vault / "vaultgate.toml").exists()
    (vault / "Agents" / "echo.md").write_text("mine")
    again = vg("init", str(vault))
    assert "kept     Agents/echo.md" in again.stdout
    assert (vault / "Agents" / "echo.md").read_text() == "mine"


async def test_init_then_serve_answers_the_welcome_note(served: Serve, vault: Path) -> None:
    deadline = time.monotonic() + 20
    while "status: done" not in (vault / "Inbox" / "welcome.md").read_text():
        assert time.monotonic() < deadline, "the welcome note was not answered"
        await asyncio.sleep(0.05)
    gateway = json.loads((vault / ".vaultgate" / "gateway.json").read_text())
    assert gateway["pid"] == served.proc.pid and gateway["url"].startswith("http://127.0.0.1:")
    assert oct((vault / ".vaultgate" / "token").stat().st_mode & 0o777) == "0o600"


async def test_send_wait_prints_the_reply_and_listings_parse(served: Serve, vault: Path) -> None:
    sent = await avg("send", "echo", "ping from the cli", "--subject", "cli", "--wait", vault=vault)
    assert sent.returncode == 0, sent.stderr
    assert "> ping from the cli" in sent.stdout
    agents = json.loads((await avg("agents", "-o", "json", vault=vault)).stdout)
    assert {a["name"] for a in agents} == {"echo", "assistant"}
    threads = json.loads((await avg("threads", "list", "-o", "json", vault=vault)).stdout)
    assert "echo:echo--cli" in {t["id"] for t in threads}
    lines = (await avg("threads", "messages", "echo--cli", "-o", "jsonl", vault=vault)).stdout
    [msg] = [json.loads(line) for line in lines.splitlines()]
    assert msg["text"] == "ping from the cli" and msg["sender"] == "cli"
    shown = json.loads(
        (await avg("threads", "show", "echo:echo--cli", "-o", "json", vault=vault)).stdout
    )
    assert shown["turn_count"] == 1
    table = (await avg("threads", "list", vault=vault)).stdout
    assert all(len(line) <= 80 for line in table.splitlines())
    assert table.splitlines()[0].split()[:3] == ["THREAD", "AGENT", "STATUS"]
    events = await avg("threads", "events", "echo--cli", "-o", "json", vault=vault)
    assert events.returncode == 0 and isinstance(json.loads(events.stdout), list)


async def test_interventions_through_the_cli(served: Serve, vault: Path) -> None:
    await avg("send", "echo", "one", "--subject", "ctl", "--wait", vault=vault)
    paused = await avg("pause", "echo--ctl", vault=vault)
    assert paused.stdout.strip() == "echo:echo--ctl: paused"
    resumed = await avg("resume", "echo:echo--ctl", "-o", "json", vault=vault)
    assert json.loads(resumed.stdout)["status"] == "idle"
    missing = await avg("terminate", "nope", vault=vault)
    assert missing.returncode == 1 and "no thread 'nope'" in missing.stderr


def test_without_a_gateway_reads_come_from_the_vault_and_send_writes_the_note(
    vault: Path,
) -> None:
    sent = vg("send", "echo", "while nobody runs", "-o", "json", vault=vault)
    assert sent.returncode == 0, sent.stderr
    note = vault / json.loads(sent.stdout)["note"]
    assert "while nobody runs" in note.read_text() and "status: queued" in note.read_text()
    agents = json.loads(vg("agents", "-o", "json", vault=vault).stdout)
    assert {a["status"] for a in agents} == {"stopped"}
    listing = vg("threads", "list", vault=vault)
    assert listing.returncode == 1 and "the gateway has not run on this vault" in listing.stderr
    paused = vg("pause", "echo:x", vault=vault)
    assert paused.returncode == 1 and "no gateway is running" in paused.stderr
    waited = vg("send", "echo", "x", "--wait", vault=vault)
    assert waited.returncode == 1 and "--wait" in waited.stderr


def test_errors_say_what_to_do(tmp_path: Path) -> None:
    done = vg("agents", vault=tmp_path / "missing")
    assert done.returncode == 2 and "vaultgate init DIR" in done.stderr


async def test_top_draws_a_table_in_place_in_a_terminal(served: Serve, vault: Path) -> None:
    await avg("send", "echo", "for top", "--subject", "top", "--wait", vault=vault)
    pid, fd = pty.fork()
    if pid == 0:  # the child: vaultgate top on a real terminal
        os.execvp(
            sys.executable,
            [
                sys.executable,
                "-m",
                "gateway.cli",
                "top",
                "--vault",
                str(vault),
                "--interval",
                "0.1",
                "--iterations",
                "3",
            ],
        )
    output = await asyncio.to_thread(_read_all, fd, 20.0)
    _, status = await asyncio.to_thread(os.waitpid, pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    screen = output.decode(errors="replace")
    assert screen.count("\x1b[H\x1b[2J") == 3  # redrawn in place, three times
    last = screen.rsplit("\x1b[H\x1b[2J", 1)[1]
    assert "vaultgate top" in last
    assert "THREAD" in last and "TOKENS" in last and "COST" in last
    assert "echo--top" in last


def _read_all(fd: int, timeout: float) -> bytes:
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def test_binding_beyond_loopback_needs_an_explicit_token(vault: Path) -> None:
    done = vg("serve", "--host", "0.0.0.0", "--port", "0", vault=vault, timeout=30)
    assert done.returncode == 2
    assert "refusing to listen on 0.0.0.0 without an explicit token" in done.stderr


def test_a_stale_discovery_file_is_recognised_by_its_pid(vault: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    state = vault / ".vaultgate"
    state.mkdir(exist_ok=True)
    (state / "gateway.json").write_text(
        json.dumps({"pid": int(dead.stdout), "url": "http://127.0.0.1:9", "started_at": "then"})
    )
    sent = vg("send", "echo", "after a crash", "-o", "json", vault=vault)
    assert sent.returncode == 0, sent.stderr  # wrote the note; did not call the dead URL
    assert (vault / json.loads(sent.stdout)["note"]).exists()


async def test_jobs_list_and_run(served: Serve, vault: Path) -> None:
    (vault / "Jobs").mkdir()
    (vault / "Jobs" / "brief.md").write_text(
        "---\ntags: [agent/job]\nagent: echo\ncron: '0 9 * * *'\n---\nBrief me.\n"
    )
    deadline = time.monotonic() + 10
    while True:
        listed = await avg("jobs", "list", "-o", "json", vault=vault)
        jobs = json.loads(listed.stdout) if listed.returncode == 0 else []
        if jobs:
            break
        assert time.monotonic() < deadline, listed.stderr
        await asyncio.sleep(0.05)
    assert jobs[0]["id"] == "brief" and jobs[0]["status"] == "enabled"
    ran = await avg("jobs", "run", "brief", "-o", "json", vault=vault)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["status"] == "queued"
