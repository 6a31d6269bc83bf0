"""A real ``vaultgate serve`` subprocess for tests, and its log."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path


class Serve:
    """One ``vaultgate serve`` subprocess and its log."""

    def __init__(self, root: Path, env: dict[str, str] | None = None) -> None:
        self.root = root
        self.extra_env = env or {}
        self.proc: asyncio.subprocess.Process | None = None
        self.log: list[str] = []
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        env = {
            **os.environ,
            "VAULTGATE_TEST_BACKENDS": "1",
            "VAULTGATE_QUIET_WINDOW_S": "0.05",
            "VAULTGATE_PORT": "0",
            **self.extra_env,
        }
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway.cli",
            "serve",
            "--vault",
            str(self.root),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        ready = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read(ready))
        await asyncio.wait_for(ready, 30)

    async def _read(self, ready: asyncio.Future[None]) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.log.append(line)
            if " serving " in line and not ready.done():
                ready.set_result(None)
        if not ready.done():
            ready.set_exception(RuntimeError("serve exited:\n" + "\n".join(self.log[-20:])))

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()
        if self._reader is not None:
            await self._reader

    async def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.proc.wait(), 30)
        if self._reader is not None:
            await self._reader
        return code

    @property
    def url(self) -> str:
        data = json.loads((self.root / ".vaultgate" / "gateway.json").read_text())
        return str(data["url"])

    @property
    def token(self) -> str:
        return (self.root / ".vaultgate" / "token").read_text().strip()
