"""Cost per turn as vaults and thread counts grow; start-up time; memory over 10,000 turns.

    python bench/scale.py [--messages 4000] [--rounds 5]

Each run dispatches messages with the instant scripted backend (as
``dispatch.py``) into a vault that also holds N ordinary notes, or spreads
them over N threads. Per-turn cost is wall time per turn, each configuration's
median over five rounds (after an unmeasured warm-up run); the figure is the
largest over the smallest. Memory is the gateway process's resident set after
5,000 and after 10,000 turns of the first 10,000-thread run. Each run's
gateway is a fresh interpreter, as a started `vaultgate serve` is.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    Result,
    fill_vault,
    inbound,
    print_table,
    rss_mb,
    settle_disk,
    start_gateway,
    write_agent,
)

_GATEWAY_PARTS = ("Agents", "Inbox", "Messages", "Threads", ".vaultgate")


class Vaults:
    """Where the runs' vaults live; nothing in them is deleted until the very end.

    Deleting thousands of files leaves the disk busy for seconds after (on a
    disk with online discard, each freed block is trimmed), and the run after
    a big deletion measured a third slower. So a run's files are kept (moved
    aside, which frees nothing) and all go when the benchmark is over. The
    ordinary notes of each vault size are written once and reused: each run
    starts from them alone."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self._made: set[int] = set()
        self._runs = itertools.count()

    def fresh(self) -> Path:
        root = self.base / f"run-{next(self._runs)}"
        root.mkdir()
        return root

    def make(self, *sizes: int) -> None:
        """Write each size's ordinary notes that are not written yet (``scale`` writes
        them all before its warm-up, so no measured run follows a fill)."""
        missing = [notes for notes in sizes if notes not in self._made]
        for notes in missing:
            root = self.base / f"vault-{notes}"
            root.mkdir()
            fill_vault(root, notes)
            self._made.add(notes)
        if missing:
            settle_disk()

    def get(self, notes: int) -> Path:
        root = self.base / f"vault-{notes}"
        self.make(notes)
        aside = self.fresh()
        for part in _GATEWAY_PARTS:  # what the last run on this vault left
            if (root / part).exists():
                (root / part).rename(aside / part)
        return root


async def _run(notes: int, messages: int, subjects: int, vaults: Vaults) -> dict[str, Any]:
    """One run: the vault and its inbound notes are made here, the gateway runs in an
    interpreter of its own, as `vaultgate serve` would (nothing an earlier run left
    in this process, its heap or its threads, weighs on the run or on its memory)."""
    root = vaults.get(notes) if notes else vaults.fresh()
    write_agent(root)
    for i in range(messages):
        (root / "Inbox" / f"m{i:05d}.md").write_text(inbound(i, subjects))
    settle_disk()
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-W", "ignore", __file__, "--one", str(root), str(messages),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"scale run on {root} failed:\n{err.decode()[-3000:]}")
    return {"notes": notes, "subjects": subjects, **json.loads(out.decode().splitlines()[-1])}


async def _measure(root: Path, messages: int) -> dict[str, Any]:
    """In the run's own interpreter: start a gateway on ``root`` and time its turns."""
    t0 = time.perf_counter()
    done = 0
    marks: dict[int, float] = {}
    finished = asyncio.Event()

    def listener(event: dict[str, Any]) -> None:
        nonlocal done
        if event["type"] in ("turn.done", "turn.rejected"):
            done += 1
            if done in (messages // 2, messages):
                marks[done] = rss_mb()
            if done >= messages:
                finished.set()

    gateway, _ = await start_gateway(root)
    gateway.bus.add_listener(listener)
    ready = time.perf_counter() - t0
    t1 = time.perf_counter()
    cpu0 = _cpu_s()
    async with asyncio.timeout(1800):
        await finished.wait()
    elapsed = time.perf_counter() - t1
    cpu = _cpu_s() - cpu0
    await gateway.stop()
    return {
        "messages": messages,
        "ready_s": ready,
        "per_turn_ms": elapsed / messages * 1000,
        "cpu_per_turn_ms": cpu / messages * 1000,
        "rss_mid": marks.get(messages // 2),
        "rss_end": marks.get(messages),
    }


def _cpu_s() -> float:
    """This process's CPU time so far (user and system, every thread)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def scale(messages: int, rounds: int = 5) -> list[Result]:
    """Every configuration once per round, after the vaults are written and one
    unmeasured warm-up run; the per-turn costs compared are each configuration's
    median over the rounds (this machine's speed drifts from minute to minute, and
    a configuration should not look costly for running in a slow patch). Every
    other round runs the configurations in the reverse order, so none is always
    the one that runs first, or last. Memory is from the first 10,000-thread run."""
    vault_sizes = (1_000, 10_000, 100_000)
    thread_counts = (10, 1_000, 10_000)
    by_vault: list[list[dict[str, Any]]] = [[] for _ in vault_sizes]
    by_threads: list[list[dict[str, Any]]] = [[] for _ in thread_counts]
    configurations = [
        (runs, n, messages, 50) for runs, n in zip(by_vault, vault_sizes, strict=True)
    ] + [(runs, 0, max(messages, t), t) for runs, t in zip(by_threads, thread_counts, strict=True)]
    with tempfile.TemporaryDirectory(prefix="vg-vaults-") as base:
        vaults = Vaults(Path(base))
        vaults.make(*vault_sizes)
        # A warm-up run first, as long as a measured one: the first run after the
        # vaults were written measured a third to a half slower than the rest of
        # its round in three full runs out of four.
        await _run(0, messages, 50, vaults)
        for round_ in range(rounds):
            order = configurations if round_ % 2 == 0 else configurations[::-1]
            for runs, notes, count, subjects in order:
                runs.append(await _run(notes, count, subjects, vaults))
    median = statistics.median
    costs = [median(r["per_turn_ms"] for r in runs) for runs in by_vault + by_threads]
    ratio = max(costs) / min(costs)
    # Beside the figure (time a turn, as dispatch measures it): the gateway's CPU a
    # turn, which does not depend on how many turns can run side by side.
    cpu = [median(r["cpu_per_turn_ms"] for r in runs) for runs in by_vault + by_threads]
    labels = [f"{n} notes" for n in vault_sizes] + [f"{t} threads" for t in thread_counts]
    ready = median(r["ready_s"] for r in by_vault[-1])
    big = by_threads[-1][0]
    growth = (big["rss_end"] - big["rss_mid"]) / big["rss_mid"] * 100
    return [
        Result(
            "per-turn cost, largest / smallest",
            ratio,
            "x",
            "<= 1.2",
            ratio <= 1.2,
            {
                "per_turn_ms": dict(zip(labels, costs, strict=True)),
                "cpu_per_turn_ms": dict(zip(labels, cpu, strict=True)),
                "vaults": by_vault,
                "threads": by_threads,
            },
        ),
        Result("start to ready, 100,000 notes", ready, "s", "<= 5", ready <= 5, {}),
        Result(
            f"RSS after {big['messages']} turns",
            big["rss_end"],
            "MB",
            "<= 150",
            big["rss_end"] <= 150,
            {},
        ),
        Result(
            "RSS growth, half to all turns",
            growth,
            "%",
            "<= 10",
            growth <= 10,
            {"mid_mb": big["rss_mid"], "end_mb": big["rss_end"]},
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--one", nargs=2, metavar=("VAULT", "MESSAGES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # one run, in its own interpreter (see _run)
        print(json.dumps(asyncio.run(_measure(Path(args.one[0]), int(args.one[1])))))
        return
    print_table(asyncio.run(scale(args.messages, args.rounds)))


if __name__ == "__main__":
    main()
