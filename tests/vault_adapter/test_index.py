"""NoteIndex on its own: what put/remove leave behind and what the lookups answer."""

from __future__ import annotations

import gc
import tracemalloc

from vault_adapter import IndexEntry, NoteIndex, parse_note
from vault_adapter.note import Note, content_hash

FIELDS = ("status", "direction", "agent", "channel", "id")


def note(path: str, yaml: str, body: str = "text\n") -> Note:
    return parse_note(path, f"---\n{yaml}---\n{body}".encode(), 0.0)


def message(path: str, turn: str, status: str, direction: str = "inbound") -> Note:
    return note(
        path,
        f"tags: [agent/message]\ndirection: {direction}\nid: {turn}\n"
        f"status: {status}\nagent: bench\n",
    )


def test_entry_keeps_hash_tags_and_the_indexed_fields_in_index_order() -> None:
    index = NoteIndex(FIELDS)
    n = note("Inbox/a.md", "id: t1\nsubject: s\ntags: [Agent/Message, x]\nstatus: queued\n")
    index.put(n)
    entry = index.get("Inbox/a.md")
    assert entry == IndexEntry(
        n.content_hash, ("Agent/Message", "x"), (("status", "queued"), ("id", "t1"))
    )
    assert entry.field("id") == "t1"
    assert entry.field("agent", "none") == "none"
    assert index.hash_of("Inbox/a.md") == n.content_hash
    assert index.get("Inbox/b.md") is None
    assert index.hash_of("Inbox/b.md") is None
    assert "Inbox/a.md" in index
    assert len(index) == 1


def test_a_field_set_to_null_is_indexed_and_a_missing_one_is_not() -> None:
    index = NoteIndex(FIELDS)
    index.put(note("a.md", "status: null\n"))
    index.put(note("b.md", "agent: x\n"))
    assert index.by_field("status", None) == ["a.md"]
    assert index.get("a.md") == IndexEntry(index.hash_of("a.md") or "", (), (("status", None),))
    assert index.get("b.md") == IndexEntry(index.hash_of("b.md") or "", (), (("agent", "x"),))


def test_fields_are_named_once_in_the_order_given() -> None:
    assert NoteIndex(["id", "status", "id"]).fields == ("id", "status")


def test_by_tag_ignores_case_and_hash_and_forgets_a_removed_tag() -> None:
    index = NoteIndex()
    index.put(note("b.md", "tags: [Project/X]\n"))
    index.put(note("a.md", "tags: [project/x, other]\n"))
    assert index.by_tag("#PROJECT/x") == ["a.md", "b.md"]
    index.put(note("a.md", "tags: [other]\n"))
    assert index.by_tag("project/x") == ["b.md"]
    index.remove("b.md")
    assert index.by_tag("project/x") == []
    assert index.by_tag("other") == ["a.md"]


def test_by_field_follows_a_note_through_its_statuses() -> None:
    index = NoteIndex(FIELDS)
    for status in ("queued", "running", "done"):
        index.put(message("Inbox/m.md", "t1", status))
        assert index.by_field("status", status) == ["Inbox/m.md"]
    assert index.by_field("status", "queued") == []
    assert index.by_field("status", "running") == []
    index.remove("Inbox/m.md")
    assert index.by_field("status", "done") == []
    assert index.by_field("id", "t1") == []
    assert index.paths() == []


def test_by_field_on_id_for_many_notes() -> None:
    """Each id names an inbound note and its reply; each lookup answers exactly those."""
    index = NoteIndex(FIELDS)
    for i in range(300):
        index.put(message(f"Inbox/m{i}.md", f"t{i}", "running"))
        index.put(message(f"Messages/r{i}.md", f"t{i}", "done", "outbound"))
        index.put(message(f"Inbox/m{i}.md", f"t{i}", "done"))
    for i in range(300):
        assert index.by_field("id", f"t{i}") == [f"Inbox/m{i}.md", f"Messages/r{i}.md"]
    assert len(index.by_field("status", "done")) == 600
    assert len(index.by_field("direction", "outbound")) == 300
    assert len(index.by_tag("agent/message")) == 600
    for i in range(0, 300, 2):
        index.remove(f"Messages/r{i}.md")
        index.put(message(f"Inbox/m{i}.md", f"u{i}", "done"))
    for i in range(300):
        if i % 2:
            assert index.by_field("id", f"t{i}") == [f"Inbox/m{i}.md", f"Messages/r{i}.md"]
        else:
            assert index.by_field("id", f"t{i}") == []
            assert index.by_field("id", f"u{i}") == [f"Inbox/m{i}.md"]
    assert len(index.by_field("status", "done")) == 450
    assert len(index) == 450


def test_many_notes_share_a_value_and_lose_it_one_by_one() -> None:
    index = NoteIndex(FIELDS)
    paths = [f"n{i:03d}.md" for i in range(100)]
    for path in paths:
        index.put(note(path, "status: idle\n"))
    assert index.by_field("status", "idle") == paths
    for k, path in enumerate(paths):
        index.put(note(path, "status: busy\n"))
        assert index.by_field("status", "idle") == paths[k + 1 :]
        assert index.by_field("status", "busy") == paths[: k + 1]


def test_values_keep_their_type() -> None:
    index = NoteIndex(["n", "flag"])
    index.put(note("a.md", "n: 1\nflag: true\n"))
    index.put(note("b.md", "n: '1'\nflag: 'true'\n"))
    assert index.get("a.md") == IndexEntry(
        index.hash_of("a.md") or "", (), (("n", 1), ("flag", True))
    )
    entry = index.get("b.md")
    assert entry is not None and entry.field("n") == "1" and entry.field("flag") == "true"
    assert index.by_field("n", 1) == ["a.md"]
    assert index.by_field("n", "1") == ["b.md"]
    assert index.by_field("flag", True) == ["a.md"]


def test_lists_and_mappings_are_found_by_equality() -> None:
    index = NoteIndex(["who"])
    index.put(note("a.md", "who: [x, y]\n"))
    index.put(note("b.md", "who: {name: x}\n"))
    index.put(note("c.md", "who: x\n"))
    assert index.by_field("who", ["x", "y"]) == ["a.md"]
    assert index.by_field("who", {"name": "x"}) == ["b.md"]
    assert index.by_field("who", "x") == ["c.md"]
    index.put(note("a.md", "who: x\n"))
    assert index.by_field("who", ["x", "y"]) == []
    assert index.by_field("who", "x") == ["a.md", "c.md"]
    index.remove("b.md")
    assert index.by_field("who", {"name": "x"}) == []


def test_broken_notes_keep_only_their_hash() -> None:
    index = NoteIndex(FIELDS)
    index.put(message("Inbox/m.md", "t1", "queued"))
    digest = content_hash(b"---\n: [\n---\n")
    index.put_broken("Inbox/m.md", digest)
    assert index.get("Inbox/m.md") == IndexEntry(digest, (), (), broken=True)
    assert index.hash_of("Inbox/m.md") == digest
    assert index.by_field("id", "t1") == []
    assert index.by_tag("agent/message") == []


def test_any_hash_string_comes_back_unchanged() -> None:
    index = NoteIndex()
    odd = ["", "x", "0" * 32, "F" * 32, " " + "a" * 31, "0x" + "a" * 30, "a" * 64, "é" * 32]
    for k, digest in enumerate(odd):
        index.put_broken(f"{k}.md", digest)
    assert [index.hash_of(f"{k}.md") for k in range(len(odd))] == odd


def test_under_lists_a_folder_and_not_its_namesakes() -> None:
    index = NoteIndex()
    for path in ("Inbox/a.md", "Inbox/sub/b.md", "Inboxes/c.md", "top.md"):
        index.put(note(path, "x: 1\n"))
    assert index.under("Inbox") == ["Inbox/a.md", "Inbox/sub/b.md"]
    assert index.under("Inbox/") == ["Inbox/a.md", "Inbox/sub/b.md"]
    assert index.under("") == ["Inbox/a.md", "Inbox/sub/b.md", "Inboxes/c.md", "top.md"]
    assert sorted(index.paths()) == index.under("")


def test_tags_differing_only_in_case_are_one_tag() -> None:
    index = NoteIndex()
    index.put(note("a.md", "tags: [Done, done, DONE]\n"))
    assert index.by_tag("done") == ["a.md"]
    index.put(note("a.md", "tags: [done]\n"))
    assert index.by_tag("Done") == ["a.md"]
    index.remove("a.md")
    assert index.by_tag("done") == []


def test_a_value_held_by_many_notes_then_by_few_again() -> None:
    index = NoteIndex(["status"])
    paths = [f"n{i:02d}.md" for i in range(40)]
    for path in paths:
        index.put(note(path, "status: busy\n"))
    for k in range(39, -1, -1):
        index.remove(paths[k])
        assert index.by_field("status", "busy") == paths[:k]
    for path in reversed(paths):
        index.put(note(path, "status: busy\n"))
    assert index.by_field("status", "busy") == paths


def test_a_tuple_holding_a_list_is_kept_and_found() -> None:
    index = NoteIndex(["who"])
    index.put(
        Note(
            path="a.md", frontmatter={"who": ([1],)}, body="", tags=(), mtime=0.0, content_hash="h"
        )
    )
    assert index.by_field("who", ([1],)) == ["a.md"]
    index.remove("a.md")
    assert index.by_field("who", ([1],)) == []


def test_a_turns_notes_cost_the_index_a_few_hundred_bytes_each() -> None:
    """A gateway turn leaves an inbound note, its reply and a thread note in the index for
    good, so the index's size per note is how memory grows with the gateway's history
    (issue 8). A hex-string hash, a (key, value) tuple per field, a set per ``id`` and
    every note's own copy of "done" came to about 1,150 bytes a note here; now about 450."""
    turns = 1000
    tracing = tracemalloc.is_tracing()
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        index = NoteIndex(FIELDS)
        for i in range(turns):
            turn, thread = f"20260101-{i:06d}-abcdef", f"Threads/bench/bench--s{i}.md"
            for status in ("queued", "running", "done"):
                index.put(message(f"Inbox/m{i:05d}.md", turn, status))
            index.put(message(f"Messages/bench/{turn}.md", turn, "done", "outbound"))
            for status in ("running", "idle"):
                index.put(
                    note(
                        thread,
                        f"tags: [agent/thread]\nagent: bench\nchannel: c\nstatus: {status}\n",
                    )
                )
        gc.collect()
        per_note = (tracemalloc.get_traced_memory()[0] - before) / len(index)
    finally:
        if not tracing:
            tracemalloc.stop()
    assert len(index) == 3 * turns
    assert per_note < 650, f"{per_note:.0f} bytes a note"


def test_a_note_written_again_is_found_by_what_it_says_now() -> None:
    index = NoteIndex(["status", "n"])
    index.put(note("b.md", "tags: [x]\nstatus: idle\nn: 1\n"))
    steps = [
        ("tags: [x, y]\nstatus: idle\nn: 1\n", {"x", "y"}, "idle", 1),
        ("tags: [X]\nstatus: busy\nn: 1\n", {"x"}, "busy", 1),
        ("tags: [X]\nstatus: busy\nn: true\n", {"x"}, "busy", True),
        ("tags: [X]\nstatus: busy\nn: 1000\n", {"x"}, "busy", 1000),
        ("tags: [X]\nstatus: busy\nn: 1000\n", {"x"}, "busy", 1000),
        ("n: [1]\n", set(), None, [1]),
        ("tags: [y]\nstatus: idle\n", {"y"}, "idle", None),
    ]
    for yaml, tags, status, n in steps:
        index.put(note("a.md", yaml))
        for tag in ("x", "y"):
            assert ("a.md" in index.by_tag(tag)) == (tag in tags), (yaml, tag)
        for value in ("idle", "busy"):
            assert ("a.md" in index.by_field("status", value)) == (value == status), yaml
        entry = index.get("a.md")
        assert entry is not None and entry.field("n") == n and type(entry.field("n")) is type(n)
        if n is not None:
            assert "a.md" in index.by_field("n", n)
        assert index.by_tag("x")[-1:] == ["b.md"]
        assert index.by_field("status", "idle")[-1:] == ["b.md"]
    assert index.by_field("n", True) == ["b.md"]  # 1 == True, as a dict key
    index.put_broken("a.md", "ab" * 16)
    assert index.by_tag("y") == [] and index.by_field("status", "idle") == ["b.md"]
    index.put(note("a.md", "tags: [y]\nstatus: idle\n"))
    assert index.by_tag("y") == ["a.md"] and index.by_field("status", "idle") == ["a.md", "b.md"]
