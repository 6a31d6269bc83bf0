"""Time to index generated vaults of 1,000, 10,000 and 100,000 notes.

Usage: python bench/vault_scan.py [--sizes 1000,10000,100000] [--keep DIR]

Each vault is generated once into a temp dir (100 folders, notes with
typical frontmatter and a few hundred bytes of body, 1% agent messages),
then indexed by ``FolderVault.rescan()`` from a cold start of the adapter
(the OS page cache is warm, as it is on a running machine). Prints one line
per size: notes, seconds, notes per second, and the peak resident memory.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vault_adapter import FolderVault

BODY = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 8


def generate(root: Path, count: int) -> None:
    rng = random.Random(count)
    for folder in range(100):
        (root / f"Area {folder:02d}").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        if i % 100 == 0:
            fm = f"tags: [agent/message]\ndirection: inbound\nagent: echo\nstatus: done\nid: m{i}\n"
        else:
            fm = f"tags: [note, topic/{rng.randint(0, 50)}]\ncreated: 2026-01-{1 + i % 28:02d}\n"
        text = f"---\n{fm}---\n# Note {i}\n\n{BODY}\n"
        (root / f"Area {i % 100:02d}" / f"note-{i}.md").write_text(text)


async def index(root: Path) -> tuple[int, float]:
    vault = FolderVault(root, index_fields=("status", "direction", "agent", "channel"))
    start = time.perf_counter()
    count = 0
    async for _ in vault.rescan():
        count += 1
    return count, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    args = parser.parse_args()
    print(f"{'notes':>8} {'seconds':>8} {'notes/s':>9} {'peak RSS MB':>12}")
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix="vg-bench-") as tmp:
            root = Path(tmp)
            generate(root, size)
            count, seconds = asyncio.run(index(root))
            rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"{count:>8} {seconds:>8.2f} {count / seconds:>9.0f} {rss_mb:>12.0f}", flush=True)


if __name__ == "__main__":
    main()
