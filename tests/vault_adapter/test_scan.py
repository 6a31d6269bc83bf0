"""The start-up scan's fast path: notes indexed in worker processes, or without being built,
are indexed exactly as the full scan indexes them, and broken notes are still reported."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.procs import processes_mentioning
from vault_adapter import FolderVault, ScanItem
from vault_adapter.scan import CHUNK, NoteSummary, Scanned, ScanSetup, chunked, scan_chunks

FIELDS = ("status", "direction", "agent", "channel", "id")
MAX_BYTES = 4096

NOTES: dict[str, bytes] = {
    "plain.md": b"no frontmatter at all\n",
    "empty.md": b"",
    "Area/tagged.md": b"---\ntags: [note, '#Topic/One', note]\nstatus: queued\n---\nbody\n",
    "Area/string-tags.md": b"---\ntags: 'a, b  c'\nagent: r\n---\n",
    "Area/unhashable.md": b"---\nstatus: [a, b]\nagent: {x: 1}\nchannel: 2026-01-01\n---\n",
    "Area/typed.md": b"---\nid: 7\ndirection: null\nchannel: yes\ncreated: 2026-01-01 10:00\n---\n",
    "Area/bom-crlf.md": b"\xef\xbb\xbf---\r\ntags: [crlf]\r\nagent: r\r\n---\r\nbody\r\n",
    "Area/unicode.md": "---\ntags: [café]\nagent: zoë\n---\n✓\n".encode(),
    "Inbox/m.md": b"---\nagent: r\nsender: alice\n---\nhi\n",
    "Inbox/done.md": b"---\nagent: r\nstatus: done\n---\nanswered\n",
    "Agents/r.md": b"---\ntags: [agent/definition]\nname: r\n---\nrole\n",
    "broken/yaml.md": b"---\nagent: [\n---\nhi\n",
    "broken/unclosed.md": b"---\nagent: r\n",
    "broken/binary.md": b"abc\x00def",
    "broken/latin1.md": b"caf\xe9\n",
    "broken/a-list.md": b"---\n- a\n- b\n---\n",
    "broken/too-big.md": b"x" * (MAX_BYTES + 1),
    "broken/deep.md": b"---\nk: " + b"[" * 150 + b"]" * 150 + b"\n---\n",
}
BROKEN = sorted(p for p in NOTES if p.startswith("broken/"))


def fill(root: Path, ordinary: int = 0) -> None:
    for rel, raw in NOTES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(raw)
    for i in range(ordinary):
        folder = root / f"Area {i % 7}"
        folder.mkdir(exist_ok=True)
        (folder / f"n{i}.md").write_text(f"---\ntags: [n, t/{i % 5}]\nid: n{i}\n---\n# {i}\n")
    (root / "folder.md").mkdir()
    (root / "link.md").symlink_to(root / "Area" / "tagged.md")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "x.md").write_text("never read")


def open_vault(root: Path, processes: int) -> FolderVault:
    return FolderVault(
        root,
        index_fields=FIELDS,
        max_note_bytes=MAX_BYTES,
        scan_processes=processes,
        parallel_scan_from=1,
    )


def setup_of(vault: FolderVault) -> ScanSetup:
    return ScanSetup(str(vault.root), vault.max_note_bytes, vault.index.fields)


def two_workers(
    vault: FolderVault, paths: list[str], **options: Any
) -> AsyncIterator[list[Scanned]]:
    """``paths`` scanned by two worker processes only (this process does not help)."""
    return scan_chunks(
        chunked(paths),
        vault.summarize,
        setup_of(vault),
        processes=2,
        parallel_from=1,
        thread_helps=False,
        **options,
    )


def definitions_and_inbox(note: NoteSummary) -> bool:
    return note.has_tag("#AGENT/Definition") or note.path.startswith("Inbox/")


def broken_of(items: list[ScanItem]) -> list[tuple[str, str]]:
    return sorted((i.path, i.error.detail) for i in items if i.error is not None)


@pytest.mark.parametrize("processes", [0, 2], ids=["in-a-thread", "in-workers"])
async def test_a_selective_scan_indexes_every_note_as_the_full_scan_does(
    tmp_path: Path, processes: int
) -> None:
    fill(tmp_path, ordinary=CHUNK + 50)
    full = open_vault(tmp_path, processes)
    everything = [item async for item in full.rescan()]
    fast = open_vault(tmp_path, processes)
    picked = [item async for item in fast.rescan(definitions_and_inbox)]

    assert fast.index.ready
    paths = sorted(full.index.paths())
    assert len(paths) == len(NOTES) + CHUNK + 50 + 1  # and link.md
    assert sorted(fast.index.paths()) == paths
    for path in paths:
        assert fast.index.get(path) == full.index.get(path), path
        assert fast.index.hash_of(path) == full.index.hash_of(path)
    for tag in ("note", "topic/one", "#Topic/One", "a", "c", "crlf", "café", "t/3", "n"):
        assert fast.index.by_tag(tag) == full.index.by_tag(tag), tag
    for key, value in [
        ("status", "queued"),
        ("status", ["a", "b"]),
        ("agent", {"x": 1}),
        ("agent", "zoë"),
        ("id", 7),
        ("id", "n3"),
        ("channel", True),
        ("direction", None),
    ]:
        assert fast.index.by_field(key, value) == full.index.by_field(key, value), key
    assert full.index.by_field("status", ["a", "b"]) == ["Area/unhashable.md"]

    # Broken notes are still reported, with the same details; wanted ones come whole.
    assert broken_of(picked) == broken_of(everything)
    assert [path for path, _ in broken_of(picked)] == BROKEN
    whole = {i.path: i.note for i in everything if i.note is not None}
    notes = {i.path: i.note for i in picked if i.note is not None}
    assert sorted(notes) == ["Agents/r.md", "Inbox/done.md", "Inbox/m.md"]
    assert all(note == whole[path] for path, note in notes.items())
    # Walk order is kept: what the caller sees comes in the order the full scan saw it.
    assert [i.path for i in picked] == [i.path for i in everything if i.path in notes or i.error]


async def test_workers_index_chunks_exactly_as_this_process_does(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fill(tmp_path, ordinary=2 * CHUNK)
    paths = sorted(NOTES) + [f"Area {i % 7}/n{i}.md" for i in range(2 * CHUNK)] + ["gone.md"]
    vault = open_vault(tmp_path, 2)
    here = vault.summarize(paths)
    caplog.set_level(logging.INFO, logger="vault_adapter.scan")
    chunks = two_workers(vault, paths)
    there: list[Scanned] = [entry async for chunk in chunks for entry in chunk]
    assert there == here
    assert len(here) == len(paths) - 1  # a note that vanished is left out
    assert "3 of 3 chunks in 2 worker processes" in caplog.text
    assert "failed" not in caplog.text


@pytest.mark.parametrize(
    "script",
    [
        "import sys; sys.exit(3)",
        "import sys; sys.stdout.buffer.write(b'\\xff' * 4); sys.stdout.flush(); sys.stdin.read()",
        "import sys; sys.stdout.buffer.write(b'\\0\\0\\0\\3abc'); sys.stdout.flush()",
        "import sys; sys.stdin.buffer.read()",
    ],
    ids=["exits", "oversized-frame", "garbled-pickle", "never-answers"],
)
async def test_a_failing_worker_leaves_its_chunks_to_this_process(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, script: str
) -> None:
    fill(tmp_path, ordinary=CHUNK)
    paths = sorted(NOTES) + [f"Area {i % 7}/n{i}.md" for i in range(CHUNK)]
    vault = open_vault(tmp_path, 2)
    chunks = two_workers(vault, paths, command=[sys.executable, "-c", script], answer_timeout_s=1.0)
    caplog.set_level(logging.INFO, logger="vault_adapter.scan")
    there = [entry async for chunk in chunks for entry in chunk]
    assert there == vault.summarize(paths)
    assert "a scan worker failed" in caplog.text
    assert "0 of 2 chunks in 2 worker processes" in caplog.text


def my_workers() -> list[int]:
    mine = []
    for pid in processes_mentioning("serve_worker"):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid():
            mine.append(pid)
    return mine


async def test_leaving_a_scan_early_ends_its_workers(tmp_path: Path) -> None:
    fill(tmp_path, ordinary=4 * CHUNK)
    paths = [f"Area {i % 7}/n{i}.md" for i in range(4 * CHUNK)]
    vault = open_vault(tmp_path, 2)
    scan = two_workers(vault, paths)
    first = await anext(scan)
    assert [entry[0] for entry in first] == paths[:CHUNK]
    assert my_workers(), "the workers were never started"
    await scan.aclose()
    assert my_workers() == []


async def test_leaving_a_scan_ends_workers_still_ending(tmp_path: Path) -> None:
    fill(tmp_path)
    paths = sorted(NOTES)  # one chunk: one worker answers it, the other has nothing to do
    vault = open_vault(tmp_path, 2)
    # Answers like a worker, then takes its time to exit once its stdin is closed.
    slow_to_end = (
        "import time; from vault_adapter.scan import serve_worker; serve_worker(); time.sleep(60)"
    )
    scan = two_workers(vault, paths, command=[sys.executable, "-c", slow_to_end])
    first = await anext(scan)
    assert [entry[0] for entry in first] == paths
    assert len(my_workers()) == 2
    await scan.aclose()
    assert my_workers() == []
