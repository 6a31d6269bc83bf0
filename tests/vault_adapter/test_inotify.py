"""The inotify watcher with folders: made, moved in, moved about, moved out, symlinked.

Each test changes a real folder vault and waits for the settled events; a
sentinel note written last marks the point by which every earlier change must
have been reported.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from vault_adapter import FolderVault, VaultEvent, Watcher, inotify

pytestmark = pytest.mark.skipif(not inotify.available(), reason="inotify is Linux-only")

TIMEOUT = 10.0


@pytest.fixture
async def watcher(vault: FolderVault) -> AsyncIterator[Watcher]:
    async with vault.watch() as w:
        yield w


async def until_sentinel(w: Watcher, root: Path) -> dict[str, VaultEvent]:
    """Write a sentinel note, then collect events (last one per path) until it shows."""
    (root / "sentinel.md").write_text("s")
    seen: dict[str, VaultEvent] = {}
    async with asyncio.timeout(TIMEOUT):
        while "sentinel.md" not in seen:
            event = await w.get()
            seen[event.path] = event
    del seen["sentinel.md"]
    (root / "sentinel.md").unlink()
    async with asyncio.timeout(TIMEOUT):
        while (await w.get()).path != "sentinel.md":
            pass
    return seen


def write(root: Path, rel: str, text: str = "---\ntags: [x]\n---\nbody\n") -> None:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text(text)


async def folder_with_two_notes(vault: FolderVault, watcher: Watcher, folder: str) -> None:
    """``folder/a.md`` and ``folder/sub/b.md``, written and seen."""
    write(vault.root, f"{folder}/a.md")
    write(vault.root, f"{folder}/sub/b.md")
    await until_sentinel(watcher, vault.root)


async def test_notes_written_at_once_into_new_nested_folders_are_all_seen(
    vault: FolderVault, watcher: Watcher
) -> None:
    # The folders and notes appear faster than a watch can be put on each folder:
    # the notes written before their folder was watched are found by listing it.
    for i in range(20):
        write(vault.root, f"Projects/p{i}/deep/er/n{i}.md")
    seen = await until_sentinel(watcher, vault.root)
    assert set(seen) == {f"Projects/p{i}/deep/er/n{i}.md" for i in range(20)}
    assert all(e.kind == "created" for e in seen.values())


async def test_a_folder_moved_into_the_vault_brings_its_notes(
    vault: FolderVault, watcher: Watcher, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    for rel in ("a.md", "sub/b.md", "sub/.hidden/c.md", "notes.txt"):
        write(outside, rel)
    os.rename(outside, vault.root / "Imported")
    seen = await until_sentinel(watcher, vault.root)
    assert set(seen) == {"Imported/a.md", "Imported/sub/b.md"}
    # ...and the moved-in folders are watched from then on.
    write(vault.root, "Imported/sub/later.md")
    assert set(await until_sentinel(watcher, vault.root)) == {"Imported/sub/later.md"}


async def test_a_folder_moved_within_the_vault_moves_its_notes(
    vault: FolderVault, watcher: Watcher
) -> None:
    await folder_with_two_notes(vault, watcher, "Old")
    os.rename(vault.root / "Old", vault.root / "New")
    seen = await until_sentinel(watcher, vault.root)
    assert {p: e.kind for p, e in seen.items()} == {
        "Old/a.md": "deleted",
        "Old/sub/b.md": "deleted",
        "New/a.md": "created",
        "New/sub/b.md": "created",
    }
    assert vault.index.by_tag("x") == ["New/a.md", "New/sub/b.md"]
    # The old watches do not report changes under the old name.
    write(vault.root, "New/sub/c.md")
    assert set(await until_sentinel(watcher, vault.root)) == {"New/sub/c.md"}


async def test_a_folder_moved_out_of_the_vault_takes_its_notes_away(
    vault: FolderVault, watcher: Watcher, tmp_path: Path
) -> None:
    await folder_with_two_notes(vault, watcher, "Leaving")
    shutil.move(vault.root / "Leaving", tmp_path / "gone")
    seen = await until_sentinel(watcher, vault.root)
    assert {p: e.kind for p, e in seen.items()} == {
        "Leaving/a.md": "deleted",
        "Leaving/sub/b.md": "deleted",
    }
    assert vault.index.by_tag("x") == []
    # Changes in the folder, now outside, are no longer ours.
    write(tmp_path / "gone", "sub/after.md")
    assert await until_sentinel(watcher, vault.root) == {}


async def test_a_deleted_folder_reports_its_notes_and_stops_being_watched(
    vault: FolderVault, watcher: Watcher
) -> None:
    await folder_with_two_notes(vault, watcher, "Temp")
    shutil.rmtree(vault.root / "Temp")
    seen = await until_sentinel(watcher, vault.root)
    assert {p: e.kind for p, e in seen.items()} == {
        "Temp/a.md": "deleted",
        "Temp/sub/b.md": "deleted",
    }
    # The same name made again is a new folder, watched afresh.
    write(vault.root, "Temp/sub/again.md")
    assert set(await until_sentinel(watcher, vault.root)) == {"Temp/sub/again.md"}


async def test_symlinked_folders_are_not_followed(
    vault: FolderVault, watcher: Watcher, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (vault.root / "link").symlink_to(elsewhere, target_is_directory=True)
    write(elsewhere, "secret.md")
    assert await until_sentinel(watcher, vault.root) == {}


async def test_a_note_renamed_across_folders_is_a_move(
    vault: FolderVault, watcher: Watcher
) -> None:
    write(vault.root, "A/n.md")
    (vault.root / "B").mkdir()
    await until_sentinel(watcher, vault.root)
    os.rename(vault.root / "A" / "n.md", vault.root / "B" / "n.md")
    seen = await until_sentinel(watcher, vault.root)
    assert seen["A/n.md"].kind == "deleted"
    assert seen["B/n.md"].kind == "moved" and seen["B/n.md"].src_path == "A/n.md"


def test_a_kernel_queue_overflow_asks_for_a_rescan(tmp_path: Path) -> None:
    asked: list[str] = []
    touched: list[tuple[str, str | None]] = []

    async def run() -> None:
        tree = inotify.InotifyTree(
            tmp_path, lambda rel, src: touched.append((rel, src)), lambda: asked.append("x"), list
        )
        tree.start()
        try:
            overflow = struct.pack("iIII", -1, inotify.IN_Q_OVERFLOW, 0, 0)
            tree._handle(overflow)
        finally:
            tree.stop()

    asyncio.run(run())
    assert asked == ["x"] and touched == []


async def test_the_gateways_own_folder_is_never_watched(vault_dir: Path) -> None:
    (vault_dir / ".vaultgate" / "scratch").mkdir(parents=True)
    (vault_dir / ".obsidian").mkdir()
    (vault_dir / "Inbox").mkdir()
    tree = inotify.InotifyTree(vault_dir, lambda rel, src: None, lambda: None, list)
    tree.start()
    try:
        assert tree.watched == 2  # the root and Inbox
    finally:
        tree.stop()
