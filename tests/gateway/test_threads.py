from __future__ import annotations

from tests.helpers.harness import Harness, definition, message


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
