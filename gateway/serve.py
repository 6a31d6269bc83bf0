"""``vaultgate serve`` and ``vaultgate demo``: running a gateway in the foreground.

Ctrl-C or SIGTERM stops taking new work, gives running turns
``shutdown_grace_s`` to finish, and leaves everything else queued in the
registry for the next start. A second signal skips the grace period.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway import __version__
from gateway.backends.claude import find_claude
from gateway.discovery import load_or_create_token, remove_discovery, write_discovery
from gateway.engine import INDEX_FIELDS, Gateway
from gateway.http.app import build_app, check_binding
from gateway.registry import now_iso
from gateway.settings import Settings
from sandbox import preflight
from vault_adapter import FolderVault, RemoteVault, Vault

log = logging.getLogger("vaultgate")

FIXTURE_VAULT = Path(__file__).resolve().parent.parent / "fixtures" / "vault"


def open_vault(root: Path, settings: Settings) -> Vault:
    """The folder vault at ``root``, or the remote vault ``vault_url`` names (keeping the
    gateway's state under ``root``)."""
    if settings.vault_url:
        return RemoteVault(
            settings.vault_url,
            settings.vault_name,
            token=settings.vault_token or None,
            state_root=root,
            poll_interval_s=settings.vault_poll_s,
            max_note_bytes=settings.max_note_bytes,
            index_fields=INDEX_FIELDS,
        )
    return FolderVault(
        root,
        max_note_bytes=settings.max_note_bytes,
        index_fields=INDEX_FIELDS,
        quiet_window_s=settings.quiet_window_s,
        watch_polling=settings.watch_polling,
        poll_interval_s=settings.poll_interval_s,
        fsync=settings.fsync,
        scratch=root / settings.state_dir / "scratch",
    )


async def machine_preflight(settings: Settings) -> dict[str, object]:
    """What ``/health`` reports about this machine: can claude turns run here?"""
    binary = find_claude(settings)
    bwrap = await preflight("bwrap")
    return {
        "claude": {"ok": binary is not None, "path": str(binary) if binary else None},
        "bwrap": {
            "ok": bwrap.ok,
            "detail": bwrap.detail,
            "fix": bwrap.fix,
            "warnings": list(bwrap.warnings),
        },
    }


def settle_heap() -> None:
    """Once started: collect, then leave everything alive so far (modules, the vault's
    index, the agents, the registry's connections) out of later collections.

    A full collection looks at every object the process has; a gateway that has
    just taken in its vault has hundreds of thousands, and each full collection
    under load stopped the event loop for 23 to 33 ms, enough to set the p99 of
    HTTP accepts on its own. Frozen, the ones that came after took 2 to 4 ms.
    Called again (a benchmark starting gateway after gateway), it first takes
    back what it froze before, so what has died since is freed."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


async def serve(root: Path, settings: Settings) -> int:
    check_binding(settings.host, explicit_token=bool(settings.token))
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
    token = load_or_create_token(gateway.state_dir, settings.token)
    app = build_app(gateway, token, await machine_preflight(settings))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    url = _url(runner, settings.host)
    write_discovery(gateway.state_dir, url, now_iso())
    settle_heap()
    problems = gateway.catalogue.problems()
    log.info(
        "vaultgate %s serving %s on %s (%d agents%s)",
        __version__,
        root,
        url,
        len(gateway.catalogue.agents()),
        f", {len(problems)} broken" if problems else "",
    )
    for problem in problems:
        log.warning("definition %s: %s", problem.path, problem.error)
    try:
        await stop.wait()
    finally:
        remove_discovery(gateway.state_dir)
        await runner.cleanup()
        await gateway.stop()
        if isinstance(gateway.vault, RemoteVault):
            await gateway.vault.aclose()
        log.info("stopped")
    return 0


def _url(runner: web.AppRunner, host: str) -> str:
    """The URL actually listened on (the OS picks the port when it is 0)."""
    for site in runner.sites:
        server = getattr(site, "_server", None)
        for sock in getattr(server, "sockets", None) or []:
            port = sock.getsockname()[1]
            shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
            return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"
    raise RuntimeError("the HTTP server is not listening")


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
