"""Run a confined command as an asyncio subprocess, and make sure it ends.

``start`` launches the command in a process group of its own with stdin either closed or fed
and then closed (a command must never wait on input nobody will send). The caller reads stdout
as a stream, framed into lines with a size cap; stderr is drained in the background into a
bounded tail, kept for error messages. Every process is bounded: ``wait(time_limit)`` kills on
expiry, ``kill()`` escalates SIGTERM -> grace period -> SIGKILL over the whole tree and reaps,
and leaving the ``async with`` block kills whatever is still running. The spec's
``max_processes`` puts the command in a pids cgroup of its own from its first instruction
(pids.py); ``kill()`` also empties that cgroup, which catches what left the tree (a daemon that
double-forked away), and removes it once the command is reaped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from sandbox import pids, proctree
from sandbox.errors import OutputLineTooLong, SandboxStartFailed, SandboxTimeout
from sandbox.launch import Launch, plan_launch
from sandbox.spec import SandboxSpec

LINE_LIMIT = 16 * 1024 * 1024
"""Longest stdout line accepted (claude's stream-json lines carry whole tool results)."""
STDERR_TAIL = 64 * 1024
"""How much of the end of stderr is kept."""
KILL_GRACE = 3.0
"""Seconds between SIGTERM and SIGKILL."""
_PIPE_GRACE = 1.0
"""How long to wait for stderr to reach EOF once the process has exited."""
_FOLLOW_S = 0.05
"""How often output written to a file is looked at again while the command runs."""


class _ExitAwareProtocol(asyncio.subprocess.SubprocessStreamProtocol):
    """Stream protocol that also reports the moment the process exits.

    ``asyncio.subprocess.Process.wait`` only returns once every pipe has closed too; a caller
    that stopped reading stdout (a line over the cap, a cancelled turn) would block it forever.
    Exit is what kill() needs to know, so it gets an event of its own.
    """

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=limit, loop=loop)
        self.exited = asyncio.Event()

    def process_exited(self) -> None:
        super().process_exited()
        self.exited.set()


class SandboxedProcess:
    """A started command. Read ``stdout`` or ``lines()``, then ``wait()``; or ``kill()``.

    Use it as ``async with``: leaving the block kills what is left and closes the pipes.
    """

    def __init__(
        self,
        transport: asyncio.SubprocessTransport,
        protocol: _ExitAwareProtocol,
        launch: Launch,
        *,
        leader_is_monitor: bool,
        stdin: bytes | None,
        line_limit: int,
        stderr_limit: int,
        stdout_file: tuple[Path, int] | None = None,
        cgroup: pids.RunCgroup | None = None,
        process_limit_error: str | None = None,
    ) -> None:
        assert protocol.stderr is not None
        assert stdout_file is not None or protocol.stdout is not None
        self.launch = launch
        self.stdout: asyncio.StreamReader | None = protocol.stdout
        self._stdout_file = stdout_file
        self._transport = transport
        self._protocol = protocol
        self._leader_is_monitor = leader_is_monitor
        self._cgroup = cgroup
        self.process_limit_error = process_limit_error
        """Why the spec's ``max_processes`` could not be applied (None: it was, or none asked)."""
        self._line_limit = line_limit
        self._stderr = bytearray()
        self._stderr_limit = stderr_limit
        self._tasks = [asyncio.create_task(self._drain_stderr(protocol.stderr))]
        if stdin is not None:
            assert protocol.stdin is not None
            self._tasks.append(asyncio.create_task(self._feed(protocol.stdin, stdin)))

    @property
    def pid(self) -> int:
        """Pid of the process we started (for bwrap: its monitor), also its process group id."""
        return self._transport.get_pid()

    @property
    def process_limit(self) -> int | None:
        """The ``pids.max`` the command runs under; None when it runs without a limit."""
        return None if self._cgroup is None else self._cgroup.limit

    @property
    def cgroup(self) -> Path | None:
        """The command's own pids cgroup (removed once it has been reaped by ``kill``)."""
        return None if self._cgroup is None else self._cgroup.path

    @property
    def returncode(self) -> int | None:
        """The exit status once the process has exited (and been reaped), else None."""
        return self._transport.get_returncode()

    def stderr_tail(self) -> str:
        """The last bytes of stderr (at most ``stderr_limit``), decoded leniently."""
        return self._stderr.decode("utf-8", "replace")

    async def lines(self) -> AsyncIterator[bytes]:
        """Stdout split into lines (with their newline; a final unterminated line too)."""
        if self._stdout_file is not None:
            async for line in self._file_lines(*self._stdout_file):
                yield line
            return
        assert self.stdout is not None
        while True:
            try:
                yield await self.stdout.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:
                if exc.partial:
                    yield exc.partial
                return
            except asyncio.LimitOverrunError as exc:
                raise OutputLineTooLong(self._line_limit) from exc

    async def _file_lines(self, path: Path, offset: int) -> AsyncIterator[bytes]:
        # Output that goes to a file is read by following the file: there is no pipe to
        # wait on, so the reader looks again every _FOLLOW_S until the command has exited.
        buffer = b""
        with open(path, "rb") as fh:  # noqa: ASYNC230 (reads of a local file we follow)
            fh.seek(offset)
            while True:
                exited = self._protocol.exited.is_set()
                chunk = await asyncio.to_thread(fh.read, 1 << 20)
                if chunk:
                    buffer += chunk
                    *complete, buffer = buffer.split(b"\n")
                    for line in complete:
                        yield line + b"\n"
                    if len(buffer) > self._line_limit:
                        raise OutputLineTooLong(self._line_limit)
                    continue
                if exited:
                    if buffer:
                        yield buffer
                    return
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_FOLLOW_S):
                        await self._protocol.exited.wait()

    async def wait(self, time_limit: float | None = None) -> int:
        """The exit status; past ``time_limit`` seconds, kill and raise ``SandboxTimeout``."""
        try:
            async with asyncio.timeout(time_limit):
                await self._protocol.exited.wait()
        except TimeoutError:
            returncode = await self.kill()
            raise SandboxTimeout(time_limit or 0.0, returncode) from None
        return await self.kill()  # the command is done; this sweeps what it left behind

    async def kill(self, grace: float = KILL_GRACE) -> int:
        """End the command and everything it started; reap it; return its exit status."""
        tree: set[proctree.ProcessKey] = set()
        if self.returncode is None:
            # Snapshot the tree while the parent links still lead to it: once a process dies
            # its children are re-parented away and can no longer be found from here.
            tree = proctree.descendants(self.pid)
            # SIGTERM first, so the command can finish cleanly (claude writes its session
            # file). bwrap's monitor is spared when there is a tree: killing it would SIGKILL
            # the sandbox at once through --die-with-parent; it exits when its child does.
            proctree.signal_processes(tree, signal.SIGTERM)
            if not (self._leader_is_monitor and tree):
                proctree.signal_group(self.pid, signal.SIGTERM)
            # Wait briefly: the grace period is the command's only chance to clean up.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self._protocol.exited.wait()
            tree |= proctree.descendants(self.pid)
        # SIGKILL what is left: the group (children that stayed in it, even orphaned ones)
        # and the tree found above (children that moved to a session of their own). Once the
        # leader is reaped its pid could in principle be reused, but not while any member of
        # its group lives, and pids cycle through the whole pid space before coming back.
        proctree.signal_group(self.pid, signal.SIGKILL)
        proctree.signal_processes(tree, signal.SIGKILL)
        if self._cgroup is not None:
            # And whatever is in the command's cgroup: nothing it started can leave that.
            self._cgroup.kill()
        # Reap: asyncio's child watcher collects the exit status (no zombie is left); the
        # event fires only after it has, so returncode is set from here on.
        await self._protocol.exited.wait()
        # Let stderr reach EOF so stderr_tail() is complete, but only briefly: a descendant
        # that escaped every signal could hold the pipe open forever.
        await asyncio.wait(self._tasks, timeout=_PIPE_GRACE)
        if self._cgroup is not None:
            # Only now, with the command reaped: kill stragglers until the cgroup is empty (a
            # sandbox's processes die with its pid 1, but not all in the same instant), remove it.
            await self._cgroup.remove()
        returncode = self.returncode
        assert returncode is not None
        return returncode

    async def close(self) -> None:
        """Kill whatever is still running, then release the pipes (unread output is dropped)."""
        await self.kill()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._transport.close()

    async def __aenter__(self) -> SandboxedProcess:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Whatever happened in the block (an error, a cancellation), nothing outlives it.
        await self.close()

    async def _drain_stderr(self, stream: asyncio.StreamReader) -> None:
        # Always drained, or a chatty command would block on a full pipe.
        while chunk := await stream.read(64 * 1024):
            self._stderr += chunk
            del self._stderr[: -self._stderr_limit]

    @staticmethod
    async def _feed(stdin: asyncio.StreamWriter, data: bytes) -> None:
        try:
            stdin.write(data)
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the command exited without reading it all; its exit status says why
        finally:
            # Closing is what tells the command there is no more input.
            stdin.close()


async def start(
    spec: SandboxSpec,
    command: Sequence[str],
    *,
    stdin: bytes | None = None,
    line_limit: int = LINE_LIMIT,
    stderr_limit: int = STDERR_TAIL,
    search_path: str | None = None,
    stdout_file: Path | None = None,
) -> SandboxedProcess:
    """Start ``command`` confined by ``spec``; ``stdin`` is written then closed (None: closed).

    ``stdout_file``: append the command's stdout to this file instead of a pipe, and
    follow the file in ``lines()``. Some programs (the claude CLI among them) lose the
    end of a large write to a pipe when they exit; a file never makes them wait.
    """
    launch = plan_launch(spec, command, search_path=search_path)
    loop = asyncio.get_running_loop()
    out_fd: int | None = None
    follow: tuple[Path, int] | None = None
    if stdout_file is not None:
        out_fd = os.open(stdout_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        follow = (stdout_file, os.fstat(out_fd).st_size)
    cgroup, limit_error = pids.cgroup_for_run(spec.max_processes)
    try:
        transport, protocol = await loop.subprocess_exec(
            lambda: _ExitAwareProtocol(line_limit, loop),
            *launch.argv,
            stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
            stdout=subprocess.PIPE if out_fd is None else out_fd,
            stderr=subprocess.PIPE,
            env=dict(launch.env),
            cwd=launch.cwd,
            # A new session makes the command a process group leader with no controlling
            # terminal: one killpg reaches all it forks, and a ^C meant for us never reaches it.
            start_new_session=True,
            # Into its cgroup before exec, so not one fork of the command escapes the limit.
            preexec_fn=None if cgroup is None else cgroup.enter_hook(),
        )
    except BaseException as exc:
        # Nothing runs in the cgroup now: the start failed, or (cancelled) asyncio has killed
        # and reaped what it had started.
        if cgroup is not None:
            await cgroup.remove()
        if isinstance(exc, OSError):
            raise SandboxStartFailed(launch.argv[0], exc.strerror or str(exc)) from exc
        if isinstance(exc, subprocess.SubprocessError):  # only our preexec_fn raises it
            raise SandboxStartFailed(launch.argv[0], "could not enter its pids cgroup") from exc
        raise
    finally:
        if out_fd is not None:
            os.close(out_fd)  # the child has its own copy
        if cgroup is not None:
            cgroup.entered()
    return SandboxedProcess(
        transport,
        protocol,
        launch,
        leader_is_monitor=spec.engine == "bwrap",
        stdin=stdin,
        line_limit=line_limit,
        stderr_limit=stderr_limit,
        stdout_file=follow,
        cgroup=cgroup,
        process_limit_error=limit_error,
    )


@dataclass(frozen=True)
class Completed:
    """The outcome of ``run``."""

    returncode: int
    stdout: bytes
    stderr_tail: str


async def run(
    spec: SandboxSpec,
    command: Sequence[str],
    *,
    time_limit: float,
    stdin: bytes | None = None,
    search_path: str | None = None,
) -> Completed:
    """Run ``command`` to completion, collecting stdout; ``SandboxTimeout`` past ``time_limit``."""
    async with await start(spec, command, stdin=stdin, search_path=search_path) as proc:
        assert proc.stdout is not None
        reader = asyncio.create_task(proc.stdout.read())
        try:
            returncode = await proc.wait(time_limit)
            async with asyncio.timeout(_PIPE_GRACE):
                stdout = await reader
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        return Completed(returncode, stdout, proc.stderr_tail())
