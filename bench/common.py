"""Shared pieces of the benchmarks: generated vaults, an in-process gateway, timing."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.backends import EchoBackend, ScriptedBackend  # noqa: E402
from gateway.engine import Gateway  # noqa: E402
from gateway.serve import open_vault, settle_heap  # noqa: E402
from gateway.settings import Settings  # noqa: E402

AGENT = """---
tags: [agent/definition]
name: bench
mode: multi-threaded
backend: scripted
---
You are the benchmark agent.
"""

FILLER = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 6


def fill_vault(root: Path, notes: int) -> None:
    """``notes`` ordinary notes (not messages) spread over 100 folders."""
    for folder in range(100):
        (root / f"Area {folder:02d}").mkdir(parents=True, exist_ok=True)
    for i in range(notes):
        text = f"---\ntags: [note, topic/{i % 50}]\ncreated: 2026-01-01\n---\n# {i}\n{FILLER}\n"
        (root / f"Area {i % 100:02d}" / f"note-{i}.md").write_text(text)


_RUNS: Path | None = None
RUNS_ENV = "VAULTGATE_BENCH_RUNS"


@contextlib.contextmanager
def run_dir(prefix: str) -> Iterator[str]:
    """A fresh folder for one run, deleted only when the benchmark's process ends.

    Deleting a run's thousands of files leaves the disk busy for seconds after
    (on a disk with online discard each freed block is trimmed): the run that
    followed a deletion measured up to a third slower. So nothing is deleted
    between runs. Under ``bench/run.py`` the folder is its (``VAULTGATE_BENCH_RUNS``),
    deleted only once every benchmark has run."""
    global _RUNS
    if _RUNS is None:
        shared = os.environ.get(RUNS_ENV)
        if shared:
            _RUNS = Path(tempfile.mkdtemp(prefix="vg-bench-", dir=shared))
        else:
            _RUNS = Path(tempfile.mkdtemp(prefix="vg-bench-runs-"))
            atexit.register(shutil.rmtree, _RUNS, True)
    yield tempfile.mkdtemp(prefix=prefix, dir=_RUNS)


def settle_disk() -> None:
    """Write out everything a benchmark just put on disk before its clock starts.

    A vault filled a second ago leaves hundreds of megabytes of dirty pages; the
    kernel writes them out over the next half minute, and every fsync the gateway
    makes meanwhile waits behind that. A real vault has long been on disk."""
    os.sync()


def inbound(i: int, subjects: int) -> str:
    return f"---\nagent: bench\nsubject: s{i % subjects}\nsender: bench\n---\nmessage {i}\n"


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[k]


@dataclass
class Result:
    name: str
    value: float
    unit: str
    target: str
    met: bool
    detail: dict[str, Any] = field(default_factory=dict)
    floor: str = ""
    """The same work without the gateway, measured in the same run, where there is one."""


async def start_gateway(
    root: Path, *, extra_backends: dict[str, Any] | None = None, **settings: Any
) -> tuple[Gateway, ScriptedBackend]:
    backend = ScriptedBackend(usage={"input_tokens": 10, "output_tokens": 5, "cost_usd": 0.0})
    merged = {"quiet_window_s": 0.05, "port": 0, "max_concurrent_turns": 4, **settings}
    config = Settings(**merged)
    backends = {"scripted": backend, "echo": EchoBackend(), **(extra_backends or {})}
    gateway = Gateway(open_vault(root, config), config, backends=backends)
    await gateway.start()
    settle_heap()  # as `vaultgate serve` does once the gateway has started
    return gateway, backend


def write_agent(
    root: Path, name: str = "bench", backend: str = "scripted", extra: str = ""
) -> None:
    (root / "Agents").mkdir(parents=True, exist_ok=True)
    (root / "Inbox").mkdir(parents=True, exist_ok=True)
    (root / "Agents" / f"{name}.md").write_text(
        f"---\ntags: [agent/definition]\nname: {name}\nmode: multi-threaded\n"
        f"backend: {backend}\n{extra}---\nYou are the benchmark agent.\n"
    )


async def wait_turns(gateway: Gateway, count: int, timeout: float = 600) -> None:
    done = 0
    finished = asyncio.Event()

    def listener(event: dict[str, Any]) -> None:
        nonlocal done
        if event["type"] in ("turn.done", "turn.rejected"):
            done += 1
            if done >= count:
                finished.set()

    gateway.bus.add_listener(listener)
    async with asyncio.timeout(timeout):
        await finished.wait()


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


SLOW_FILE_US = 20.0
"""Making an empty file costs about 6 µs of CPU on this disk when it is quiet."""


def file_creation_us(folder: str | Path, count: int = 400) -> float:
    """CPU µs to make one empty file in a new folder under ``folder`` (kept: deleting
    them is what this looks for).

    ext4 without a journal (this machine's disk) does not reuse an inode freed in
    the last minute or more; every new file steps over the recently freed inodes
    of its block group, one lookup each. For minutes after a mass deletion (the
    last benchmark's runs, a test run's temp folders) new files cost tens to
    hundreds of µs, and every figure that writes notes reads low."""
    sub = Path(tempfile.mkdtemp(prefix="disk-check-", dir=folder)) / "files"
    sub.mkdir()
    start = time.thread_time()
    for i in range(count):
        os.close(os.open(sub / f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    return (time.thread_time() - start) / count * 1e6


def save(results: list[Result], name: str, disk: dict[str, float] | None = None) -> Path:
    out = ROOT / "bench" / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    about = machine()
    if disk:
        about["file_creation_us"] = {step: round(us, 1) for step, us in disk.items()}
    payload = {"machine": about, "results": [r.__dict__ for r in results]}
    out.write_text(json.dumps(payload, indent=2))
    return out


def print_table(results: list[Result]) -> None:
    print(f"{'figure':<44} {'value':>12} {'target':>14}  met  {'floor (same run)'}")
    for r in results:
        value = f"{r.value:.3g} {r.unit}".strip()
        met = "yes" if r.met else "NO "
        print(f"{r.name:<44} {value:>12} {r.target:>14}  {met}  {r.floor}".rstrip())


__all__ = ["statistics"]
