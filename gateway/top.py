"""``vaultgate top``: the threads as a table, redrawn in place like top(1)."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from gateway.output import table, terminal_width

if TYPE_CHECKING:
    from gateway.cli import Context

COLUMNS = ("thread", "agent", "subject", "status", "turns", "tokens", "cost", "last")
CLEAR = "\x1b[H\x1b[2J"


def _ago(stamp: str | None, now: datetime) -> str:
    if not stamp:
        return "-"
    try:
        then = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return stamp
    seconds = int((now - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{max(seconds, 0)}s ago"


def rows(threads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    return [
        {
            "id": t["id"],
            "thread": t["id"].split(":", 1)[-1],
            "agent": t["agent"],
            "subject": t.get("subject"),
            "status": t["status"],
            "turns": t["turn_count"],
            "tokens": t["input_tokens"] + t["output_tokens"],
            "cost": f"${t['cost_usd']:.4f}",
            "last": _ago(t.get("last_turn_at") or t.get("updated_at"), now),
        }
        for t in threads
    ]


def frame(ctx: Context) -> str:
    if ctx.remote is not None:
        threads = ctx.remote.call("GET", "/api/threads", params={"limit": 200})["threads"]
        source = ctx.remote.url
    else:
        threads = ctx.local.threads(limit=200)
        source = "registry (no gateway running)"
    stamp = datetime.now().strftime("%H:%M:%S")
    header = f"vaultgate top  {stamp}  {len(threads)} threads  {source}"
    body = table(rows(threads), COLUMNS, terminal_width()) if threads else "(no threads yet)"
    return f"{header}\n\n{body}\n"


def run_top(ctx: Context, interval: float, iterations: int = 0) -> int:
    shown = 0
    try:
        while True:
            sys.stdout.write(CLEAR + frame(ctx))
            sys.stdout.flush()
            shown += 1
            if iterations and shown >= iterations:
                return 0
            time.sleep(interval)
    except KeyboardInterrupt:
        sys.stdout.write("\n")
        return 0
