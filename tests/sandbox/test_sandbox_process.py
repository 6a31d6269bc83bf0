"""Starting, streaming, bounding and killing confined processes (real bwrap, real signals)."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from sandbox import (
    OutputLineTooLong,
    SandboxedProcess,
    SandboxSpec,
    SandboxStartFailed,
    SandboxTimeout,
    run,
    start,
)

pytestmark = pytest.mark.usefixtures("require_bwrap")

ENGINES = pytest.mark.parametrize("engine", ["bwrap", "none"])


class Sleeper:
    """A long-running child that says when it is ready and is found on the host by a marker."""

    def __init__(self) -> None:
        self.marker = uuid.uuid4().hex
        code = f"print('ready', flush=True); import time; time.sleep(1000)  # {self.marker}"
        self.command = f'/usr/bin/python3 -c "{code}"'

    def pids(self) -> list[int]:
        """Host pids of the live (non-zombie) processes running this sleeper."""
        found = []
        for entry in Path("/proc").iterdir():
            try:
                argv = (entry / "cmdline").read_bytes().rstrip(b"\0").split(b"\0")
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            # The marker is also in the argv of the shell and bwrap that started the sleeper.
            if argv[0] == b"/usr/bin/python3" and self.marker.encode() in argv[-1] and state != "Z":
                found.append(int(entry.name))
        return found


async def gone(pid: int, seconds: float = 5.0) -> None:
    """Wait until process ``pid`` has terminated, using a pidfd (readable once it has)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    terminated = loop.create_future()
    loop.add_reader(pidfd, terminated.set_result, None)
    try:
        async with asyncio.timeout(seconds):
            await terminated
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)


async def read_lines(proc: SandboxedProcess, count: int) -> list[bytes]:
    async with asyncio.timeout(10):
        return [await proc.stdout.readline() for _ in range(count)]


@ENGINES
async def test_kill_leaves_no_process_of_the_group_alive(
    make_spec: Callable[..., SandboxSpec], engine: str
) -> None:
    sleeper = Sleeper()
    script = f"{sleeper.command} & {sleeper.command} & wait"
    async with await start(make_spec(engine=engine), ["sh", "-c", script]) as proc:
        assert await read_lines(proc, 2) == [b"ready\n", b"ready\n"]
        children = sleeper.pids()
        assert len(children) == 2

        await proc.kill(grace=1.0)

        assert proc.returncode is not None
        for pid in children:
            await gone(pid)
        assert sleeper.pids() == []


async def test_kill_reaches_a_child_that_left_the_process_group(
    make_spec: Callable[..., SandboxSpec],
) -> None:
    # Unconfined there is no pid namespace to tear down: only the tree walk finds this one.
    sleeper = Sleeper()
    script = f"setsid {sleeper.command} & wait"
    async with await start(make_spec(engine="none"), ["sh", "-c", script]) as proc:
        assert await read_lines(proc, 1) == [b"ready\n"]
        [child] = sleeper.pids()
        assert os.getpgid(child) != proc.pid

        await proc.kill(grace=1.0)

        await gone(child)
        assert sleeper.pids() == []


@ENGINES
async def test_kill_asks_politely_before_forcing(
    make_spec: Callable[..., SandboxSpec], workspace: Path, engine: str
) -> None:
    script = (
        "trap 'echo cleaned > cleanup.txt; exit 3' TERM; echo ready; while :; do sleep 0.05; done"
    )
    async with await start(make_spec(engine=engine), ["sh", "-c", script]) as proc:
        assert await read_lines(proc, 1) == [b"ready\n"]
        returncode = await proc.kill(grace=5.0)

    assert (workspace / "cleanup.txt").read_text() == "cleaned\n"
    assert returncode == 3


@ENGINES
async def test_kill_forces_a_command_that_ignores_sigterm(
    make_spec: Callable[..., SandboxSpec], engine: str
) -> None:
    script = "trap '' TERM; echo ready; while :; do sleep 0.05; done"
    async with await start(make_spec(engine=engine), ["sh", "-c", script]) as proc:
        assert await read_lines(proc, 1) == [b"ready\n"]
        started = time.monotonic()
        returncode = await proc.kill(grace=0.3)

    assert time.monotonic() - started < 3
    assert returncode != 0


@ENGINES
async def test_time_limit_kills_and_raises(
    make_spec: Callable[..., SandboxSpec], engine: str
) -> None:
    sleeper = Sleeper()
    async with await start(make_spec(engine=engine), ["sh", "-c", sleeper.command]) as proc:
        assert await read_lines(proc, 1) == [b"ready\n"]
        [child] = sleeper.pids()
        started = time.monotonic()
        with pytest.raises(SandboxTimeout) as caught:
            await proc.wait(time_limit=0.5)
        assert caught.value.seconds == 0.5
        assert 0.5 <= time.monotonic() - started < 5
        await gone(child)


async def test_run_applies_its_time_limit(make_spec: Callable[..., SandboxSpec]) -> None:
    with pytest.raises(SandboxTimeout):
        await run(make_spec(), ["sleep", "60"], time_limit=0.2)


async def test_leaving_the_block_on_an_error_kills_the_command(
    make_spec: Callable[..., SandboxSpec],
) -> None:
    sleeper = Sleeper()
    with pytest.raises(RuntimeError, match="caller failed"):
        async with await start(make_spec(), ["sh", "-c", sleeper.command]) as proc:
            assert await read_lines(proc, 1) == [b"ready\n"]
            [child] = sleeper.pids()
            raise RuntimeError("caller failed")
    assert proc.returncode is not None
    await gone(child)


@ENGINES
async def test_stdin_is_fed_then_closed(make_spec: Callable[..., SandboxSpec], engine: str) -> None:
    done = await run(make_spec(engine=engine), ["cat"], stdin=b"prompt text", time_limit=10)
    assert (done.returncode, done.stdout) == (0, b"prompt text")


async def test_stdin_is_closed_when_nothing_is_fed(make_spec: Callable[..., SandboxSpec]) -> None:
    # A command reading stdin must see EOF at once, not wait for input that never comes.
    done = await run(make_spec(), ["cat"], time_limit=10)
    assert (done.returncode, done.stdout) == (0, b"")


async def test_stdout_streams_as_lines(make_spec: Callable[..., SandboxSpec]) -> None:
    async with await start(make_spec(), ["printf", "one\\ntwo\\nlast"]) as proc:
        lines = [line async for line in proc.lines()]
        assert await proc.wait(10) == 0
    assert lines == [b"one\n", b"two\n", b"last"]


async def test_a_line_past_the_cap_is_an_error(make_spec: Callable[..., SandboxSpec]) -> None:
    command = ["/usr/bin/python3", "-c", "print('x' * 5000)"]
    async with await start(make_spec(), command, line_limit=1024) as proc:
        with pytest.raises(OutputLineTooLong) as caught:
            _ = [line async for line in proc.lines()]
    assert caught.value.limit == 1024


async def test_stderr_keeps_only_a_bounded_tail(make_spec: Callable[..., SandboxSpec]) -> None:
    script = "import sys; sys.stderr.write('a' * 100000 + 'THE END')"
    async with await start(
        make_spec(), ["/usr/bin/python3", "-c", script], stderr_limit=1000
    ) as proc:
        await proc.wait(10)
    tail = proc.stderr_tail()
    assert len(tail) == 1000
    assert tail.endswith("THE END")


async def test_missing_command_inside_the_sandbox_fails_with_bwraps_message(
    make_spec: Callable[..., SandboxSpec],
) -> None:
    done = await run(make_spec(), ["/no/such/program"], time_limit=10)
    assert done.returncode != 0
    assert "/no/such/program" in done.stderr_tail


async def test_missing_command_unconfined_is_a_start_failure(
    make_spec: Callable[..., SandboxSpec],
) -> None:
    with pytest.raises(SandboxStartFailed) as caught:
        await run(make_spec(engine="none"), ["/no/such/program"], time_limit=10)
    assert caught.value.program == "/no/such/program"


async def test_unconfined_engine_still_clears_the_environment(
    make_spec: Callable[..., SandboxSpec], workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAULTGATE_TEST_SECRET", "do-not-leak")
    sub = workspace / "sub"
    sub.mkdir()
    done = await run(
        make_spec(engine="none", cwd=Path("sub")), ["sh", "-c", "env; pwd"], time_limit=10
    )
    assert "do-not-leak" not in done.stdout.decode()
    assert done.stdout.decode().splitlines()[-1] == str(sub)
