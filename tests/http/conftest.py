"""A real aiohttp server on a free port in front of a real in-process gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.backends import ScriptedBackend
from gateway.http.app import build_app
from gateway.settings import Settings
from tests.helpers.harness import Harness, definition

TOKEN = "test-token-" + "x" * 20


@dataclass
class Api:
    harness: Harness
    url: str
    session: aiohttp.ClientSession

    def auth(self, token: str = TOKEN) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    async def get(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with self.session.get(self.url + path, headers=self.auth(), **kwargs) as r:
            return r.status, await _body(r)

    async def post(self, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
        async with self.session.post(
            self.url + path, json=body, headers=self.auth(), **kwargs
        ) as r:
            return r.status, await _body(r)


async def _body(response: aiohttp.ClientResponse) -> Any:
    if response.content_type == "application/json":
        return await response.json()
    return await response.text()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    root = tmp_path / "vault"
    (root / "Inbox").mkdir(parents=True)
    settings = Settings(
        quiet_window_s=0.05,
        agent_wait_s=0.5,
        fsync=False,
        port=0,
        sse_heartbeat_s=0.2,
        http_max_body_bytes=64 * 1024,
    )
    harness = Harness(root=root, settings=settings, backend=ScriptedBackend())
    harness.write("Agents/helper.md", definition("helper", extra="channels: [help]\n"))
    gateway = await harness.start()
    runner = web.AppRunner(build_app(gateway, TOKEN, {"claude": {"ok": False}}))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    async with aiohttp.ClientSession() as session:
        yield Api(harness, f"http://127.0.0.1:{port}", session)
    await runner.cleanup()
    await harness.stop()
