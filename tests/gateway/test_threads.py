from __future__ import annotations

from gateway.registry import Registry, ThreadRecord
from gateway.threads import archive_note, conversation_section, older_turns, turn_marker
from tests.helpers.harness import Harness, definition, message
from vault_adapter import render_note


async def test_leaves_follow_the_mode_and_subject(harness: Harness) -> None:
    harness.write("Agents/single.md", definition("single", mode="single-threaded"))
    harness.write("Agents/multi.md", definition("multi"))
    await harness.start()
    harness.write("Inbox/a.md", message("single", "a", subject="acme"))
    harness.write("Inbox/b.md", message("multi", "b", subject="Acme Deal"))
    harness.write("Inbox/c.md", message("multi", "c"))
    harness.write("Inbox/d.md", message("multi", "d"))
    harness.write("Inbox/e.md", message("multi", "e", subject="../../etc/passwd"))
    await harness.done(5)
    threads = sorted(
        p.relative_to(harness.root).as_posix() for p in (harness.root / "Threads").rglob("*.md")
    )
    ids = {n: harness.note(f"Inbox/{n}.md").frontmatter["id"] for n in "cd"}
    assert threads == sorted(
        [
            "Threads/single/single.md",
            "Threads/multi/multi--Acme-Deal.md",
            f"Threads/multi/multi--{ids['c']}.md",
            f"Threads/multi/multi--{ids['d']}.md",
            "Threads/multi/multi--------etc-passwd.md",
        ]
    )
    assert not (harness.root.parent / "etc").exists()


async def test_channel_routes_to_the_agent_that_owns_it(harness: Harness) -> None:
    harness.write("Agents/r.md", definition("researcher", extra="channels: [research]\n"))
    await harness.start()
    harness.write("Inbox/q.md", "---\nchannel: research\n---\nhi\n")
    [done] = await harness.done()
    assert done["thread"] == "research:researcher--" + harness.note("Inbox/q.md").frontmatter["id"]
    assert harness.note("Inbox/q.md").frontmatter["thread"].startswith("[[Threads/research/")


async def test_human_edits_to_the_thread_note_survive_the_next_turn(harness: Harness) -> None:
    harness.write("Agents/h.md", definition("h", mode="single-threaded"))
    await harness.start()
    harness.write("Inbox/1.md", message("h", "one"))
    await harness.done(1)
    path = harness.root / "Threads/h/h.md"
    text = path.read_text().replace("---\n# h", "my_note: keep me  # a comment\n---\n# h")
    path.write_text(text + "\nA paragraph I added.\n")
    harness.write("Inbox/2.md", message("h", "two"))
    await harness.done(2)
    after = path.read_text()
    assert "my_note: keep me  # a comment" in after
    assert "A paragraph I added." in after
    assert harness.note("Threads/h/h.md").frontmatter["turn_count"] == 2
    assert after.index("A paragraph I added.") < after.index("two")


def _markers(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("<!-- vaultgate:turn ")]


def _archive_parts(harness: Harness, leaf: str) -> list[str]:
    folder = harness.root / "Threads" / leaf.split("/")[0] / leaf.split("/")[1]
    return sorted(p.relative_to(harness.root).as_posix() for p in folder.glob("part-*.md"))


def test_older_turns_keep_the_newest_half_and_what_people_wrote_among_them() -> None:
    def section(n: int, size: int = 10) -> str:
        return f"\n{turn_marker(f't{n}')}\n### {n}\n\n" + "x" * size + "\n"

    body = "# h\n" + "".join(section(n) for n in range(5))
    assert older_turns(body, most=5, most_bytes=10**6) is None
    body += "\nA paragraph I added.\n" + section(5)
    moved = older_turns(body, most=5, most_bytes=10**6)
    assert moved is not None
    assert _markers(moved) == [turn_marker(f"t{n}") for n in range(4)]
    assert _markers(body.replace(moved, "", 1)) == [turn_marker(f"t{n}") for n in (4, 5)]
    # A body too long moves its older half, whatever the count; one section never moves.
    big = "# h\n" + "".join(section(n, 1000) for n in range(3))
    moved = older_turns(big, most=50, most_bytes=2000)
    assert moved is not None and _markers(moved) == [turn_marker("t0"), turn_marker("t1")]
    assert older_turns("# h\n" + section(0, 5000), most=50, most_bytes=2000) is None
    # A marker quoted inside a line is not a section.
    assert older_turns(body.replace("<!--", "see <!--"), most=5, most_bytes=10**6) is None


async def test_a_long_thread_moves_its_older_turns_to_archive_notes_and_loses_none(
    harness: Harness,
) -> None:
    harness.write("Agents/h.md", definition("h", mode="single-threaded"))
    await harness.start(thread_note_turns=4)
    harness.write("Inbox/00.md", message("h", "message 00"))
    await harness.done(1)
    path = harness.root / "Threads/h/h.md"
    path.write_text(path.read_text() + "\nA paragraph I added.\n")
    for n in range(1, 11):
        harness.write(f"Inbox/{n:02d}.md", message("h", f"message {n:02d}"))
        await harness.done(n + 1)

    note = harness.note("Threads/h/h.md")
    parts = _archive_parts(harness, "h/h")
    assert parts == [
        "Threads/h/h/part-0001.md",
        "Threads/h/h/part-0002.md",
        "Threads/h/h/part-0003.md",
    ]
    assert len(_markers(note.body)) <= 4
    assert note.frontmatter["turn_count"] == 11
    assert note.frontmatter["earlier_turns"] == "[[Threads/h/h/part-0003]]"
    # Every turn is in exactly one note, in the order the turns ran.
    texts = [(harness.root / p).read_text() for p in parts] + [path.read_text()]
    assert "".join(texts).count("A paragraph I added.") == 1
    assert "A paragraph I added." in texts[0]
    assert gateway_order(texts) == [f"message {n:02d}" for n in range(11)]
    assert len(set(gateway_markers(texts))) == len(gateway_markers(texts)) == 11
    for number, part in enumerate(parts, start=1):
        fields = harness.note(part).frontmatter
        assert fields["tags"] == ["agent/thread-archive"]
        assert fields["thread"] == "[[Threads/h/h]]"
        assert fields["part"] == number
        assert fields.get("earlier_turns") == (
            f"[[Threads/h/h/part-{number - 1:04d}]]" if number > 1 else None
        )


def gateway_markers(texts: list[str]) -> list[str]:
    return [m for text in texts for m in _markers(text)]


def gateway_order(texts: list[str]) -> list[str]:
    return [line for text in texts for line in text.splitlines() if line.startswith("message ")]


async def _five_turns_then_stop(harness: Harness) -> str:
    """Five turns of thread ``h`` (no archive yet), the gateway stopped; the thread
    note's body."""
    harness.write("Agents/h.md", definition("h", mode="single-threaded"))
    await harness.start()
    for n in range(5):
        harness.write(f"Inbox/{n:02d}.md", message("h", f"message {n:02d}"))
        await harness.done(n + 1)
    await harness.stop()
    return harness.note("Threads/h/h.md").body


async def _sixth_turn(harness: Harness) -> list[str]:
    """One more turn with ``thread_note_turns=4``, so the first four turns move."""
    await harness.start(thread_note_turns=4)
    harness.write("Inbox/05.md", message("h", "message 05"))
    await harness.done(6)
    return _archive_parts(harness, "h/h")


async def test_an_archive_part_a_move_left_unfinished_is_used_not_doubled(
    harness: Harness,
) -> None:
    """A crash between creating an archive part and cutting its turns from the thread
    note leaves a part holding turns still in the thread note: the next move finds
    it holding exactly what it would write, and only cuts the thread note."""
    body = await _five_turns_then_stop(harness)
    # What the sixth turn's move takes out: the first four of six sections.
    moved = older_turns(body, most=3, most_bytes=10**6)
    assert moved is not None and len(_markers(moved)) == 4
    record = await _thread_record(harness)
    fields, text = archive_note(record, 1, moved)
    harness.write("Threads/h/h/part-0001.md", render_note(fields, text))

    assert await _sixth_turn(harness) == ["Threads/h/h/part-0001.md"]
    texts = [(harness.root / "Threads/h/h/part-0001.md").read_text()]
    texts.append((harness.root / "Threads/h/h.md").read_text())
    assert gateway_order(texts) == [f"message {n:02d}" for n in range(6)]
    assert len(gateway_markers(texts)) == 6
    assert (
        harness.note("Threads/h/h.md").frontmatter["earlier_turns"] == "[[Threads/h/h/part-0001]]"
    )


async def test_an_archive_part_that_holds_something_else_is_never_written_over(
    harness: Harness,
) -> None:
    body = await _five_turns_then_stop(harness)
    # A note of someone's own at the next part's name, quoting the thread's first turn.
    first = _markers(body)[0]
    mine = f"---\npart: 1\n---\nMy own notes on this thread, from:\n{first}\n"
    harness.write("Threads/h/h/part-0001.md", mine)

    assert await _sixth_turn(harness) == ["Threads/h/h/part-0001.md", "Threads/h/h/part-0002.md"]
    assert (harness.root / "Threads/h/h/part-0001.md").read_text() == mine
    part = harness.note("Threads/h/h/part-0002.md")
    assert part.frontmatter["earlier_turns"] == "[[Threads/h/h/part-0001]]"
    texts = [part.body, harness.note("Threads/h/h.md").body]
    assert gateway_order(texts) == [f"message {n:02d}" for n in range(6)]


async def _thread_record(harness: Harness) -> ThreadRecord:
    registry = await Registry.open(harness.root / ".vaultgate" / "registry.db")
    try:
        record = await registry.get_thread("h:h")
    finally:
        await registry.close()
    assert record is not None
    return record


def test_marker_lines_in_a_message_are_not_section_boundaries() -> None:
    pasted = f"look at this:\n{turn_marker('x1')}\nold text\n{turn_marker('x2')}\n"
    section = conversation_section(
        turn_id="t1",
        received_at="2026-11-21T00:00:00Z",
        sender="alice",
        message=pasted,
        finished_at="2026-11-21T00:00:01Z",
        agent="h",
        reply=pasted,
        failed=False,
    )
    assert _markers(section) == [turn_marker("t1")]
    assert section.count(" " + turn_marker("x1")) == 2
    # Sections saved with CRLF line ends are still sections.
    body = "# h\r\n" + "".join(f"\r\n{turn_marker(f't{n}')}\r\ntext {n}\r\n" for n in range(4))
    moved = older_turns(body, most=3, most_bytes=10**6)
    assert moved is not None and moved.count("vaultgate:turn") == 3
    # A long preamble of a person's own is not a reason to move turns.
    assert older_turns("# h\n" + "x" * 5000 + body, most=50, most_bytes=2000) is None
