"""Dispatch throughput: inbound notes to replies and thread upserts, instant backend.

    python bench/dispatch.py [--messages 5000] [--subjects 50]

The notes are written before the gateway starts, so the start-up scan takes
them all in at once (the watcher's quiet window plays no part); the clock runs
from the end of start-up to the last reply.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from common import Result, inbound, print_table, start_gateway, wait_turns


async def dispatch(messages: int, subjects: int, fsync: bool = True) -> Result:
    with tempfile.TemporaryDirectory(prefix="vg-bench-") as tmp:
        root = Path(tmp)
        (root / "Agents").mkdir()
        (root / "Agents" / "bench.md").write_text(
            "---\ntags: [agent/definition]\nname: bench\nmode: multi-threaded\n"
            "backend: scripted\n---\nYou are the benchmark agent.\n"
        )
        (root / "Inbox").mkdir()
        for i in range(messages):
            (root / "Inbox" / f"m{i:05d}.md").write_text(inbound(i, subjects))
        t0 = time.perf_counter()
        gateway, _ = await start_gateway(root, fsync=fsync)
        waiting = asyncio.create_task(wait_turns(gateway, messages))
        ready = time.perf_counter()
        await waiting
        elapsed = time.perf_counter() - ready
        await gateway.stop()
    rate = messages / elapsed
    return Result(
        "dispatch throughput (instant backend)",
        rate,
        "turns/s",
        ">= 300",
        rate >= 300,
        {
            "messages": messages,
            "subjects": subjects,
            "seconds": elapsed,
            "startup_s": ready - t0,
            "fsync": fsync,
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--subjects", type=int, default=50)
    parser.add_argument("--no-fsync", action="store_true")
    args = parser.parse_args()
    print_table([asyncio.run(dispatch(args.messages, args.subjects, not args.no_fsync))])


if __name__ == "__main__":
    main()
