from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from vault_adapter import FolderVault, VaultEvent, Watcher

TIMEOUT = 10.0


@pytest.fixture
async def watcher(vault: FolderVault) -> AsyncIterator[Watcher]:
    async with vault.watch() as w:
        yield w


async def next_event(w: Watcher) -> VaultEvent:
    return await asyncio.wait_for(w.get(), TIMEOUT)


async def events_until(w: Watcher, path: str) -> list[VaultEvent]:
    """Every event up to and including the first one for ``path``."""
    seen = []
    while True:
        event = await next_event(w)
        seen.append(event)
        if event.path == path:
            return seen


async def test_a_note_written_in_three_chunks_yields_one_event(
    vault: FolderVault, watcher: Watcher
) -> None:
    path = vault.root / "Inbox" / "chunked.md"
    path.parent.mkdir()
    chunks = ["---\nagent: researcher\n", "---\nWhat changed ", "in the contract?\n"]
    with open(path, "w") as fh:  # noqa: ASYNC230 (the test plays an editor)
        for chunk in chunks:
            fh.write(chunk)
            fh.flush()
            await asyncio.sleep(0.05)  # the scenario: an editor saving in pieces
    events = await events_until(watcher, "Inbox/chunked.md")
    assert len(events) == 1
    assert events[0].kind == "created"
    assert events[0].note is not None
    assert events[0].note.body == "What changed in the contract?\n"
    (vault.root / "sentinel.md").write_text("s")
    assert [e.path for e in await events_until(watcher, "sentinel.md")] == ["sentinel.md"]


async def test_the_adapters_own_writes_are_not_echoed(vault: FolderVault, watcher: Watcher) -> None:
    (vault.root / "human.md").write_text("---\na: 1\n---\n")
    await events_until(watcher, "human.md")
    await vault.write("Messages/reply.md", {"tags": ["agent/message"]}, "reply")
    await vault.update_fields("human.md", {"status": "done"})
    await vault.create("Threads/t.md", {"turn_count": 1}, "")
    (vault.root / "sentinel.md").write_text("after our writes")
    events = await events_until(watcher, "sentinel.md")
    assert [e.path for e in events] == ["sentinel.md"]


async def test_a_human_edit_after_our_write_is_seen(vault: FolderVault, watcher: Watcher) -> None:
    await vault.write("n.md", {"status": "done"}, "ours\n")
    (vault.root / "n.md").write_text("---\nstatus: done\n---\nedited by a person\n")
    event = await next_event(watcher)
    assert event.kind == "modified"
    assert event.note is not None and event.note.body == "edited by a person\n"


async def test_dot_folders_are_ignored(vault: FolderVault, watcher: Watcher) -> None:
    for rel in [".obsidian/workspace.md", ".vaultgate/x.md", ".trash/old.md", "A/.hidden.md"]:
        (vault.root / rel).parent.mkdir(parents=True, exist_ok=True)
        (vault.root / rel).write_text("x")
    (vault.root / "A" / "not-a-note.txt").write_text("x")
    (vault.root / "sentinel.md").write_text("s")
    assert [e.path for e in await events_until(watcher, "sentinel.md")] == ["sentinel.md"]


async def test_delete_and_move_events(vault: FolderVault, watcher: Watcher) -> None:
    (vault.root / "a.md").write_text("---\ntags: [x]\n---\n")
    assert (await next_event(watcher)).kind == "created"
    os.rename(vault.root / "a.md", vault.root / "b.md")
    events = {e.path: e for e in [await next_event(watcher), await next_event(watcher)]}
    assert events["a.md"].kind == "deleted"
    assert events["b.md"].kind == "moved" and events["b.md"].src_path == "a.md"
    assert vault.index.by_tag("x") == ["b.md"]
    (vault.root / "b.md").unlink()
    assert (await next_event(watcher)).kind == "deleted"
    assert vault.index.by_tag("x") == []


async def test_broken_note_event_carries_the_parse_error(
    vault: FolderVault, watcher: Watcher
) -> None:
    (vault.root / "bad.md").write_text("---\nagent: [\n---\nmy text\n")
    event = await next_event(watcher)
    assert event.note is None
    assert event.error is not None and event.error.path == "bad.md"


async def test_touch_without_change_is_not_an_event(vault: FolderVault, watcher: Watcher) -> None:
    (vault.root / "n.md").write_text("x")
    await next_event(watcher)
    os.utime(vault.root / "n.md")
    (vault.root / "sentinel.md").write_text("s")
    assert [e.path for e in await events_until(watcher, "sentinel.md")] == ["sentinel.md"]


async def test_polling_observer_can_be_selected(vault_dir: Path) -> None:
    v = FolderVault(vault_dir, watch_polling=True, poll_interval_s=0.1, quiet_window_s=0.3)
    async with v.watch() as w:
        (vault_dir / "synced.md").write_text("---\na: 1\n---\n")
        event = await asyncio.wait_for(w.get(), TIMEOUT)
    assert event.path == "synced.md"
    assert event.kind == "created"
