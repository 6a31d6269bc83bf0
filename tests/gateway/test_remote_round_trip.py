"""The core round trip, unchanged, on the remote adapter (a parachute-vault fake via respx)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.backends import EchoBackend, ScriptedBackend
from gateway.engine import INDEX_FIELDS, Gateway
from gateway.settings import Settings
from tests.helpers.harness import Harness
from tests.vault_adapter.remote_fake import FakeParachuteVault, remote_vault


@pytest.fixture
async def remote(tmp_path: Path) -> AsyncIterator[tuple[FakeParachuteVault, Harness]]:
    fake = FakeParachuteVault()
    fake.put(
        "Agents/helper.md",
        "You are helper, a test agent.\n",
        metadata={"name": "helper", "mode": "multi-threaded", "backend": "scripted"},
        tags=["agent/definition"],
    )
    with fake.mocked():
        async with remote_vault(fake, tmp_path / "state", index_fields=INDEX_FIELDS) as vault:
            settings = Settings(fsync=False, port=0, agent_wait_s=0.5, thread_note_turns=2)
            harness = Harness(root=tmp_path / "state", settings=settings, backend=ScriptedBackend())
            gateway = Gateway(
                vault, settings, backends={"scripted": harness.backend, "echo": EchoBackend()}
            )
            harness.gateway = gateway
            harness.events = gateway.bus.subscribe()
            await gateway.start()
            try:
                yield fake, harness
            finally:
                await gateway.stop()


def note(fake: FakeParachuteVault, path: str) -> dict[str, object]:
    record = fake.find(path)
    assert record is not None, f"no note {path} on the server"
    return record


async def test_an_inbound_note_gets_reply_thread_and_stamps_on_a_remote_vault(
    remote: tuple[FakeParachuteVault, Harness],
) -> None:
    fake, harness = remote
    fake.put(
        "Inbox/q.md",
        "How are you?\n",
        metadata={"agent": "helper", "subject": "acme", "sender": "alice"},
    )
    [done] = await harness.done(1, timeout=20)
    assert done["status"] == "done"
    inbound = note(fake, "Inbox/q.md")
    meta = inbound["metadata"]
    assert isinstance(meta, dict)
    assert meta["status"] == "done" and meta["thread"] == "[[Threads/helper/helper--acme]]"
    assert "agent/message" in inbound["tags"]  # type: ignore[operator]
    assert inbound["content"] == "How are you?\n"
    reply = note(fake, done["reply"])
    assert "scripted reply to: How are you?" in str(reply["content"])
    thread = note(fake, "Threads/helper/helper--acme.md")
    tmeta = thread["metadata"]
    assert isinstance(tmeta, dict) and tmeta["turn_count"] == 1

    fake.put(
        "Inbox/r.md",
        "And again?\n",
        metadata={"agent": "helper", "subject": "acme", "sender": "alice"},
    )
    await harness.done(2, timeout=20)
    tmeta = note(fake, "Threads/helper/helper--acme.md")["metadata"]
    assert isinstance(tmeta, dict) and tmeta["turn_count"] == 2
    calls = harness.backend.calls
    assert [c.request.resume for c in calls] == [False, True]


async def test_a_vault_webhook_makes_the_gateway_look_now(
    remote: tuple[FakeParachuteVault, Harness],
) -> None:
    fake, harness = remote
    fake.put("Inbox/w.md", "Quick!\n", metadata={"agent": "helper"})
    assert harness.gateway is not None
    assert await harness.gateway.webhook(["Inbox/w.md"]) == 1
    [done] = await harness.done(1, timeout=20)
    assert done["status"] == "done"


async def test_older_turns_move_to_archive_notes_on_a_remote_vault(
    remote: tuple[FakeParachuteVault, Harness],
) -> None:
    fake, harness = remote
    for n in range(5):
        fake.put(
            f"Inbox/m{n}.md",
            f"message {n}\n",
            metadata={"agent": "helper", "subject": "acme", "sender": "alice"},
        )
        await harness.done(n + 1, timeout=20)
    paths = sorted(r["path"] for r in fake.notes.values() if "/helper--acme/" in r["path"])
    assert paths == [
        "Threads/helper/helper--acme/part-0001",
        "Threads/helper/helper--acme/part-0002",
    ]
    thread = note(fake, "Threads/helper/helper--acme.md")
    meta = thread["metadata"]
    assert isinstance(meta, dict)
    assert meta["earlier_turns"] == "[[Threads/helper/helper--acme/part-0002]]"
    texts = [str(note(fake, p + ".md")["content"]) for p in paths] + [str(thread["content"])]
    said = [line for text in texts for line in text.splitlines() if line.startswith("message ")]
    assert said == [f"message {n}" for n in range(5)]
