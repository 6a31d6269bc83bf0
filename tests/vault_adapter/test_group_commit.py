"""New notes created together are written as one group (vault_adapter/batches.py)."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from vault_adapter import FolderVault, NoteExists, VaultError
from vault_adapter.batches import GroupCommit
from vault_adapter.workers import Workers


def _scratch_names(vault: FolderVault) -> set[str]:
    assert vault.scratch is not None
    return set(os.listdir(vault.scratch.folder))


async def test_creates_that_arrive_together_are_written_in_groups(vault_dir: Path) -> None:
    vault = FolderVault(vault_dir, scratch=vault_dir / ".vaultgate" / "scratch")
    notes = await asyncio.gather(
        *(vault.create(f"Inbox/m{i}.md", {"id": f"m{i}"}, f"text {i}\n") for i in range(300))
    )
    assert [n.path for n in notes] == [f"Inbox/m{i}.md" for i in range(300)]
    # Not one at a time: the calls that waited went together.
    assert vault._creates.batches < 300
    assert vault._creates.largest > 1
    for i in (0, 150, 299):
        on_disk = await vault.read(f"Inbox/m{i}.md")
        assert on_disk.frontmatter == {"id": f"m{i}"}
        assert on_disk.body == f"text {i}\n"
        assert vault.index.hash_of(f"Inbox/m{i}.md") == on_disk.content_hash
    assert _scratch_names(vault) == set()  # every temp file became a note


async def test_one_bad_note_in_a_group_fails_alone(vault_dir: Path) -> None:
    vault = FolderVault(vault_dir, scratch=vault_dir / ".vaultgate" / "scratch")
    await vault.create("Inbox/taken.md", {"id": "first"}, "first\n")
    outside = vault_dir.parent / "outside"
    outside.mkdir()
    (vault_dir / "Escape").symlink_to(outside)
    calls = [
        vault.create("Inbox/a.md", {"id": "a"}, "a\n"),
        vault.create("Inbox/taken.md", {"id": "second"}, "second\n"),  # already there
        vault.create("../etc/passwd.md", {"id": "x"}, "x\n"),  # not a vault path
        vault.create("Escape/out.md", {"id": "y"}, "y\n"),  # through a symlink, outside
        vault.create("Inbox/dup.md", {"id": "d1"}, "d1\n"),
        vault.create("Inbox/dup.md", {"id": "d2"}, "d2\n"),  # same group, same path
        vault.create("Inbox/b.md", {"id": "b"}, "b\n"),
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert vault._creates.largest > 1  # they did go together
    a, taken, dotdot, escape, dup1, dup2, b = results
    assert not isinstance(a, BaseException) and a.frontmatter == {"id": "a"}
    assert not isinstance(b, BaseException) and b.frontmatter == {"id": "b"}
    assert isinstance(taken, NoteExists)
    assert (vault_dir / "Inbox" / "taken.md").read_text() == "---\nid: first\n---\nfirst\n"
    assert isinstance(dotdot, VaultError) and isinstance(escape, VaultError)
    assert list(outside.iterdir()) == []
    # Exactly one of the two creates of one path won; the note is the winner's.
    assert [isinstance(r, NoteExists) for r in (dup1, dup2)].count(True) == 1
    winner = dup2 if isinstance(dup1, NoteExists) else dup1
    assert not isinstance(winner, BaseException)
    assert (await vault.read("Inbox/dup.md")).frontmatter == winner.frontmatter
    # A refused note's temp file is kept as a spare (reused by the next write).
    names = _scratch_names(vault)
    assert vault.scratch is not None and len(vault.scratch) == len(names) == 2


async def test_a_create_whose_caller_gave_up_is_still_written(vault_dir: Path) -> None:
    vault = FolderVault(vault_dir)
    first = asyncio.create_task(vault.create("a.md", {"id": "a"}, "a\n"))
    second = asyncio.create_task(vault.create("b.md", {"id": "b"}, "b\n"))
    await asyncio.sleep(0)  # both are queued; the second waits for the first's batch
    second.cancel()
    await first
    with pytest.raises(asyncio.CancelledError):
        await second
    # Both went in the one batch that first waited for: b.md is written already.
    assert vault._creates.batches == 1
    assert (vault_dir / "b.md").read_text() == "---\nid: b\n---\nb\n"


async def test_a_batch_that_fails_as_a_whole_fails_each_caller() -> None:
    workers = Workers(1, "test")
    release = threading.Event()

    def write(items: Sequence[int]) -> list[int]:
        release.wait(10)
        if 13 in items:
            raise OSError("disk gone")
        return [i * 2 for i in items]

    group: GroupCommit[int, int] = GroupCommit(write, workers)
    try:
        first = asyncio.create_task(group.submit(1))
        await asyncio.sleep(0)
        rest = [asyncio.create_task(group.submit(i)) for i in (12, 13, 14)]
        await asyncio.sleep(0)
        release.set()
        assert await first == 2
        outcomes = await asyncio.gather(*rest, return_exceptions=True)
        assert all(isinstance(o, OSError) for o in outcomes)  # one batch, one failure
        assert group.batches == 2 and group.largest == 3
        assert await group.submit(5) == 10  # and the next batch goes on
    finally:
        workers.close()
