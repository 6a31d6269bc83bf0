"""``vaultgate serve`` and ``vaultgate demo``: running a gateway in the foreground.

Ctrl-C or SIGTERM stops taking new work, gives running turns
``shutdown_grace_s`` to finish, and leaves everything else queued in the
registry for the next start. A second signal skips the grace period.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway import __version__
from gateway.engine import INDEX_FIELDS, Gateway
from gateway.settings import Settings
from vault_adapter import FolderVault

log = logging.getLogger("vaultgate")

FIXTURE_VAULT = Path(__file__).resolve().parent.parent / "fixtures" / "vault"


def open_vault(root: Path, settings: Settings) -> FolderVault:
    return FolderVault(
        root,
        max_note_bytes=settings.max_note_bytes,
        index_fields=INDEX_FIELDS,
        quiet_window_s=settings.quiet_window_s,
        watch_polling=settings.watch_polling,
        poll_interval_s=settings.poll_interval_s,
        fsync=settings.fsync,
    )


def _health_app(gateway: Gateway) -> web.Application:
    async def health(request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "version": __version__, **gateway.status()})

    app = web.Application()
    app.router.add_get("/health", health)
    return app


async def serve(root: Path, settings: Settings) -> int:
    gateway = Gateway(open_vault(root, settings), settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            log.info("stopping: no new turns; running turns get %ss", settings.shutdown_grace_s)
            stop.set()
        else:
            log.info("second signal: interrupting running turns now")
            gateway.queues.hurry()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)

    await gateway.start()
    runner = web.AppRunner(_health_app(gateway), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    problems = gateway.catalogue.problems()
    log.info(
        "vaultgate %s serving %s on http://%s:%s (%d agents%s)",
        __version__,
        root,
        settings.host,
        settings.port,
        len(gateway.catalogue.agents()),
        f", {len(problems)} broken" if problems else "",
    )
    for problem in problems:
        log.warning("definition %s: %s", problem.path, problem.error)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await gateway.stop()
        log.info("stopped")
    return 0


async def demo(settings_overrides: dict[str, Any] | None = None) -> int:
    """A full round trip on a temporary copy of the example vault, offline."""
    with tempfile.TemporaryDirectory(prefix="vaultgate-demo-") as tmp:
        root = Path(tmp) / "vault"
        shutil.copytree(FIXTURE_VAULT, root)
        settings = Settings(**(settings_overrides or {}))
        gateway = Gateway(open_vault(root, settings), settings)
        events = gateway.bus.subscribe()
        print(f"Example vault copied to {root}")
        print("Inbox/welcome.md asks the offline 'echo' agent about the acme-deal subject.\n")
        await gateway.start()
        try:
            done = await asyncio.wait_for(_first_done(events), timeout=60)
        finally:
            await gateway.stop()
        if done.get("status") != "done":
            print(f"The turn failed: {done.get('error')}", file=sys.stderr)
            return 1
        reply = root / str(done["reply"])
        assert gateway.registry is not None
        thread_note = next((root / settings.threads_folder).rglob("*.md"))
        for title, path in (
            ("The inbound note, stamped", root / "Inbox" / "welcome.md"),
            ("The reply note", reply),
            ("The thread note", thread_note),
        ):
            print(f"=== {title}: {path.relative_to(root)} ===")
            print(path.read_text(encoding="utf-8"))
        print("Round trip complete: inbound note -> echo turn -> reply and thread notes.")
    return 0


async def _first_done(events: asyncio.Queue[dict[str, Any] | None]) -> dict[str, Any]:
    while True:
        event = await events.get()
        if event is not None and event["type"] in ("turn.done", "turn.rejected"):
            return event
