"""Every benchmark, one table: figure, value, target, met. JSON into bench/results/.

    make bench            (or: .venv/bin/python bench/run.py [--quick])

Runs, in order: overhead against the bare CLI (real claude, bwrap, the fake
API), dispatch throughput, HTTP accept and latency to turn start, and scale
(vault size, thread count, start-up, memory). About 10 minutes on 2 cores;
``--quick`` shrinks every run for a smoke test.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from common import Result, print_table, save
from dispatch import dispatch
from latency import latency
from overhead import overhead
from scale import scale


async def everything(quick: bool) -> list[Result]:
    results: list[Result] = []
    steps = [
        ("overhead", lambda: overhead(5 if quick else 20)),
        ("dispatch", lambda: dispatch(500 if quick else 5000, 50)),
        ("latency", lambda: latency(10 if quick else 50, 500 if quick else 2000, 100)),
        ("scale", lambda: scale(200 if quick else 1000)),
    ]
    for name, step in steps:
        t0 = time.perf_counter()
        print(f"-- {name} ...", flush=True)
        out = await step()  # type: ignore[no-untyped-call]
        results.extend(out if isinstance(out, list) else [out])
        print(f"   {time.perf_counter() - t0:.0f} s", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    results = asyncio.run(everything(args.quick))
    print()
    print_table(results)
    print(f"\nJSON: {save(results, 'quick' if args.quick else 'latest')}")


if __name__ == "__main__":
    main()
