from __future__ import annotations

import asyncio
import itertools

from gateway.engine import Gateway
from gateway.inbound import new_message_id
from gateway.send import write_inbound
from tests.helpers.harness import Harness, definition, eventually, message
from vault_adapter import Note


def overlapping(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


async def test_same_subject_turns_never_overlap_and_finish_in_arrival_order(
    harness: Harness,
) -> None:
    harness.write("Agents/slow.md", definition("slow", extra="script: {delay_s: 0.2}\n"))
    await harness.start()
    for i in range(4):
        harness.write(f"Inbox/{i}.md", message("slow", f"message {i}", subject="acme"))
        # Each note must be seen before the next is written, so arrival order is defined.
        await harness.wait_count(("turn.queued",), i + 1)
    await harness.done(4)
    calls = harness.backend.calls
    texts = [c.request.message.rsplit(">\n", 1)[1].split("\n")[0] for c in calls]
    assert texts == [f"message {i}" for i in range(4)]
    spans = [(c.started, c.ended or 0.0) for c in calls]
    for a, b in itertools.pairwise(spans):
        assert a[1] <= b[0], "turns of one thread overlapped"


async def test_different_subjects_run_concurrently_up_to_the_global_limit(
    harness: Harness,
) -> None:
    gate = asyncio.Event()
    harness.backend.gate = gate
    harness.write("Agents/par.md", definition("par"))
    gateway = await harness.start(max_concurrent_turns=4)
    for i in range(8):
        harness.write(f"Inbox/{i}.md", message("par", f"m{i}", subject=f"subject-{i}"))

    await harness.wait_count(("turn.started",), 4)
    await harness.wait_count(("turn.queued",), 8)
    # The four started turns are inside their backend, held by the gate.
    await eventually(lambda: len(harness.backend.calls) == 4)
    assert len(gateway.queues.running) == 4
    assert gateway.queues.depth() == 8
    gate.set()
    await harness.done(8)
    spans = [(c.started, c.ended or 0.0) for c in harness.backend.calls]
    assert len(spans) == 8
    most = max(sum(1 for other in spans if overlapping(span, other)) for span in spans)
    assert most >= 2, "subjects did not overlap"
    assert gateway.queues.peak == 4


async def test_single_threaded_agent_serialises_every_subject(harness: Harness) -> None:
    harness.write(
        "Agents/solo.md",
        definition("solo", mode="single-threaded", extra="script: {delay_s: 0.05}\n"),
    )
    await harness.start()
    for i in range(3):
        harness.write(f"Inbox/{i}.md", message("solo", f"m{i}", subject=f"s{i}"))
    await harness.done(3)
    spans = sorted((c.started, c.ended or 0.0) for c in harness.backend.calls)
    for a, b in itertools.pairwise(spans):
        assert a[1] <= b[0]
    assert {c.request.thread_id for c in harness.backend.calls} == {"solo:solo"}


async def _posts(harness: Harness, count: int) -> tuple[Gateway, list[Note], asyncio.Event]:
    """A started gateway whose backend waits for the returned gate, and ``count``
    messages written as POST /api/messages writes them (texts m00, m01, ...: stamped,
    with their thread's link), not handed over yet."""
    gate = asyncio.Event()
    harness.backend.gate = gate
    harness.write("Agents/burst.md", definition("burst"))
    gateway = await harness.start()
    spec = gateway.catalogue.by_name("burst")
    assert spec is not None
    notes = []
    for i in range(count):
        message_id = new_message_id()
        where = gateway.address_for(spec, None, "one", message_id)
        notes.append(
            await write_inbound(
                gateway.vault,
                gateway.settings,
                text=f"m{i:02d}",
                agent="burst",
                subject="one",
                message_id=message_id,
                thread_link=where.link,
            )
        )
    return gateway, notes, gate


async def _run_in_arrival_order(
    harness: Harness, gateway: Gateway, notes: list[Note], gate: asyncio.Event
) -> None:
    """Each note was recorded, queued and run once, in the order handed over."""
    await harness.wait_count(("turn.queued",), len(notes))
    ids = [note.frontmatter["id"] for note in notes]
    assert [t.id for t in await gateway.registry.open_turns()] == ids
    gate.set()
    await harness.done(len(notes))
    ran = [c.request.message.rsplit(">\n", 1)[1].split("\n")[0] for c in harness.backend.calls]
    assert ran == [f"m{i:02d}" for i in range(len(notes))]
    assert harness.count(("turn.queued",)) == len(notes)


async def test_a_burst_of_posts_is_recorded_once_and_run_in_arrival_order(
    harness: Harness,
) -> None:
    """Posts handed over one after another (an HTTP burst) are recorded in one write
    and queued together, in arrival order, and run in that order."""
    gateway, notes, gate = await _posts(harness, 40)
    commits: list[int] = []
    gateway.bus.add_listener(
        lambda e: (
            commits.append(gateway.registry._writes.batches) if e["type"] == "turn.queued" else None
        )
    )
    for note in notes:  # as POST /api/messages hands its notes over, one after another
        gateway.submit(note, fresh=True)
    await _run_in_arrival_order(harness, gateway, notes, gate)
    # Every one was queued after the same registry commit: one write for the group.
    assert len(commits) == 40 and len(set(commits)) == 1


async def test_a_burst_with_a_note_edited_meanwhile_is_taken_in_note_by_note(
    harness: Harness,
) -> None:
    """A group of posts holding a note that changed before it was taken in goes one
    note at a time: the changed note is read again, and nothing is lost or reordered."""
    gateway, notes, gate = await _posts(harness, 6)
    # Someone adds a field to the third note before the gateway takes the posts in.
    await gateway.vault.update_fields(notes[2].path, {"note": "edited"})
    for note in notes:
        gateway.submit(note, fresh=True)
    await _run_in_arrival_order(harness, gateway, notes, gate)
    assert harness.note(notes[2].path).frontmatter["note"] == "edited"


async def test_a_post_handed_over_twice_is_taken_in_once(harness: Harness) -> None:
    """A copy of a post handed over just before the post itself (a remote vault's
    webhook echoing the gateway's own write) and the post are never worked on at
    once: the turn is recorded, queued and run once."""
    gateway, notes, gate = await _posts(harness, 4)
    gateway.submit(notes[0])  # the echo, as any changed note is handed over
    for note in notes:
        gateway.submit(note, fresh=True)
    await _run_in_arrival_order(harness, gateway, notes, gate)
