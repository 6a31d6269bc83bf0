from __future__ import annotations

import asyncio
import sqlite3

from watchdog.observers.api import BaseObserver

from tests.helpers.harness import Harness, definition, message


async def test_queued_and_interrupted_turns_finish_after_a_restart(harness: Harness) -> None:
    gate = asyncio.Event()
    harness.backend.gate = gate
    harness.write("Agents/a.md", definition("a"))
    await harness.start(shutdown_grace_s=0)
    for i in range(3):
        harness.write(f"Inbox/{i}.md", message("a", f"m{i}", subject="acme"))
    await harness.wait_count(("turn.started",), 1)
    await harness.wait_count(("turn.queued",), 3)
    await harness.stop()
    assert harness.note("Inbox/0.md").frontmatter["status"] == "running"

    gate.set()
    harness.seen.clear()
    await harness.start()
    await harness.done(3)
    for i in range(3):
        assert harness.note(f"Inbox/{i}.md").frontmatter["status"] == "done"
    thread = harness.note("Threads/a/a--acme.md")
    assert thread.frontmatter["turn_count"] == 3
    assert len(list((harness.root / "Messages").rglob("*.md"))) == 3
    body = thread.body
    assert body.index("m0") < body.index("m1") < body.index("m2")


async def test_a_recorded_result_is_written_out_without_running_the_turn_again(
    harness: Harness,
) -> None:
    harness.write("Agents/a.md", definition("a"))
    await harness.start()
    harness.write("Inbox/q.md", message("a", "once"))
    [done] = await harness.done(1)
    await harness.stop()
    # Put the world back to a crash just after the registry recorded the outcome.
    reply = harness.root / done["reply"]
    reply.unlink()
    db = sqlite3.connect(harness.root / ".vaultgate" / "registry.db")
    db.execute("UPDATE turns SET finalized = 0")
    db.commit()
    db.close()
    (harness.root / "Inbox/q.md").write_text(
        (harness.root / "Inbox/q.md").read_text().replace("status: done", "status: running")
    )
    calls_before = len(harness.backend.calls)
    harness.seen.clear()
    await harness.start()
    await harness.done(1)
    assert len(harness.backend.calls) == calls_before
    assert reply.exists()
    assert harness.note("Inbox/q.md").frontmatter["status"] == "done"
    thread = harness.note(harness.note("Inbox/q.md").frontmatter["thread"][2:-2] + ".md")
    assert thread.frontmatter["turn_count"] == 1
    assert thread.body.count("vaultgate:turn") == 1


async def test_a_stamped_note_the_registry_never_saw_is_taken_up_with_its_id(
    harness: Harness,
) -> None:
    harness.write("Agents/a.md", definition("a"))
    harness.write(
        "Inbox/q.md",
        "---\nagent: a\nid: 20260101-000000-abcdef\nstatus: queued\n---\nafter a crash\n",
    )
    await harness.start()
    [done] = await harness.done(1)
    assert done["turn"] == "20260101-000000-abcdef"
    assert done["reply"].endswith("/20260101-000000-abcdef.md")


async def test_messages_written_while_the_gateway_was_down_are_found_at_start(
    harness: Harness,
) -> None:
    harness.write("Agents/a.md", definition("a"))
    await harness.start()
    await harness.stop()
    for i in range(5):
        harness.write(f"Inbox/offline-{i}.md", message("a", f"while down {i}"))
    await harness.start()
    await harness.done(5)
    assert len(list((harness.root / "Messages").rglob("*.md"))) == 5


async def test_a_dead_watcher_is_restarted_and_what_it_missed_is_found(
    harness: Harness,
) -> None:
    harness.write("Agents/a.md", definition("a"))
    gateway = await harness.start()
    watcher = gateway._watcher
    observer = watcher._observer if watcher is not None else None
    assert watcher is not None and observer is not None
    # The fault: the watch ends (inotify's descriptor is closed, watchdog's thread ends).
    observer.stop()
    if isinstance(observer, BaseObserver):
        await asyncio.to_thread(observer.join, 5)
    harness.write("Inbox/missed.md", message("a", "written while nobody watched"))
    [done] = await harness.done(1, timeout=20)
    assert done["status"] == "done"
    assert watcher.restarts == 1


async def test_an_old_copy_saved_over_an_answered_note_gets_its_stamps_back(
    harness: Harness,
) -> None:
    harness.write("Agents/a.md", definition("a"))
    await harness.start()
    original = message("a", "asked once")
    harness.write("Inbox/q.md", original)
    [done] = await harness.done(1)
    harness.write("Inbox/q.md", original)  # an editor saves its copy from before the stamps
    note = await harness.wait_for_file("Inbox/q.md", lambda fm: fm.get("id") == done["turn"])
    assert note.frontmatter["status"] == "done"
    assert len(harness.backend.calls) == 1
