"""The contract every vault adapter meets, run against each of them.

FolderVault runs on a temp folder; RemoteVault against the in-memory
parachute-vault fake. A behaviour the gateway relies on belongs here, so a
new adapter is checked by adding one fixture parameter.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.vault_adapter.remote_fake import FakeParachuteVault, remote_vault
from vault_adapter import FolderVault, NoteExists, NoteNotFound, VaultEvent, VaultPathError
from vault_adapter.remote import RemoteVault

TIMEOUT = 10.0


@dataclass
class Subject:
    """An adapter under test, and how another program changes a note behind its back."""

    vault: FolderVault | RemoteVault
    outside_write: Callable[[str, dict[str, Any], str], None]


@pytest.fixture(params=["folder", "remote"])
async def subject(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Subject]:
    if request.param == "folder":
        root = tmp_path / "vault"
        root.mkdir()
        folder = FolderVault(root, quiet_window_s=0.2, index_fields=("status", "agent"))

        def edit_file(rel: str, fields: dict[str, Any], body: str) -> None:
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            lines = "".join(f"{key}: {value}\n" for key, value in fields.items())
            target.write_text(f"---\n{lines}---\n{body}" if fields else body)

        yield Subject(folder, edit_file)
        return
    fake = FakeParachuteVault()
    with fake.mocked():
        async with remote_vault(fake, tmp_path / "state") as remote:

            def edit_on_server(rel: str, fields: dict[str, Any], body: str) -> None:
                fake.put(rel, body, metadata=fields)

            yield Subject(remote, edit_on_server)


HUMAN_FIELDS = {
    "tags": ["agent/message"],
    "agent": "researcher",
    "unknown_key": {"keep": "me", "nested": [1, 2]},
    "zeta": 1,
    "alpha": "last but one",
    "received_at": "2026-05-01T10:00:00Z",
}
HUMAN_BODY = "\n  What changed in the Acme contract?\n\n- point one\n\ttabbed\n"


async def test_write_then_read_keeps_field_order_unknown_keys_and_body(subject: Subject) -> None:
    written = await subject.vault.write("Inbox/q.md", HUMAN_FIELDS, HUMAN_BODY)
    note = await subject.vault.read("Inbox/q.md")
    assert list(note.frontmatter) == list(HUMAN_FIELDS)
    assert note.frontmatter == HUMAN_FIELDS
    assert note.body == HUMAN_BODY
    assert note.tags == ("agent/message",)
    assert note.content_hash == written.content_hash
    assert await subject.vault.exists("Inbox/q.md")


async def test_create_twice_is_note_exists_and_keeps_the_first(subject: Subject) -> None:
    await subject.vault.create("Messages/r.md", {"a": 1}, "first")
    with pytest.raises(NoteExists):
        await subject.vault.create("Messages/r.md", {"a": 2}, "second")
    note = await subject.vault.read("Messages/r.md")
    assert (note.frontmatter, note.body) == ({"a": 1}, "first")


async def test_update_fields_changes_only_the_named_keys(subject: Subject) -> None:
    await subject.vault.write("n.md", HUMAN_FIELDS, HUMAN_BODY)
    note = await subject.vault.update_fields(
        "n.md", {"status": "done", "zeta": 2}, remove=("alpha", "not-there")
    )
    expected = {k: v for k, v in HUMAN_FIELDS.items() if k != "alpha"}
    expected.update(zeta=2, status="done")
    assert note.frontmatter == expected
    assert list(note.frontmatter) == list(expected)
    assert note.body == HUMAN_BODY
    assert await subject.vault.read("n.md") == note


async def test_update_fields_with_nothing_to_change_changes_nothing(subject: Subject) -> None:
    before = await subject.vault.write("n.md", {"status": "done"}, "x")
    after = await subject.vault.update_fields("n.md", {"status": "done"})
    assert after.content_hash == before.content_hash


async def test_update_fields_on_a_missing_note_is_note_not_found(subject: Subject) -> None:
    with pytest.raises(NoteNotFound):
        await subject.vault.update_fields("missing.md", {"status": "done"})


async def test_append_once_appends_exactly_once(subject: Subject) -> None:
    await subject.vault.write("t.md", {"turn_count": 0}, "# thread\n")
    section = ("<!-- turn 1 -->", "<!-- turn 1 -->\nhello\n")
    for _ in range(3):
        note = await subject.vault.update_fields("t.md", {"turn_count": 1}, append_once=section)
    assert note.body == "# thread\n<!-- turn 1 -->\nhello\n"
    assert note.frontmatter == {"turn_count": 1}


async def test_delete_then_read_is_note_not_found(subject: Subject) -> None:
    await subject.vault.write("n.md", {}, "x")
    await subject.vault.delete("n.md")
    assert not await subject.vault.exists("n.md")
    with pytest.raises(NoteNotFound):
        await subject.vault.read("n.md")
    with pytest.raises(NoteNotFound):
        await subject.vault.delete("n.md")


async def test_list_notes_by_folder(subject: Subject) -> None:
    for rel in ["Agents/a.md", "Agents/sub/b.md", "Agents_x/c.md", "e.md"]:
        await subject.vault.write(rel, {}, "x")
    assert await subject.vault.list_notes() == [
        "Agents/a.md",
        "Agents/sub/b.md",
        "Agents_x/c.md",
        "e.md",
    ]
    assert await subject.vault.list_notes("Agents") == ["Agents/a.md", "Agents/sub/b.md"]
    assert await subject.vault.list_notes("Agents", recursive=False) == ["Agents/a.md"]
    assert await subject.vault.list_notes("Missing") == []


async def test_find_by_tag_and_by_field(subject: Subject) -> None:
    await subject.vault.write("Agents/r.md", {"tags": ["#agent/definition"]}, "role")
    await subject.vault.write("Inbox/m.md", {"agent": "r", "status": "queued"}, "hi")
    await subject.vault.write("Inbox/n.md", {"agent": "r", "status": "done"}, "hi")
    assert await subject.vault.find_by_tag("agent/definition") == ["Agents/r.md"]
    assert await subject.vault.find_by_tag("#agent/definition") == ["Agents/r.md"]
    assert await subject.vault.find_by_field("status", "queued") == ["Inbox/m.md"]
    await subject.vault.update_fields("Inbox/m.md", {"status": "done"})
    assert await subject.vault.find_by_field("status", "queued") == []
    assert await subject.vault.find_by_field("status", "done") == ["Inbox/m.md", "Inbox/n.md"]


async def test_rescan_lists_every_note_once(subject: Subject) -> None:
    paths = [f"Folder{i % 3}/n{i}.md" for i in range(12)]
    for i, rel in enumerate(paths):
        await subject.vault.write(rel, {"i": i}, f"note {i}\n")
    items = [item async for item in subject.vault.rescan()]
    assert sorted(item.path for item in items) == sorted(paths)
    assert all(item.note is not None and item.error is None for item in items)
    assert subject.vault.index.ready
    assert (
        subject.vault.index.hash_of(paths[0]) == (await subject.vault.read(paths[0])).content_hash
    )


async def test_rescan_hands_over_only_wanted_notes_and_indexes_them_all(
    subject: Subject,
) -> None:
    for i in range(9):
        tags = ["wanted"] if i % 3 == 0 else ["other"]
        await subject.vault.write(f"F{i % 2}/n{i}.md", {"tags": tags, "i": i}, f"note {i}\n")
    items = [item async for item in subject.vault.rescan(lambda note: note.has_tag("Wanted"))]
    assert sorted(item.path for item in items) == ["F0/n0.md", "F0/n6.md", "F1/n3.md"]
    assert all(item.note is not None and item.note.body for item in items)
    assert subject.vault.index.ready
    assert len(await subject.vault.find_by_tag("other")) == 6
    note = await subject.vault.read("F1/n5.md")
    assert subject.vault.index.hash_of("F1/n5.md") == note.content_hash


async def test_rewrite_replaces_the_whole_text(subject: Subject) -> None:
    await subject.vault.write("n.md", {"a": 1}, "old body\n")
    note = await subject.vault.rewrite("n.md", lambda text: text.replace("old", "new"))
    assert note is not None
    assert (note.frontmatter, note.body) == ({"a": 1}, "new body\n")


@pytest.mark.parametrize(
    "bad", ["../x.md", "/etc/passwd.md", "a/../../b.md", "a\\b.md", "", "x\x00.md"]
)
async def test_paths_that_leave_the_vault_are_refused(subject: Subject, bad: str) -> None:
    vault = subject.vault
    attempts = [
        vault.read(bad),
        vault.exists(bad),
        vault.write(bad, {}, "x"),
        vault.create(bad, {}, "x"),
        vault.update_fields(bad, {"a": 1}),
        vault.delete(bad),
    ]
    for attempt in attempts:
        with pytest.raises(VaultPathError):
            await attempt
    if bad:
        with pytest.raises(VaultPathError):
            await vault.list_notes(bad.removesuffix(".md"))


async def test_the_watcher_reports_outside_edits_and_not_our_own(subject: Subject) -> None:
    vault = subject.vault
    async with vault.watch() as watcher:
        subject.outside_write("Inbox/human.md", {"agent": "r"}, "hello\n")
        event = await next_event_for(watcher, "Inbox/human.md")
        assert event.kind == "created"
        assert event.note is not None and event.note.body == "hello\n"
        await vault.write("Messages/reply.md", {"tags": ["agent/message"]}, "reply")
        await vault.update_fields("Inbox/human.md", {"status": "done"})
        await vault.create("Threads/t.md", {"turn_count": 1}, "")
        subject.outside_write("sentinel.md", {}, "after our writes")
        event = await next_event_for(watcher, "sentinel.md")
        assert event.kind == "created"


async def next_event_for(watcher: Any, path: str) -> VaultEvent:
    """The first event from ``watcher``; it must be about ``path``."""
    event: VaultEvent = await asyncio.wait_for(watcher.get(), TIMEOUT)
    assert event.path == path, f"unexpected event {event}"
    return event
