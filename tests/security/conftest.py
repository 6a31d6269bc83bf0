"""Shared pieces of the fuzz tests: example budgets and a live gateway in a thread.

Hypothesis drives plain (synchronous) test functions best, so the HTTP fuzz
tests talk to the server with the standard library's ``http.client``, which
puts exactly the bytes we choose on the wire, while the real gateway and its
real aiohttp app run on their own event loop in a background thread. One
server serves a whole module: starting a gateway per example would spend
the example budget on start-up. Hypothesis keeps its caches (unicode tables,
constants) in the system temp folder rather than in the checkout, and no
example database at all.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir

from gateway.backends import ScriptedBackend
from gateway.http.app import build_app
from gateway.settings import Settings
from tests.helpers.harness import Harness, definition

set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "vaultgate-hypothesis")

TOKEN = "fuzz-token-" + "x" * 20
MAX_BODY = 64 * 1024
EXAMPLES_ENV = "VAULTGATE_FUZZ_EXAMPLES"


def examples(default: int) -> int:
    """The example budget of one property: ``default``, or ``$VAULTGATE_FUZZ_EXAMPLES``."""
    raw = os.environ.get(EXAMPLES_ENV, "").strip()
    return int(raw) if raw else default


def fuzz(default: int, **overrides: Any) -> settings:
    """Hypothesis settings for one property.

    No example database: a failure prints its falsifying example and a
    ``@reproduce_failure`` blob, which is what goes into a bug report. No
    deadline: CI machines are slow and shared.
    """
    return settings(
        max_examples=examples(default),
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        **overrides,
    )


# -- a live gateway -------------------------------------------------------------


@dataclass
class Reply:
    status: int
    content_type: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class ServerErrors(logging.Handler):
    """Collects what the error middleware logs for a 500, to name the bug in a failure."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(self.format(record))


class LiveGateway:
    """A real gateway over a temp vault and the real HTTP app on a free port.

    Both run on an event loop in a daemon thread; tests call :meth:`request`
    from the pytest thread.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = 0
        self.errors = ServerErrors()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._harness: Harness | None = None
        self._runner: web.AppRunner | None = None

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(60)
        logging.getLogger("gateway.http.errors").addHandler(self.errors)

    def stop(self) -> None:
        logging.getLogger("gateway.http.errors").removeHandler(self.errors)
        try:
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(60)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
            self._loop.close()

    def settle(self, seconds: float = 0.2) -> None:
        """Give the server loop time to finish what it does after answering.

        aiohttp logs some errors (a body it cannot drain) after the response
        is sent. Python 3.11 formats a traceback with ``ast``, whose recursion
        guard is not thread-safe, so a traceback formatted in the server thread
        while pytest formats a failure in this one can raise ``SystemError``.
        """
        asyncio.run_coroutine_threadsafe(asyncio.sleep(seconds), self._loop).result(30)

    async def _start(self) -> None:
        (self.root / "Inbox").mkdir(parents=True)
        config = Settings(
            quiet_window_s=0.05,
            agent_wait_s=0.5,
            fsync=False,
            port=0,
            sse_heartbeat_s=0.2,
            http_max_body_bytes=MAX_BODY,
        )
        harness = Harness(root=self.root, settings=config, backend=ScriptedBackend())
        harness.write("Agents/helper.md", definition("helper", extra="channels: [help]\n"))
        harness.write("Agents/solo.md", definition("solo", mode="single-threaded"))
        # A job that exists but never fires on its own, and one that is broken (409).
        harness.write(
            "Jobs/yearly.md",
            "---\ntags: [agent/job]\nagent: helper\ncron: '0 0 1 1 *'\ntz: UTC\n"
            "subject: yearly\n---\nThe yearly brief.\n",
        )
        harness.write(
            "Jobs/broken.md",
            "---\ntags: [agent/job]\nagent: helper\ncron: 'not a cron'\n---\nNever runs.\n",
        )
        gateway = await harness.start()
        runner = web.AppRunner(build_app(gateway, TOKEN, {"claude": {"ok": False}}))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._harness, self._runner = harness, runner

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._harness is not None:
            await self._harness.stop()

    def request(
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        *,
        auth: bool = True,
        timeout: float = 30.0,
    ) -> Reply:
        """Send one request with exactly this target and body; an event stream is not read."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            all_headers = {"Authorization": f"Bearer {TOKEN}"} if auth else {}
            all_headers.update(headers or {})
            conn.request(method, target, body=body, headers=all_headers)
            response = conn.getresponse()
            content_type = response.getheader("Content-Type", "").split(";")[0].strip()
            # The event stream never ends; its status and headers are what we check.
            data = b"" if content_type == "text/event-stream" else response.read()
            return Reply(response.status, content_type, data)
        finally:
            conn.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    server = LiveGateway(tmp_path_factory.mktemp("fuzz") / "vault")
    server.start()
    try:
        yield server
    finally:
        server.stop()
