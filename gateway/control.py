"""Interventions on a thread: pause, resume, terminate, reset.

The same four verbs reach a thread from the CLI, the HTTP API and the vault
(``control:`` in the thread note). Each is recorded as an ``intervention``
event, changes the thread's status in the registry and on its note, and is
announced on the event bus.

- pause: no new turn starts; the queue is kept; a running turn finishes.
- resume: the thread takes turns again (after a pause, a terminate or an
  exhausted budget, which pauses it).
- terminate: the running turn is stopped now (its processes killed, a failure
  reply written) and the thread is marked terminated; queued turns wait for a
  resume or a reset.
- reset: the next turn starts a fresh session; the thread becomes idle.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from gateway.bus import EventBus
from gateway.errors import UnknownThread
from gateway.registry import Registry, ThreadRecord
from gateway.threads import new_session_id
from gateway.turns import TurnRunner
from vault_adapter import NoteNotFound, Vault, VaultError

Verb = Literal["pause", "resume", "terminate", "reset"]
VERBS: tuple[Verb, ...] = ("pause", "resume", "terminate", "reset")


class ThreadControl:
    def __init__(
        self,
        registry: Registry,
        vault: Vault,
        bus: EventBus,
        runner: TurnRunner,
        resumed: dict[str, asyncio.Event],
    ) -> None:
        self.registry = registry
        self.vault = vault
        self.bus = bus
        self.runner = runner
        self.resumed = resumed

    async def apply(self, thread_id: str, verb: Verb, *, source: str) -> ThreadRecord:
        thread = await self.registry.get_thread(thread_id)
        if thread is None:
            raise UnknownThread(thread_id)
        fields: dict[str, Any] = {}
        if verb == "pause":
            fields = {"status": "paused"}
        elif verb == "resume":
            fields = {"status": "idle", "last_error": None}
        elif verb == "terminate":
            fields = {"status": "terminated"}
        else:
            fields = {"status": "idle", "session_id": new_session_id(), "session_started": 0}
        updated = await self.registry.update_thread(thread_id, **fields)
        assert updated is not None
        stop = self.runner.stops.get(thread_id)
        if verb == "terminate" and stop is not None:
            stop.set()
        if verb in ("resume", "reset"):
            self.resumed.setdefault(thread_id, asyncio.Event()).set()
        await self.registry.add_event(
            "intervention", thread_id=thread_id, data={"verb": verb, "source": source}
        )
        note_fields: dict[str, Any] = {"status": updated.status}
        if verb == "reset":
            note_fields["session"] = updated.session_id
        try:
            await self.vault.update_fields(updated.note, note_fields)
        except (NoteNotFound, VaultError):
            pass  # no note yet (no turn finished), or one a person broke: the registry holds it
        self.bus.publish("thread.status", thread=thread_id, status=updated.status, verb=verb)
        return updated
