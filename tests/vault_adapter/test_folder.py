from __future__ import annotations

import asyncio
import os
import stat
import threading
from pathlib import Path

import pytest

from vault_adapter import FolderVault, NoteExists, NoteNotFound, NoteParseError, parse_note

HUMAN_NOTE = """---
# written by a person
tags: [agent/message]
agent: researcher   # the research agent
unknown_key: {keep: me}
---
What changed in the Acme contract?

- point one
"""


async def test_round_trip_keeps_unknown_keys_key_order_and_body(vault: FolderVault) -> None:
    path = vault.root / "Inbox" / "q.md"
    path.parent.mkdir()
    path.write_text(HUMAN_NOTE)
    note = await vault.update_fields("Inbox/q.md", {"status": "queued", "id": "m1"})
    text = path.read_text()
    assert text == HUMAN_NOTE.replace("---\nWhat", "status: queued\nid: m1\n---\nWhat")
    assert list(note.frontmatter) == ["tags", "agent", "unknown_key", "status", "id"]
    assert note.body == HUMAN_NOTE.split("---\n", 2)[2]


async def test_update_fields_racing_a_human_edit_keeps_both(vault_dir: Path) -> None:
    edits = iter(["first human edit\n"])

    def human_saves_just_before_our_rename(rel: str) -> None:
        text = next(edits, None)
        if text is not None:
            target = vault_dir / rel
            target.write_text(target.read_text().replace("original body\n", text))

    v = FolderVault(vault_dir, before_replace=human_saves_just_before_our_rename)
    await v.write("n.md", {"owner": "alice"}, "original body\n")
    note = await v.update_fields("n.md", {"status": "done"})
    assert note.body == "first human edit\n"
    assert note.frontmatter == {"owner": "alice", "status": "done"}
    expected = "---\nowner: alice\nstatus: done\n---\nfirst human edit\n"
    assert (vault_dir / "n.md").read_text() == expected


@pytest.mark.parametrize("spares", [True, False], ids=["scratch", "temp-beside-the-note"])
async def test_a_save_between_the_check_and_the_rename_is_kept(
    vault_dir: Path, spares: bool
) -> None:
    """The last moment a person's save can land: after the note was found unchanged,
    before the new version is renamed in. Their save stays, and the fields are
    applied to it."""
    saves = iter(["saved by a person\n"])

    def person_saves_atomically(rel: str) -> None:
        text = next(saves, None)
        if text is not None:
            target = vault_dir / rel
            tmp = target.with_name(".n.md.person.tmp")
            tmp.write_text(target.read_text().replace("original body\n", text))
            os.replace(tmp, target)

    v = FolderVault(
        vault_dir,
        scratch=vault_dir / ".vaultgate" / "scratch" if spares else None,
        after_check=person_saves_atomically,
    )
    await v.write("n.md", {"owner": "alice"}, "original body\n")
    note = await v.update_fields("n.md", {"status": "done"})
    expected = "---\nowner: alice\nstatus: done\n---\nsaved by a person\n"
    assert (vault_dir / "n.md").read_text() == expected
    assert note.body == "saved by a person\n"
    assert v.index.hash_of("n.md") == (await v.read("n.md")).content_hash
    leftovers = [name for name in os.listdir(vault_dir) if name.endswith(".tmp")]
    assert leftovers == []


async def test_concurrent_field_updates_lose_nothing(vault: FolderVault) -> None:
    await vault.write("n.md", {"title": "t"}, "body\n")
    await asyncio.gather(*(vault.update_fields("n.md", {f"k{i}": i}) for i in range(40)))
    note = await vault.read("n.md")
    assert {f"k{i}": i for i in range(40)}.items() <= note.frontmatter.items()
    assert note.body == "body\n"


async def test_update_fields_refuses_a_note_whose_yaml_is_broken(vault: FolderVault) -> None:
    (vault.root / "b.md").write_text("---\nagent: [x\n---\nkeep me\n")
    with pytest.raises(NoteParseError):
        await vault.update_fields("b.md", {"status": "error"})
    assert (vault.root / "b.md").read_text() == "---\nagent: [x\n---\nkeep me\n"


def test_a_reader_never_sees_a_partial_note_during_1000_rewrites(vault: FolderVault) -> None:
    bodies = [f"version {i}\n" + "lorem ipsum " * (50 + i % 200) for i in range(1000)]
    valid = set(bodies)
    asyncio.run(vault.write("hot.md", {"v": -1}, bodies[0]))
    target = vault.root / "hot.md"
    done = threading.Event()
    seen: list[str] = []
    bad: list[bytes] = []

    def reader() -> None:
        while not done.is_set():
            raw = target.read_bytes()
            try:
                body = parse_note("hot.md", raw, 0.0).body
            except NoteParseError:
                bad.append(raw)
                continue
            if body not in valid:
                bad.append(raw)
            seen.append(body)

    async def rewrite() -> None:
        for i, body in enumerate(bodies):
            await vault.write("hot.md", {"v": i}, body)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        asyncio.run(rewrite())
    finally:
        done.set()
        thread.join()
    assert bad == []
    assert len(seen) > 100
    assert parse_note("hot.md", target.read_bytes(), 0.0).body == bodies[-1]


async def test_writes_leave_no_temp_files_and_keep_the_file_mode(vault: FolderVault) -> None:
    await vault.write("Folder/n.md", {"a": 1}, "x")
    os.chmod(vault.root / "Folder" / "n.md", 0o640)
    await vault.update_fields("Folder/n.md", {"a": 2})
    assert os.listdir(vault.root / "Folder") == ["n.md"]
    assert stat.S_IMODE((vault.root / "Folder" / "n.md").stat().st_mode) == 0o640


async def test_create_refuses_to_overwrite(vault: FolderVault) -> None:
    await vault.create("Messages/r.md", {"a": 1}, "first")
    with pytest.raises(NoteExists):
        await vault.create("Messages/r.md", {"a": 2}, "second")
    assert (await vault.read("Messages/r.md")).body == "first"
    assert os.listdir(vault.root / "Messages") == ["r.md"]


async def test_delete_and_exists(vault: FolderVault) -> None:
    await vault.write("n.md", {}, "x")
    assert await vault.exists("n.md")
    await vault.delete("n.md")
    assert not await vault.exists("n.md")
    with pytest.raises(NoteNotFound):
        await vault.delete("n.md")
    with pytest.raises(NoteNotFound):
        await vault.read("n.md")


async def test_listing_skips_dot_folders_and_non_notes(vault: FolderVault) -> None:
    for rel in ["Agents/a.md", "Agents/sub/b.md", ".obsidian/c.md", "Agents/.d.md", "e.md"]:
        (vault.root / rel).parent.mkdir(parents=True, exist_ok=True)
        (vault.root / rel).write_text("x")
    (vault.root / "Agents" / "image.png").write_bytes(b"\x89PNG")
    assert await vault.list_notes() == ["Agents/a.md", "Agents/sub/b.md", "e.md"]
    assert await vault.list_notes("Agents", recursive=False) == ["Agents/a.md"]
    assert await vault.list_notes("Missing") == []


async def test_find_by_tag_and_field_use_the_index(vault: FolderVault) -> None:
    (vault.root / "Agents").mkdir()
    (vault.root / "Agents" / "r.md").write_text("---\ntags: ['#agent/definition']\n---\nrole")
    (vault.root / "Inbox").mkdir()
    (vault.root / "Inbox" / "m.md").write_text("---\nagent: r\nstatus: queued\n---\nhi")
    (vault.root / "Inbox" / "broken.md").write_text("---\nagent: [\n---\nhi")
    assert await vault.find_by_tag("agent/definition") == ["Agents/r.md"]
    assert await vault.find_by_field("status", "queued") == ["Inbox/m.md"]
    await vault.update_fields("Inbox/m.md", {"status": "done"})
    assert await vault.find_by_field("status", "queued") == []
    assert await vault.find_by_field("status", "done") == ["Inbox/m.md"]
    assert vault.index.get("Inbox/broken.md") is not None


async def test_rescan_reads_every_note_once_and_reports_broken_ones(vault: FolderVault) -> None:
    for i in range(600):
        (vault.root / f"n{i}.md").write_text(f"---\ni: {i}\n---\n")
    (vault.root / "bad.md").write_bytes(b"\xff\xfe")
    items = [item async for item in vault.rescan()]
    assert len(items) == 601
    assert len({item.path for item in items}) == 601
    broken = [item for item in items if item.error is not None]
    assert [item.path for item in broken] == ["bad.md"]
    assert vault.index.ready
    assert len(vault.index) == 601


async def test_append_once_appends_a_section_exactly_once(vault: FolderVault) -> None:
    await vault.write("t.md", {"turn_count": 0}, "# thread\n")
    section = ("<!-- turn 1 -->", "<!-- turn 1 -->\nhello\n")
    for _ in range(3):
        note = await vault.update_fields("t.md", {"turn_count": 1}, append_once=section)
    assert note.body == "# thread\n<!-- turn 1 -->\nhello\n"
