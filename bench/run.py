"""Every benchmark, one table: figure, value, target, met. JSON into bench/results/.

    make bench            (or: .venv/bin/python bench/run.py [--quick])

Runs, in order: overhead against the bare CLI (real claude, bwrap, the fake
API), dispatch throughput, HTTP accept and latency to turn start, and scale
(vault size, thread count, start-up, memory), each in a fresh interpreter.
About 12 minutes on 2 cores (the throughput figures are medians of rounds);
``--quick`` shrinks every run for a smoke test.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from common import RUNS_ENV, Result, print_table, save
from dispatch import dispatch
from latency import latency
from overhead import overhead
from scale import scale


def _step(fn: Callable[..., Any], *args: Any) -> Any:
    return asyncio.run(fn(*args))


def everything(quick: bool) -> list[Result]:
    """Each benchmark in a fresh interpreter of its own, as a freshly started
    gateway would be: nothing one leaves behind (threads, garbage, caches)
    weighs on the next."""
    results: list[Result] = []
    steps: list[tuple[str, Callable[..., Any], tuple[Any, ...]]] = [
        ("overhead", overhead, (5 if quick else 20,)),
        ("dispatch", dispatch, (500 if quick else 5000, 50, True, 1 if quick else 5)),
        ("latency", latency, (10 if quick else 50, 500 if quick else 2000, 100, 1 if quick else 5)),
        ("scale", scale, (200 if quick else 4000, 1 if quick else 5)),
    ]
    spawn = multiprocessing.get_context("spawn")
    # One folder for every step's runs, deleted at the very end: a step's deletions
    # would otherwise slow the next step down (see common.run_dir).
    runs = tempfile.mkdtemp(prefix="vg-bench-runs-")
    os.environ[RUNS_ENV] = runs
    try:
        for name, fn, args in steps:
            results.extend(_in_a_fresh_interpreter(spawn, name, fn, args))
    finally:
        shutil.rmtree(runs, ignore_errors=True)
    return results


def _in_a_fresh_interpreter(
    spawn: Any, name: str, fn: Callable[..., Any], args: tuple[Any, ...]
) -> list[Result]:
    t0 = time.perf_counter()
    print(f"-- {name} ...", flush=True)
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as one:
        out = one.submit(_step, fn, *args).result()
    print(f"   {time.perf_counter() - t0:.0f} s", flush=True)
    return out if isinstance(out, list) else [out]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    results = everything(args.quick)
    print()
    print_table(results)
    print(f"\nJSON: {save(results, 'quick' if args.quick else 'latest')}")


if __name__ == "__main__":
    main()
