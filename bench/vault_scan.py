"""Time to index generated vaults of 1,000, 10,000 and 100,000 notes.

Usage: python bench/vault_scan.py [--sizes 1000,10000,100000] [--keep DIR]

Each vault is generated once into a temp dir, or into ``DIR/<size>`` with
``--keep`` (reused when it is there already): 100 folders, notes with typical
frontmatter and a few hundred bytes of body, 1% agent messages. It is then
indexed twice from a cold start of the adapter (the OS page cache is warm, as
it is on a running machine): ``rescan()``, which builds and yields every note,
and ``rescan(wanted)`` the way the gateway starts, which indexes every note
but builds only the messages (in worker processes from 5,000 notes). Prints
one line per size and way: notes, seconds, notes per second, notes yielded,
and the peak resident memory of this process so far.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vault_adapter import FolderVault
from vault_adapter.scan import NoteSummary, Wanted

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


async def index(root: Path, wanted: Wanted | None) -> tuple[int, int, float]:
    vault = FolderVault(root, index_fields=("status", "direction", "agent", "channel"))
    start = time.perf_counter()
    yielded = 0
    async for _ in vault.rescan(wanted):
        yielded += 1
    return len(vault.index), yielded, time.perf_counter() - start


def messages(note: NoteSummary) -> bool:
    return note.has_tag("agent/message")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--keep", type=Path, help="generate the vaults here and reuse them")
    args = parser.parse_args()
    print(
        f"{'notes':>8} {'way':<10} {'seconds':>8} {'notes/s':>9} {'yielded':>8} {'peak RSS MB':>12}"
    )
    for size in (int(s) for s in args.sizes.split(",")):
        with contextlib.ExitStack() as stack:
            if args.keep is not None:
                root = args.keep / str(size)
                if not root.is_dir():
                    partial = root.with_name(f"{size}.partial")
                    shutil.rmtree(partial, ignore_errors=True)
                    generate(partial, size)
                    partial.rename(root)
            else:
                root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vg-bench-")))
                generate(root, size)
            for way, wanted in (("full", None), ("start-up", messages)):
                count, yielded, seconds = asyncio.run(index(root, wanted))
                rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                print(
                    f"{count:>8} {way:<10} {seconds:>8.2f} {count / seconds:>9.0f} {yielded:>8}"
                    f" {rss_mb:>12.0f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
