"""New notes, and field updates, that arrive together are written as groups
(vault_adapter/batches.py)."""

from __future__ import annotations

import asyncio
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from vault_adapter import FolderVault, NoteExists, NoteNotFound, NoteParseError, VaultError
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


async def test_updates_that_arrive_together_go_in_groups_and_keep_their_order(
    vault_dir: Path,
) -> None:
    vault = FolderVault(vault_dir, scratch=vault_dir / ".vaultgate" / "scratch")
    for n in range(10):
        await vault.create(f"Inbox/n{n}.md", {"id": f"n{n}"}, "text\n")
    calls = [
        vault.update_fields(
            f"Inbox/n{i % 10}.md",
            {"last": i, f"k{i}": i},
            append_once=(f"<!-- {i} -->", f"<!-- {i} -->\nline {i}\n"),
        )
        for i in range(100)
    ]
    results = await asyncio.gather(*calls)
    assert vault._updates.batches < 100
    assert vault._updates.largest > 1  # they did go together
    for n in range(10):
        mine = [i for i in range(100) if i % 10 == n]
        note = await vault.read(f"Inbox/n{n}.md")
        # Each update went on top of the one before it, in the order they were made.
        assert note.frontmatter == {"id": f"n{n}", **{f"k{i}": i for i in mine}, "last": mine[-1]}
        assert [int(i) for i in re.findall(r"line (\d+)", note.body)] == mine
        assert results[mine[-1]] == note.model_copy(update={"mtime": results[mine[-1]].mtime})
        assert vault.index.hash_of(f"Inbox/n{n}.md") == note.content_hash
    assert all(name.startswith("v-") for name in _scratch_names(vault))  # spares only


async def test_one_bad_update_in_a_group_fails_alone(vault_dir: Path) -> None:
    vault = FolderVault(vault_dir, scratch=vault_dir / ".vaultgate" / "scratch")
    await vault.create("Inbox/a.md", {"id": "a"}, "a\n")
    await vault.create("Inbox/b.md", {"id": "b"}, "b\n")
    (vault_dir / "Inbox" / "broken.md").write_text("---\nagent: [x\n---\nkeep me\n")
    results = await asyncio.gather(
        vault.update_fields("Inbox/a.md", {"status": "done"}),
        vault.update_fields("Inbox/missing.md", {"status": "done"}),
        vault.update_fields("Inbox/broken.md", {"status": "done"}),
        vault.update_fields("../etc/passwd.md", {"status": "done"}),
        vault.update_fields("Inbox/b.md", {"status": "done"}),
        return_exceptions=True,
    )
    assert vault._updates.largest > 1
    a, missing, broken, dotdot, b = results
    assert not isinstance(a, BaseException) and a.frontmatter == {"id": "a", "status": "done"}
    assert not isinstance(b, BaseException) and b.frontmatter == {"id": "b", "status": "done"}
    assert isinstance(missing, NoteNotFound)
    assert isinstance(broken, NoteParseError)
    assert isinstance(dotdot, VaultError)
    assert (vault_dir / "Inbox" / "broken.md").read_text() == "---\nagent: [x\n---\nkeep me\n"
    assert not (vault_dir / "Inbox" / "missing.md").exists()


async def test_an_update_that_loses_to_a_save_in_a_group_is_applied_to_the_save(
    vault_dir: Path,
) -> None:
    saved: list[str] = []

    def person_saves_once(rel: str) -> None:
        if rel == "Inbox/b.md" and not saved:
            saved.append(rel)
            target = vault_dir / rel
            target.write_text(target.read_text().replace("body\n", "body, edited by a person\n"))

    vault = FolderVault(
        vault_dir,
        scratch=vault_dir / ".vaultgate" / "scratch",
        before_replace=person_saves_once,
    )
    for name in "abc":
        await vault.create(f"Inbox/{name}.md", {"id": name}, "body\n")
    notes = await asyncio.gather(
        *(vault.update_fields(f"Inbox/{name}.md", {"status": "done"}) for name in "abc")
    )
    assert saved == ["Inbox/b.md"]
    assert [n.frontmatter for n in notes] == [{"id": x, "status": "done"} for x in "abc"]
    assert notes[1].body == "body, edited by a person\n"
    on_disk = (vault_dir / "Inbox" / "b.md").read_text()
    assert on_disk == "---\nid: b\nstatus: done\n---\nbody, edited by a person\n"


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
