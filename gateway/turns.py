"""Running one turn and writing what it produced.

A turn has two halves. *Execute*: wait while the thread is paused, read the
inbound note, check the thread's budget, compose the prompt; then, holding
one of the gateway's slots (:meth:`DrainQueues.slot`), mark the turn running
and run the backend within the duration limit; then record the outcome in the
registry (which rolls it into the thread in the same transaction). *Finish*:
write the reply note, upsert the thread note, stamp the inbound note, mark
the turn finalized. Every finishing write is idempotent (the reply is
created only if absent; the thread's section is appended only if its marker
is absent; stamps are plain field sets), so a crash anywhere is repaired by
running the half that did not complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from pathlib import Path
from typing import Any

from gateway import limits as limit_rules
from gateway.backends import Backend, InterimEvent, TurnRequest, TurnResult
from gateway.bus import EventBus
from gateway.definitions import AgentSpec, Catalogue
from gateway.errors import RegistryError
from gateway.inbound import InboundMessage, read_message
from gateway.prompt import system_prompt, user_message
from gateway.registry import Registry, ThreadRecord, TurnOutcome, TurnRecord, now_iso
from gateway.settings import Settings
from gateway.threads import (
    archive_note,
    archive_part,
    archive_path,
    conversation_section,
    history_block,
    new_session_id,
    older_turns,
    thread_fields,
    thread_heading,
    turn_marker,
)
from gateway.workspace import prepare, workspace_for
from vault_adapter import Note, NoteNotFound, NoteParseError, Vault, VaultError, slug
from vault_adapter.fields import edit_fields
from vault_adapter.folder import NoteExists

log = logging.getLogger(__name__)

IN_HAND_PER_SLOT = 16
"""Turns in hand at once, per slot (``max_concurrent_turns``): read, composed,
running or being recorded. The rest wait in their queues as ids. Without a
bound, a burst of messages to thousands of threads had every one of them read
and composed, each waiting for a slot with its note and prompt in memory."""


class _Room:
    """One turn's place among those in hand; given back while its thread is paused."""

    def __init__(self, places: asyncio.Semaphore) -> None:
        self._places = places
        self._held = False

    async def take(self) -> None:
        await self._places.acquire()
        self._held = True

    def give_back(self) -> None:
        if self._held:
            self._held = False
            self._places.release()


async def _cancel(task: asyncio.Task[TurnResult]) -> None:
    """Cancel a backend run and wait until it has cleaned up (its processes are gone)."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def reply_path(settings: Settings, turn: TurnRecord) -> str:
    return f"{settings.messages_folder}/{turn.channel}/{turn.received_at[:10]}/{turn.id}.md"


def _link(path: str) -> str:
    return f"[[{path.removesuffix('.md')}]]"


class TurnRunner:
    def __init__(
        self,
        vault: Vault,
        registry: Registry,
        settings: Settings,
        catalogue: Catalogue,
        backends: Mapping[str, Backend],
        bus: EventBus,
        state_dir: Path,
        *,
        slot: Callable[[str], AbstractAsyncContextManager[None]],
        resumed: dict[str, asyncio.Event],
    ) -> None:
        self.vault = vault
        self.registry = registry
        self.settings = settings
        self.catalogue = catalogue
        self.backends = backends
        self.bus = bus
        self.state_dir = state_dir
        self.stops: dict[str, asyncio.Event] = {}
        """Per thread with a turn under way: set it to terminate that turn."""
        self._event_writes: set[asyncio.Task[int]] = set()
        self.slot = slot
        """Held while a backend runs: at most ``max_concurrent_turns`` at once."""
        self.resumed = resumed
        """Per thread: set when an operator resumes (or resets) it."""
        self._recorded: dict[str, tuple[TurnRecord, ThreadRecord | None]] = {}
        """Turns just recorded by :meth:`run` (with their threads), handed to :meth:`finish`."""
        self._in_hand = asyncio.Semaphore(IN_HAND_PER_SLOT * settings.max_concurrent_turns)

    async def run(self, turn_id: str) -> None:
        """Run the turn's backend and record its outcome (unless already recorded)."""
        room = _Room(self._in_hand)
        await room.take()
        try:
            turn, thread = await self.registry.turn_with_thread(turn_id)
            if turn is None or turn.finalized or turn.has_result:
                return
            thread = await self._unpaused(turn, thread, room)
            outcome = await self._execute(turn, thread)
            self._recorded[turn_id] = await self._record(turn_id, outcome)
        finally:
            room.give_back()

    async def _unpaused(
        self, turn: TurnRecord, thread: ThreadRecord | None, room: _Room
    ) -> ThreadRecord | None:
        """Wait while the turn's thread is paused or terminated (without its place in
        hand, which another thread's turn can use); the thread as it then is."""
        while thread is not None and turn.thread_id is not None:
            if thread.status not in ("paused", "terminated"):
                break
            event = self.resumed.setdefault(thread.id, asyncio.Event())
            event.clear()
            room.give_back()
            await event.wait()
            await room.take()
            thread = await self.registry.get_thread(turn.thread_id)
        return thread

    async def finish(self, turn_id: str) -> None:
        """Write what a recorded turn produced: reply, thread note, stamps (idempotent)."""
        turn, thread = self._recorded.pop(turn_id, None) or (None, None)
        if turn is None:
            turn = await self.registry.get_turn(turn_id)
        if turn is None or turn.finalized or not turn.has_result:
            return
        try:
            await self._finish(turn, thread)
        except (VaultError, OSError) as exc:
            # A full disk, a permission problem: the result is safe in the registry;
            # the queue keeps the turn and retries, and only the notes are written then.
            with contextlib.suppress(RegistryError):
                await self._event(turn, "warning", {"finish_failed": str(exc)})
            raise

    async def _record(
        self, turn_id: str, outcome: TurnOutcome
    ) -> tuple[TurnRecord, ThreadRecord | None]:
        """Record a finished turn's outcome, retrying while the registry cannot write.

        The outcome exists only in memory until this succeeds; giving up would mean
        running the turn (and paying for it) again, so this keeps trying."""
        delay = 0.5
        while True:
            try:
                return await self.registry.record_outcome(turn_id, outcome)
            except RegistryError as exc:
                log.warning(
                    "cannot record turn %s yet (%s); retrying in %.1f s", turn_id, exc, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    # -- execute --------------------------------------------------------------

    async def _execute(self, turn: TurnRecord, thread: ThreadRecord | None) -> TurnOutcome:
        assert turn.thread_id is not None and turn.agent is not None
        spec = self.catalogue.by_name(turn.agent)
        if spec is None or thread is None:
            return TurnOutcome("error", "", error=f"agent {turn.agent!r} is no longer defined")
        # The note and the subject's dossier are read side by side (the subject is
        # the one the turn was routed by).
        read, dossier = await asyncio.gather(
            self.vault.read(turn.note), self._dossier(turn.subject), return_exceptions=True
        )
        if isinstance(dossier, BaseException):
            raise dossier
        if isinstance(read, NoteNotFound):
            return TurnOutcome("error", "", error="the inbound note was deleted before its turn")
        if isinstance(read, NoteParseError):
            return TurnOutcome("error", "", error=f"the inbound note became unreadable: {read}")
        if isinstance(read, BaseException):
            raise read
        message = read_message(read)
        if not message.text:
            return TurnOutcome("error", "", error="the message is empty")
        exhausted = limit_rules.budget_exhausted(self.settings, spec, thread)
        if exhausted:
            await self.registry.update_thread(thread.id, status="paused", last_error=exhausted)
            self.bus.publish("thread.status", thread=thread.id, status="paused", reason=exhausted)
            await self._event(turn, "budget", {"reason": exhausted})
            return TurnOutcome(
                "error", "", error=f"{exhausted}; the thread is paused", message=message.text
            )
        backend = self.backends.get(spec.backend)
        if backend is None:
            return TurnOutcome(
                "error",
                "",
                error=f"backend {spec.backend!r} is not available in this gateway",
                message=message.text,
            )

        # Registered before the turn is announced, so a terminate that comes at any
        # moment from here on reaches it; one that came just before is honoured too.
        stop = asyncio.Event()
        self.stops[thread.id] = stop
        try:
            return await self._start_and_run(turn, thread, spec, message, dossier, backend, stop)
        finally:
            if self.stops.get(thread.id) is stop:
                del self.stops[thread.id]

    async def _start_and_run(
        self,
        turn: TurnRecord,
        thread: ThreadRecord,
        spec: AgentSpec,
        message: InboundMessage,
        dossier: str | None,
        backend: Backend,
        stop: asyncio.Event,
    ) -> TurnOutcome:
        prompt = system_prompt(spec.role, dossier)
        workspace = None
        if backend.uses_workspace:
            workspace = workspace_for(self.state_dir, thread.id)
            await asyncio.to_thread(prepare, workspace, prompt, spec.mcp_servers)
        limits = limit_rules.resolve(self.settings, spec, thread)
        session_id = thread.session_id or new_session_id()

        def compose(resumed: bool, history: str = "") -> str:
            text = user_message(
                message.text,
                sender=message.sender,
                resumed=resumed,
                thread_id=thread.id,
                subject=message.subject,
                note=turn.note,
            )
            return f"{history}\n\n{text}" if history else text

        request = TurnRequest(
            thread_id=thread.id,
            agent=spec.name,
            system_prompt=prompt,
            message=compose(thread.session_started),
            session_id=session_id,
            resume=thread.session_started,
            workspace=workspace,
            limits=limits,
            model=spec.model,
            tools=tuple(spec.tools) if spec.tools is not None else None,
            permission_mode=spec.permission_mode,
            sender=message.sender,
            engine=spec.sandbox.engine,
            network=spec.sandbox.network,
            options={"script": spec.script, "egress": list(spec.sandbox.egress)},
        )
        notice = None
        async with self.slot(turn.id):
            await self._begin(turn, thread, spec, message, stop)
            result = await self._run_backend(backend, request, turn, stop)
            if result.session_lost:
                # The session is gone (a wiped workspace, a CLI that forgot it): start a
                # fresh one once, seeded with the thread's recent history, and say so.
                history = history_block(
                    await self.registry.thread_turns(thread.id, limit=self.settings.history_turns)
                )
                fresh = new_session_id()
                await self.registry.update_thread(thread.id, session_id=fresh, session_started=0)
                notice = (
                    f"The previous session ({session_id}) was lost; this turn started a fresh "
                    f"session seeded with the last {self.settings.history_turns} turns."
                )
                await self._event(turn, "session_restarted", {"old": session_id, "new": fresh})
                request = replace(
                    request, session_id=fresh, resume=False, message=compose(False, history)
                )
                result = await self._run_backend(backend, request, turn, stop)
        outcome = TurnOutcome(
            "done",
            result.text,
            input_tokens=result.usage.input_tokens,
            output_tokens=result.usage.output_tokens,
            cost_usd=result.cost_usd,
            session_id=result.session_id or request.session_id,
            model=result.model or spec.model,
            message=message.text,
            notice=notice,
        )
        if result.is_error:
            error = result.error or "the backend reported an error"
            return replace(outcome, status="error", error=error, model=result.model)
        return outcome

    async def _begin(
        self,
        turn: TurnRecord,
        thread: ThreadRecord,
        spec: AgentSpec,
        message: InboundMessage,
        stop: asyncio.Event,
    ) -> None:
        """Mark the turn running, in the registry and (at the same time) on its note."""
        stamping = asyncio.ensure_future(self._stamp(turn, {"status": "running"}, best_effort=True))
        try:
            current = await self.registry.begin_turn(turn.id, thread.id, message.text)
        finally:
            await stamping
        if current.status == "terminated":
            stop.set()
        self.bus.publish("turn.started", turn=turn.id, thread=thread.id, agent=spec.name)

    async def _run_backend(
        self, backend: Backend, request: TurnRequest, turn: TurnRecord, stop: asyncio.Event
    ) -> TurnResult:
        def sink(event: InterimEvent) -> None:
            self.bus.publish(
                f"turn.{event.kind}", turn=turn.id, thread=turn.thread_id, **event.data
            )
            if event.kind in ("tool_use", "tool_result", "retry", "warning", "egress_refused"):
                task = asyncio.create_task(self._event(turn, event.kind, event.data))
                self._event_writes.add(task)
                task.add_done_callback(self._event_writes.discard)

        run = asyncio.create_task(backend.run(request, sink), name=f"backend:{turn.id}")
        stopped = asyncio.create_task(stop.wait())
        try:
            async with asyncio.timeout(request.limits.duration_s):
                await asyncio.wait({run, stopped}, return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            await _cancel(run)
            return TurnResult(
                text="",
                is_error=True,
                error=f"stopped: the turn ran past its duration limit of "
                f"{request.limits.duration_s:g} s (limits.duration_s)",
                session_id=request.session_id,
            )
        except asyncio.CancelledError:
            await _cancel(run)  # a shutdown: the backend cleans up before we go
            raise
        finally:
            stopped.cancel()
        if run.done():
            return run.result()
        await _cancel(run)
        return TurnResult(
            text="",
            is_error=True,
            error="terminated by an operator",
            session_id=request.session_id,
        )

    async def _dossier(self, subject: str | None) -> str | None:
        if not subject:
            return None
        folder = self.settings.subjects_folder
        candidates = [f"{folder}/{slug(subject)}.md"]
        if "/" not in subject and "\\" not in subject and not subject.startswith("."):
            exact = f"{folder}/{subject}.md"
            if exact != candidates[0]:
                candidates.insert(0, exact)
        for path in candidates:
            try:
                return (await self.vault.read(path)).body
            except (NoteNotFound, VaultError):
                continue
        return None

    # -- finish ---------------------------------------------------------------

    async def _finish(self, turn: TurnRecord, thread: ThreadRecord | None) -> None:
        assert turn.thread_id is not None
        failed = turn.status == "error"
        if thread is None:
            thread = await self.registry.get_thread(turn.thread_id)
        if thread is not None and thread.status == "working":
            # Recorded by an older version, which left the status to this step.
            thread = await self.registry.swap_thread_status(
                thread.id, "error" if failed else "idle", only_if="working"
            )
        if thread is None:
            raise VaultError(f"thread {turn.thread_id} vanished from the registry")
        spec = self.catalogue.by_name(thread.agent)
        reply = reply_path(self.settings, turn)
        fields: dict[str, Any] = {
            "status": turn.status,
            "thread": _link(thread.note),
            "reply": _link(reply),
            "finished_at": turn.finished_at,
        }
        if failed:
            fields["error"] = turn.error
        # Three different notes, each write idempotent: written side by side, and the
        # turn is finalized only once all three went through.
        results = await asyncio.gather(
            self._write_reply(turn, reply, failed, thread.note),
            self._upsert_thread(thread, spec, turn, failed),
            self._stamp(turn, fields),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        await self.registry.finalize_turn(turn.id, reply)
        self.bus.publish(
            "turn.done",
            turn=turn.id,
            thread=thread.id,
            status=turn.status,
            reply=reply,
            error=turn.error,
        )

    async def _write_reply(
        self, turn: TurnRecord, path: str, failed: bool, thread_note: str
    ) -> None:
        body = turn.reply_text or ""
        if failed:
            body = f"**This turn failed:** {turn.error}\n\n{body}".rstrip() + "\n"
        fields = {
            "tags": ["agent/message"],
            "direction": "outbound",
            "id": turn.id,
            "agent": turn.agent,
            "channel": turn.channel,
            "subject": turn.subject,
            "in_reply_to": _link(turn.note),
            "thread": _link(thread_note),
            "status": turn.status,
            "ts": turn.finished_at,
        }
        if failed:
            fields["error"] = turn.error
        try:
            await self.vault.create(path, fields, body if body.endswith("\n") else body + "\n")
        except NoteExists:
            pass  # written before a crash: exactly one reply per message

    async def _upsert_thread(
        self, thread: ThreadRecord, spec: AgentSpec | None, turn: TurnRecord, failed: bool
    ) -> None:
        fields = thread_fields(thread, spec)
        section = conversation_section(
            turn_id=turn.id,
            received_at=turn.received_at,
            sender=turn.sender or "someone",
            message=turn.message or "",
            finished_at=turn.finished_at or now_iso(),
            agent=thread.agent,
            reply=(f"This turn failed: {turn.error}\n\n" if failed else "")
            + (turn.reply_text or ""),
            failed=failed,
            notice=turn.notice,
        )
        marker = turn_marker(turn.id)
        tags = fields.pop("tags")
        try:
            if thread.turn_count <= 1:
                # Most likely the first turn: create the note (it may exist after all).
                try:
                    await self.vault.create(
                        thread.note, {"tags": tags, **fields}, thread_heading(thread) + section
                    )
                    return
                except NoteExists:
                    pass
            try:
                note = await self.vault.update_fields(
                    thread.note, fields, append_once=(marker, section)
                )
            except NoteNotFound:
                # Deleted by someone, or never written: start it again, whole.
                await self.vault.create(
                    thread.note, {"tags": tags, **fields}, thread_heading(thread) + section
                )
                return
        except NoteParseError as exc:
            # Someone broke the thread note's YAML: the registry still has
            # everything; say so rather than overwrite their text.
            await self._event(turn, "warning", {"thread_note_unreadable": str(exc)})
            return
        await self._archive_older_turns(thread, note, turn)

    async def _archive_older_turns(
        self, thread: ThreadRecord, note: Note, turn: TurnRecord
    ) -> None:
        """Move the thread note's oldest turns to a new archive note when it holds more
        than it should (see :mod:`gateway.threads`).

        The archive part is created first (never over an existing note), then the
        thread note is cut, only if those turns are still in it word for word, and
        linked to the part, in one check-then-swap. A crash in between leaves a
        part holding turns that are still in the thread note; the next move finds
        it holding exactly what it would write and cuts the thread note. If the
        turns changed meanwhile (a person edited them), that part is left as it is
        and the move writes the next one: a turn may then be in two parts, never
        in none. A move that fails is said in the thread's events and tried again
        after the next turn; the turn itself is done either way."""
        settings = self.settings
        moved = older_turns(note.body, settings.thread_note_turns, settings.max_note_bytes // 4)
        if moved is None:
            return
        try:
            link = _link(await self._write_part(thread, moved))

            def cut(text: str) -> str:
                edited = edit_fields(text, {"earlier_turns": link}, path=thread.note)
                if moved not in edited.body:
                    raise VaultError(
                        f"{thread.note} changed while its older turns were being archived; "
                        "they move after the next turn"
                    )
                head = edited.text[: len(edited.text) - len(edited.body)]
                return head + edited.body.replace(moved, "", 1)

            if await self.vault.rewrite(thread.note, cut) is None:
                raise VaultError(f"{thread.note} did not read back after its older turns moved")
        except (VaultError, OSError) as exc:
            await self._event(turn, "warning", {"thread_note_archive": str(exc)})

    async def _write_part(self, thread: ThreadRecord, moved: str) -> str:
        """Write ``moved`` as the thread's next archive part and return its path. The
        last part is taken as it is when it already holds exactly these turns (a move
        that stopped before the thread note was cut); no part is ever written over."""
        folder = thread.note.removesuffix(".md")
        found = await self.vault.list_notes(folder, recursive=False)
        parts = sorted((n, path) for path in found if (n := archive_part(path)) is not None)
        if parts:
            number, path = parts[-1]
            try:
                if (await self.vault.read(path)).body == archive_note(thread, number, moved)[1]:
                    return path
            except VaultError:
                pass  # gone, or broken by someone: left alone
        number = parts[-1][0] + 1 if parts else 1
        path = archive_path(thread.note, number)
        earlier = _link(parts[-1][1]) if parts else None
        fields, body = archive_note(thread, number, moved, earlier)
        await self.vault.create(path, fields, body)
        return path

    async def _stamp(
        self, turn: TurnRecord, fields: dict[str, Any], *, best_effort: bool = False
    ) -> None:
        try:
            await self.vault.update_fields(turn.note, fields)
        except NoteNotFound:
            pass
        except NoteParseError as exc:
            await self._event(turn, "warning", {"inbound_note_unreadable": str(exc)})
        except VaultError as exc:
            if not best_effort:
                raise
            # Only a progress mark ("running"): the final stamp will be retried.
            log.warning("could not mark %s running: %s", turn.note, exc)

    async def _event(self, turn: TurnRecord, kind: str, data: dict[str, Any]) -> int:
        return await self.registry.add_event(
            kind, thread_id=turn.thread_id, turn_id=turn.id, data=data
        )

    async def drain_event_writes(self) -> None:
        if self._event_writes:
            await asyncio.gather(*self._event_writes, return_exceptions=True)
