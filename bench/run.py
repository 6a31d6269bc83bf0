"""Every benchmark, one table: figure, value, target, met. JSON into bench/results/.

    make bench            (or: .venv/bin/python bench/run.py [--quick])

Runs, in order: overhead against the bare CLI (real claude, bwrap, the fake
API), HTTP accept and latency to turn start, dispatch throughput, and scale
(vault size, thread count, start-up, memory), each in a fresh interpreter.
About 10 to 12 minutes on 2 cores (the throughput figures are medians of rounds);
``--quick`` shrinks every run for a smoke test. Before each step it notes what
making a file costs, which a recent mass deletion raises (see
:func:`common.file_creation_us`).
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

from common import RUNS_ENV, SLOW_FILE_US, Result, file_creation_us, print_table, save
from dispatch import dispatch
from latency import latency
from overhead import overhead
from scale import scale


def _step(fn: Callable[..., Any], *args: Any) -> Any:
    return asyncio.run(fn(*args))


def check_disk(folder: str, step: str, disk: dict[str, float]) -> None:
    """Note what making a file costs before ``step``, and say so if it is slow."""
    us = disk[step] = file_creation_us(folder)
    if us > SLOW_FILE_US:
        print(
            f"   note: a new file costs {us:.0f} µs of CPU here (about 6 when the disk is "
            "quiet): many files were deleted in the last minutes, and until the disk "
            "settles every figure that writes notes reads low (docs/benchmarks.md)",
            flush=True,
        )


def everything(quick: bool, disk: dict[str, float]) -> list[Result]:
    """Each benchmark in a fresh interpreter of its own, as a freshly started
    gateway would be: nothing one leaves behind (threads, garbage, caches)
    weighs on the next."""
    results: list[Result] = []
    # Latency (HTTP accept above all) before dispatch: dispatch's floor rounds write
    # notes faster than old versions can rest, so their adapter frees about 5,000
    # spares a round, and the disk makes new files slowly for minutes after (see
    # common.file_creation_us). Scale starts by writing its vaults and a warm-up run.
    steps: list[tuple[str, Callable[..., Any], tuple[Any, ...]]] = [
        ("overhead", overhead, (5 if quick else 20,)),
        ("latency", latency, (10 if quick else 50, 500 if quick else 2000, 100, 1 if quick else 5)),
        ("dispatch", dispatch, (500 if quick else 5000, 50, True, 1 if quick else 5)),
        ("scale", scale, (200 if quick else 4000, 1 if quick else 5)),
    ]
    spawn = multiprocessing.get_context("spawn")
    # One folder for every step's runs, deleted at the very end: a step's deletions
    # would otherwise slow the next step down (see common.run_dir).
    runs = tempfile.mkdtemp(prefix="vg-bench-runs-")
    os.environ[RUNS_ENV] = runs
    try:
        for name, fn, args in steps:
            print(f"-- {name} ...", flush=True)
            check_disk(runs, name, disk)
            results.extend(_in_a_fresh_interpreter(spawn, fn, args))
    finally:
        shutil.rmtree(runs, ignore_errors=True)
    return results


def _in_a_fresh_interpreter(
    spawn: Any, fn: Callable[..., Any], args: tuple[Any, ...]
) -> list[Result]:
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as one:
        out = one.submit(_step, fn, *args).result()
    print(f"   {time.perf_counter() - t0:.0f} s", flush=True)
    return out if isinstance(out, list) else [out]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    disk: dict[str, float] = {}
    results = everything(args.quick, disk)
    print()
    print_table(results)
    print("\nmaking a file, µs of CPU, before each step: " + ", ".join(
        f"{step} {us:.0f}" for step, us in disk.items()
    ))  # fmt: skip
    print(f"JSON: {save(results, 'quick' if args.quick else 'latest', disk)}")


if __name__ == "__main__":
    main()
