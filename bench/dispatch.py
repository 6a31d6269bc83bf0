"""Dispatch throughput: inbound notes to replies and thread upserts, instant backend.

    python bench/dispatch.py [--messages 5000] [--subjects 50] [--rounds 5]

The notes are written before the gateway starts, so the start-up scan takes
them all in at once (the watcher's quiet window plays no part); the clock runs
from the end of start-up to the last reply. The floor, measured right after
each run, is the same note reads and writes done straight through the vault
adapter (see ``floor``). Five rounds, each a fresh gateway and its floor; the
figure is the median, and the JSON has every round.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

from common import Result, inbound, print_table, run_dir, settle_disk, start_gateway, wait_turns

from vault_adapter import FolderVault


async def floor(messages: int, subjects: int) -> float:
    """Turns/s of the note work alone: per message the same reads and writes a turn
    makes (arrival, running and final stamps, the reply, the thread note), through
    the same adapter, subjects side by side and each subject's turns in order, with
    no registry, queues, routing or watcher."""
    with run_dir("floor-") as tmp:
        root = Path(tmp)
        (root / "Inbox").mkdir()
        for i in range(messages):
            (root / "Inbox" / f"m{i:05d}.md").write_text(inbound(i, subjects))
        settle_disk()
        vault = FolderVault(root, scratch=root / ".vaultgate" / "scratch")

        async def subject(s: int) -> None:
            for i in range(s, messages, subjects):
                note = f"Inbox/m{i:05d}.md"
                turn = f"20261121-000000-{i:012x}"
                thread = f"Threads/bench/s{s}.md"
                await vault.update_fields(
                    note,
                    {
                        "tags": ["agent/message"],
                        "direction": "inbound",
                        "id": turn,
                        "status": "queued",
                        "received_at": "2026-11-21T00:00:00Z",
                        "thread": f"[[{thread[:-3]}]]",
                    },
                )
                await vault.read(note)
                await vault.update_fields(note, {"status": "running"})
                reply = f"Messages/bench/2026-11-21/{turn}.md"
                await vault.create(reply, {"id": turn, "status": "done"}, "reply\n")
                section = f"\n<!-- turn {turn} -->\n### {turn}\nmessage {i}\n\nreply\n"
                fields = {"turn_count": i // subjects + 1, "status": "idle"}
                if i < subjects:
                    await vault.create(thread, fields, section)
                else:
                    await vault.update_fields(thread, fields, append_once=(turn, section))
                await vault.update_fields(
                    note, {"status": "done", "reply": f"[[{reply[:-3]}]]", "finished_at": "x"}
                )

        t0 = time.perf_counter()
        await asyncio.gather(*(subject(s) for s in range(subjects)))
        return messages / (time.perf_counter() - t0)


async def _gateway_rate(messages: int, subjects: int, fsync: bool) -> tuple[float, float]:
    """Turns/s through a freshly started gateway, and its start-up time."""
    with run_dir("gateway-") as tmp:
        root = Path(tmp)
        (root / "Agents").mkdir()
        (root / "Agents" / "bench.md").write_text(
            "---\ntags: [agent/definition]\nname: bench\nmode: multi-threaded\n"
            "backend: scripted\n---\nYou are the benchmark agent.\n"
        )
        (root / "Inbox").mkdir()
        for i in range(messages):
            (root / "Inbox" / f"m{i:05d}.md").write_text(inbound(i, subjects))
        settle_disk()
        t0 = time.perf_counter()
        gateway, _ = await start_gateway(root, fsync=fsync)
        waiting = asyncio.create_task(wait_turns(gateway, messages))
        ready = time.perf_counter()
        await waiting
        elapsed = time.perf_counter() - ready
        await gateway.stop()
    return messages / elapsed, ready - t0


async def dispatch(messages: int, subjects: int, fsync: bool = True, rounds: int = 5) -> Result:
    """The median of ``rounds`` runs, each followed by its floor: this machine's speed
    drifts by a fifth from minute to minute, and one run can land in a slow patch."""
    rates: list[float] = []
    floors: list[float] = []
    startups: list[float] = []
    for _ in range(rounds):
        rate, startup = await _gateway_rate(messages, subjects, fsync)
        rates.append(rate)
        startups.append(startup)
        floors.append(await floor(messages, subjects))
    rate, floor_rate = statistics.median(rates), statistics.median(floors)
    return Result(
        "dispatch throughput (instant backend)",
        rate,
        "turns/s",
        ">= 300",
        rate >= 300,
        {
            "messages": messages,
            "subjects": subjects,
            "rounds": rounds,
            "turns_per_s": rates,
            "startup_s": startups,
            "fsync": fsync,
            "floor_turns_per_s": floors,
            "share_of_floor": rate / floor_rate,
        },
        floor=f"{floor_rate:.0f} turns/s (note work alone)",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--subjects", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-fsync", action="store_true")
    args = parser.parse_args()
    result = dispatch(args.messages, args.subjects, not args.no_fsync, args.rounds)
    print_table([asyncio.run(result)])


if __name__ == "__main__":
    main()
