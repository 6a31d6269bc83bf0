from __future__ import annotations

from tests.helpers.harness import Harness, definition, message


async def test_a_broken_definition_is_stamped_and_the_others_keep_running(
    harness: Harness,
) -> None:
    harness.write("Agents/good.md", definition("good"))
    harness.write(
        "Agents/bad.md",
        "---\ntags: [agent/definition]\nname: bad\nmode: sometimes\n# my comment\n---\nRole.\n",
    )
    gateway = await harness.start()
    bad = harness.note("Agents/bad.md")
    assert bad.frontmatter["status"] == "error"
    assert bad.frontmatter["error"].startswith("mode: Input should be")
    assert "# my comment" in (harness.root / "Agents/bad.md").read_text()
    assert [p.path for p in gateway.catalogue.problems()] == ["Agents/bad.md"]
    assert gateway.status()["broken_agents"][0]["path"] == "Agents/bad.md"

    harness.write("Inbox/1.md", message("bad", "to the broken one"))
    harness.write("Inbox/2.md", message("good", "to the good one"))
    await harness.done(2)
    rejected = harness.note("Inbox/1.md").frontmatter
    assert rejected["status"] == "rejected"
    assert "broken definition (Agents/bad.md)" in rejected["error"]
    assert harness.note("Inbox/2.md").frontmatter["status"] == "done"


async def test_fixing_a_definition_clears_its_error(harness: Harness) -> None:
    harness.write("Agents/a.md", "---\ntags: [agent/definition]\nbackend: nope\n---\nRole.\n")
    gateway = await harness.start()
    assert harness.note("Agents/a.md").frontmatter["status"] == "error"
    harness.write(
        "Agents/a.md",
        "---\ntags: [agent/definition]\nbackend: scripted\nstatus: error\nerror: old\n---\nRole.\n",
    )
    await harness.wait_event(lambda e: e["type"] == "agent.loaded")
    fm = harness.note("Agents/a.md").frontmatter
    assert "status" not in fm and "error" not in fm
    assert gateway.catalogue.by_name("a") is not None


async def test_an_inbox_note_with_broken_yaml_is_rejected_and_keeps_its_text(
    harness: Harness,
) -> None:
    harness.write("Agents/good.md", definition("good"))
    await harness.start()
    broken = "---\nagent: good\nsubject: [unclosed\n---\nMy important question.\n"
    harness.write("Inbox/broken.md", broken)
    await harness.wait_event(lambda e: e["type"] == "agent.loaded")
    harness.write("Inbox/ok.md", message("good", "still serving?"))
    await harness.done(1)
    note = harness.note("Inbox/broken.md")
    assert note.frontmatter["status"] == "rejected"
    assert "broken YAML frontmatter" in note.frontmatter["error"]
    assert note.frontmatter["broken_frontmatter"] == "agent: good\nsubject: [unclosed\n"
    assert note.body == "My important question.\n"
    assert harness.note("Inbox/ok.md").frontmatter["status"] == "done"


async def test_an_unknown_agent_waits_then_is_rejected_with_the_reason(harness: Harness) -> None:
    harness.write("Agents/good.md", definition("good"))
    await harness.start(agent_wait_s=0.3)
    harness.write("Inbox/q.md", message("nobody", "hello?"))
    [event] = await harness.done(1)
    assert event["type"] == "turn.rejected"
    fm = harness.note("Inbox/q.md").frontmatter
    assert fm["status"] == "rejected"
    assert "no agent named 'nobody'" in fm["error"] and "agents: good" in fm["error"]
    assert harness.note("Inbox/q.md").body == "hello?\n"


async def test_a_message_waits_for_a_definition_that_arrives_later(harness: Harness) -> None:
    await harness.start(agent_wait_s=10)
    harness.write("Inbox/early.md", message("late", "are you there yet?"))
    await harness.wait_event(lambda e: e["type"] == "turn.waiting")
    harness.write("Agents/late.md", definition("late"))
    [event] = await harness.done(1)
    assert event["type"] == "turn.done"
    assert harness.note("Inbox/early.md").frontmatter["status"] == "done"


async def test_empty_message_and_missing_target_get_actionable_errors(harness: Harness) -> None:
    harness.write("Agents/good.md", definition("good"))
    await harness.start()
    harness.write("Inbox/empty.md", "---\nagent: good\n---\n\n")
    harness.write("Inbox/untargeted.md", "just some text\n")
    await harness.done(2)
    empty = harness.note("Inbox/empty.md").frontmatter
    assert empty["status"] == "rejected" and empty["error"].startswith("empty message")
    untargeted = harness.note("Inbox/untargeted.md")
    assert untargeted.frontmatter["status"] == "rejected"
    assert "add 'agent: <name>'" in untargeted.frontmatter["error"]
    assert untargeted.body == "just some text\n"


async def test_drafts_and_finished_notes_are_left_alone(harness: Harness) -> None:
    harness.write("Agents/good.md", definition("good"))
    harness.write("Inbox/draft.md", "---\nagent: good\nstatus: draft\n---\nnot yet\n")
    harness.write("Inbox/old.md", "---\nagent: good\nstatus: done\n---\nanswered long ago\n")
    await harness.start()
    harness.write("Inbox/now.md", message("good", "now"))
    await harness.done(1)
    assert len(harness.backend.calls) == 1
    assert "id" not in harness.note("Inbox/draft.md").frontmatter
    assert "id" not in harness.note("Inbox/old.md").frontmatter


async def test_editing_and_deleting_definitions_take_effect_without_restart(
    harness: Harness,
) -> None:
    harness.write("Agents/a.md", definition("a", extra="script: {reply: 'v1'}\n"))
    await harness.start()
    harness.write("Inbox/1.md", message("a", "x"))
    [first] = await harness.done(1)
    assert harness.note(first["reply"]).body == "v1\n"
    harness.write("Agents/a.md", definition("a", extra="script: {reply: 'v2'}\n"))
    await harness.wait_count(("agent.loaded",), 2)
    harness.write("Inbox/2.md", message("a", "y"))
    await harness.done(2)
    assert harness.note(harness.seen[-1]["reply"]).body == "v2\n"
    (harness.root / "Agents/a.md").unlink()
    await harness.wait_event(lambda e: e["type"] == "agent.removed")
    harness.write("Inbox/3.md", message("a", "z"))
    await harness.done(3, timeout=10)
    assert harness.note("Inbox/3.md").frontmatter["status"] == "rejected"


async def test_a_name_clash_resolves_when_the_first_definition_goes(harness: Harness) -> None:
    harness.write("Agents/a.md", definition("same"))
    gateway = await harness.start()
    harness.write("Agents/b.md", definition("same"))
    await harness.wait_for_file("Agents/b.md", lambda fm: fm.get("status") == "error")
    assert "already used by Agents/a.md" in harness.note("Agents/b.md").frontmatter["error"]
    (harness.root / "Agents/a.md").unlink()
    await harness.wait_count(("agent.loaded",), 2)
    spec = gateway.catalogue.by_name("same")
    assert spec is not None and spec.path == "Agents/b.md"
    assert "status" not in harness.note("Agents/b.md").frontmatter
