"""Writing through the scratch folder: old versions are reused, never a person's file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vault_adapter import FolderVault
from vault_adapter.scratch import Scratch, move_new


@pytest.fixture
def vault(tmp_path: Path) -> FolderVault:
    root = tmp_path / "vault"
    root.mkdir()
    return FolderVault(root, scratch=Scratch(root / ".vaultgate" / "scratch", rest_s=0.0))


async def test_a_replaced_version_becomes_the_next_write_and_nothing_is_freed(
    vault: FolderVault,
) -> None:
    await vault.create("Inbox/a.md", {"status": "new"}, "hello\n")
    first = os.stat(vault.root / "Inbox/a.md").st_ino
    await vault.update_fields("Inbox/a.md", {"status": "queued"})
    assert vault.scratch is not None and len(vault.scratch) == 1
    await vault.update_fields("Inbox/a.md", {"status": "done"})
    # The first version's inode was kept as a spare and now holds the third version.
    assert os.stat(vault.root / "Inbox/a.md").st_ino == first
    note = await vault.read("Inbox/a.md")
    assert note.frontmatter == {"status": "done"}
    assert note.body == "hello\n"
    assert (vault.root / "Inbox/a.md").read_text() == "---\nstatus: done\n---\nhello\n"


async def test_a_note_someone_hard_linked_is_never_written_over(vault: FolderVault) -> None:
    await vault.create("Inbox/a.md", {"status": "new"}, "keep me\n")
    (vault.root / "Archive").mkdir()
    os.link(vault.root / "Inbox/a.md", vault.root / "Archive/a.md")
    for status in ("one", "two", "three", "four"):
        await vault.update_fields("Inbox/a.md", {"status": status})
        await vault.write(f"Other/{status}.md", {"n": status}, "other\n")
    assert (vault.root / "Archive/a.md").read_text() == "---\nstatus: new\n---\nkeep me\n"
    assert (await vault.read("Inbox/a.md")).get("status") == "four"


async def test_a_spare_is_only_reused_for_a_version_that_fills_its_blocks(
    vault: FolderVault,
) -> None:
    # Cutting a spare down to a shorter version frees its last blocks: with online
    # discard, a synchronous TRIM. So a big old version waits for a big new one.
    await vault.create("big.md", {"n": 0}, "x" * 20_000 + "\n")
    await vault.create("small.md", {"n": 0}, "y\n")
    big_first = os.stat(vault.root / "big.md").st_ino
    await vault.update_fields("big.md", {"n": 1})
    await vault.update_fields("small.md", {"n": 1})
    assert os.stat(vault.root / "small.md").st_ino != big_first
    await vault.update_fields("big.md", {"n": 2})
    assert os.stat(vault.root / "big.md").st_ino == big_first
    assert (await vault.read("big.md")).body == "x" * 20_000 + "\n"
    assert (await vault.read("small.md")).get("n") == 1


async def test_spares_rest_before_reuse(tmp_path: Path) -> None:
    root = tmp_path / "vault"
    root.mkdir()
    vault = FolderVault(root, scratch=Scratch(root / ".scratch", rest_s=3600))
    await vault.create("a.md", {"n": 0}, "x\n")
    inodes = {os.stat(root / "a.md").st_ino}
    for n in range(1, 6):
        await vault.update_fields("a.md", {"n": n})
        inodes.add(os.stat(root / "a.md").st_ino)
    # Nothing has rested long enough: every version is a fresh inode.
    assert len(inodes) == 6
    assert vault.scratch is not None and len(vault.scratch) == 5


async def test_spares_left_by_an_earlier_run_are_reused(tmp_path: Path) -> None:
    root = tmp_path / "vault"
    root.mkdir()
    first = FolderVault(root, scratch=root / ".vaultgate" / "scratch")
    await first.create("a.md", {"n": 0}, "x\n")
    await first.update_fields("a.md", {"n": 1})
    second = FolderVault(root, scratch=root / ".vaultgate" / "scratch")
    assert second.scratch is not None and len(second.scratch) == 1
    await second.update_fields("a.md", {"n": 2})
    assert second.scratch is not None and len(second.scratch) == 1
    assert (await second.read("a.md")).get("n") == 2


@pytest.fixture
def other_filesystem(tmp_path: Path) -> Path:
    other = Path("/dev/shm")
    if not other.is_dir() or other.stat().st_dev == tmp_path.stat().st_dev:
        pytest.fail("this test needs /dev/shm on a filesystem other than the temp dir")
    return other


async def test_a_scratch_folder_on_another_filesystem_is_not_used(
    tmp_path: Path, other_filesystem: Path
) -> None:
    other = other_filesystem
    root = tmp_path / "vault"
    root.mkdir()
    scratch = other / f"vaultgate-test-{os.getpid()}"
    try:
        vault = FolderVault(root, scratch=scratch)
        assert vault.scratch is None
        await vault.create("a.md", {"n": 0}, "x\n")
        await vault.update_fields("a.md", {"n": 1})
        assert (await vault.read("a.md")).get("n") == 1
        assert not any(p.name.endswith(".tmp") for p in root.iterdir())
    finally:
        for leftover in scratch.glob("*"):
            leftover.unlink()
        scratch.rmdir()


async def test_an_update_that_loses_to_a_person_keeps_its_temp_as_a_spare(
    tmp_path: Path,
) -> None:
    root = tmp_path / "vault"
    root.mkdir()
    saves = iter(["---\nn: person\n---\nx\n"])

    def person_saves(rel: str) -> None:
        text = next(saves, None)
        if text is not None:
            (root / rel).write_text(text)

    vault = FolderVault(
        root, scratch=Scratch(root / ".scratch", rest_s=0.0), before_replace=person_saves
    )
    await vault.create("a.md", {"n": 0}, "x\n")
    note = await vault.update_fields("a.md", {"status": "stamped"})
    # The person's edit won the race; ours was applied again on top of it.
    assert note.frontmatter == {"n": "person", "status": "stamped"}
    assert sorted(p.name for p in root.iterdir()) == [".scratch", "a.md"]
    assert vault.scratch is not None and len(vault.scratch) >= 1


def save_in_place(path: Path, old: bytes, new: bytes) -> None:
    """A save of the same length into the same file, with its mtime put back."""
    before = path.stat()
    with open(path, "r+b") as fh:
        fh.write(path.read_bytes().replace(old, new))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


async def test_a_same_size_edit_after_our_write_is_still_seen(vault: FolderVault) -> None:
    await vault.create("a.md", {"status": "new"}, "hello\n")
    await vault.update_fields("a.md", {"status": "aaaa"})
    # Our own write (one event), untouched since: recognised without reading it.
    assert vault._settle("a.md", None, 1) is None
    await vault.update_fields("a.md", {"status": "bbbb"})
    save_in_place(vault.root / "a.md", b"bbbb", b"cccc")
    # Two events (ours and the save), even if the clock tick hid the save's times.
    event = vault._settle("a.md", None, 2)
    assert event is not None and event.note is not None
    assert event.note.get("status") == "cccc"


async def test_a_removed_scratch_folder_is_made_again(vault: FolderVault) -> None:
    await vault.create("a.md", {"n": 0}, "x\n")
    assert vault.scratch is not None
    for leftover in vault.scratch.folder.iterdir():
        leftover.unlink()
    vault.scratch.folder.rmdir()
    await vault.update_fields("a.md", {"n": 1})
    await vault.create("b.md", {"n": 2}, "y\n")
    assert (await vault.read("a.md")).get("n") == 1
    assert (await vault.read("b.md")).get("n") == 2


def test_move_new_renames_but_never_replaces(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_text("new")
    move_new(str(src), dst)
    assert dst.read_text() == "new" and not src.exists()
    src.write_text("second")
    with pytest.raises(FileExistsError):
        move_new(str(src), dst)
    assert dst.read_text() == "new" and src.read_text() == "second"
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileExistsError):  # a symlink at the name is not followed
        move_new(str(src), tmp_path / "link")
    assert not (tmp_path / "nowhere").exists()
