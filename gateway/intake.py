"""Intake: inbound notes become queued turns, exactly once, in the order they were seen.

One task takes notes in (from the watcher, the start-up scan, HTTP and the
job runner) in the order they were seen. Up to ``_WINDOW`` notes are worked on
at once (read, checked, stamped), but each is queued only after every note
seen before it has been queued or set aside, so arrival order is still queue
order; two copies of one note are never worked on at once. Records go to the
registry in the same order, but a note does not wait for the one before it to
be committed, only to be handed to the registry's writer: records that arrive
while a commit is being made share the next one (2,000 posts from 100 HTTP
clients made about 165 transactions, not 2,000). Notes the gateway has just
written (HTTP posts) and handed over one after another go as one group when
each needs nothing but its record (written stamped, routable, unchanged
since): one registry write for the group, then each queued in order; a group
holding any other note goes note by note. A note is stamped with its message
id *before* the registry records it: a crash in between leaves a stamped note
that the next start records under the same id, never a turn without its note.
Messages for an agent that is not defined yet wait (``agent_wait_s``) and are
routed when the definition loads; at start, the registry's unfinished turns
are queued again, oldest first.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from gateway.bus import EventBus
from gateway.definitions import AgentSpec, Catalogue
from gateway.inbound import (
    MESSAGE_TAG,
    InboundMessage,
    is_inbound,
    new_message_id,
    read_message,
)
from gateway.queues import RETRY_FIRST_S, RETRY_MAX_S, DrainQueues
from gateway.registry import Admission, Registry, TurnRecord, now_iso
from gateway.settings import Settings
from gateway.threads import ThreadAddress, address, new_session_id
from vault_adapter import (
    Note,
    NoteNotFound,
    NoteParseError,
    Vault,
    VaultError,
    VaultPathError,
)

log = logging.getLogger(__name__)

_WINDOW = 16
"""Notes (or groups of fresh notes) taken in at once."""

_TOGETHER = 64
"""The most fresh notes taken in as one group."""


class _Place:
    """A note's place in arrival order: ``recorded`` once its record has its place
    among the registry's writes (or it needs none), ``done`` once it is queued or
    set aside."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.recorded: asyncio.Future[None] = loop.create_future()
        self.done: asyncio.Future[None] = loop.create_future()

    def mark_recorded(self) -> None:
        if not self.recorded.done():
            self.recorded.set_result(None)


@dataclass(frozen=True, slots=True)
class _Taking:
    """One item being taken in: its place, the place before it, copies of its notes
    still being taken in (it waits for them), and the room it holds."""

    place: _Place
    before: _Place | None
    earlier: list[asyncio.Future[None]]
    room: asyncio.Semaphore


class _InOrder:
    """Keeps one note behind the note seen before it: its record goes among the
    registry's writes only after that note's did (so records commit in arrival
    order, several in one transaction when they come quickly), and it is queued
    only after that note was queued or set aside."""

    def __init__(self, before: _Place | None, own: _Place) -> None:
        self._before = before
        self._own = own

    async def before_record(self) -> None:
        if self._before is not None and not self._before.recorded.done():
            await asyncio.shield(self._before.recorded)

    def recorded(self) -> None:
        self._own.mark_recorded()

    async def before_queueing(self) -> None:
        if self._before is not None and not self._before.done.done():
            await asyncio.shield(self._before.done)


class Intake:
    def __init__(
        self,
        vault: Vault,
        settings: Settings,
        registry: Registry,
        catalogue: Catalogue,
        queues: DrainQueues,
        bus: EventBus,
    ) -> None:
        self.vault = vault
        self.settings = settings
        self.registry = registry
        self.catalogue = catalogue
        self.queues = queues
        self.bus = bus
        self.waiting: dict[str, float] = {}
        """Message id -> deadline (monotonic) of messages waiting for their agent."""
        self._queue: asyncio.Queue[Note | list[Note] | None] = asyncio.Queue()
        self._together: list[Note] | None = None
        """Fresh notes handed over one after another and not taken in yet: they go as
        one group, in the queue's place of the first (see :meth:`submit`)."""
        self._retries: dict[str, int] = {}
        self._fresh: set[str] = set()
        """Notes the gateway has just written with a message id it has just made: no
        turn can have that id yet, so the first copy taken in skips looking for one."""
        self._busy: dict[str, asyncio.Future[None]] = {}
        """Note path -> done-future of the copy being taken in now."""

    async def run(self) -> None:
        room = asyncio.Semaphore(_WINDOW)
        before: _Place | None = None
        working: set[asyncio.Task[None]] = set()

        def start(take: Callable[[_Taking], Coroutine[Any, Any, None]], paths: list[str]) -> None:
            """Start taking in the notes at ``paths``, behind the item started before."""
            nonlocal before
            place = _Place()
            # Marked busy now, not once the task first runs: the next item, taken from
            # the queue before that maybe, must see these notes as being taken in.
            earlier = [copy for path in paths if (copy := self._busy.get(path)) is not None]
            for path in paths:
                self._busy[path] = place.done
            task = asyncio.create_task(take(_Taking(place, before, earlier, room)))
            working.add(task)
            task.add_done_callback(working.discard)
            before = place

        try:
            while True:
                item = await self._queue.get()
                if item is None:
                    break
                await room.acquire()
                if not isinstance(item, list):
                    start(functools.partial(self._take, item), [item.path])
                    continue
                if item is self._together:
                    self._together = None  # notes handed over from now on start a new one
                try:
                    together = self._plan_together(item)
                except Exception:
                    log.exception("could not check %d new messages together", len(item))
                    together = None
                if together is not None:
                    start(functools.partial(self._take_together, together), [n.path for n in item])
                    continue
                for i, note in enumerate(item):  # not simple: each note on its own, in order
                    if i:
                        await room.acquire()
                    start(functools.partial(self._take, note), [note.path])
            if working:
                await asyncio.gather(*working, return_exceptions=True)
        finally:
            for task in working:
                task.cancel()

    async def _take(self, note: Note, taking: _Taking) -> None:
        """Take one note in, in its place behind the one before it."""
        try:
            for copy in taking.earlier:
                # The same note, seen again while its first copy is still being taken in.
                await asyncio.shield(copy)
            await self._intake(note, _InOrder(taking.before, taking.place))
        except (NoteNotFound, NoteParseError, VaultPathError) as exc:
            log.warning("could not take in %s: %s", note.path, exc)
        except Exception as exc:
            self._again_later(note, exc)
        else:
            self._retries.pop(note.path, None)
        finally:
            await self._leave(taking, [note.path])

    async def _take_together(self, together: list[tuple[Note, Admission]], taking: _Taking) -> None:
        """Take in fresh notes that were handed over together and need nothing but
        their records (see :meth:`_plan_together`, which found no copy of them being
        taken in): one write for all, then each queued in turn."""
        before = taking.before
        for note, _ in together:
            self._fresh.discard(note.path)  # a retry looks its turn up
        queued = 0
        try:
            if before is not None and not before.recorded.done():
                await asyncio.shield(before.recorded)
            recording = self.registry.admit([admission for _, admission in together])
            taking.place.mark_recorded()
            await recording
            if before is not None and not before.done.done():
                await asyncio.shield(before.done)
            for _, admission in together:
                self._queued(admission)
                queued += 1
        except Exception as exc:
            for note, _ in together[queued:]:
                self._again_later(note, exc)
        else:
            for note, _ in together:
                self._retries.pop(note.path, None)
        finally:
            await self._leave(taking, [note.path for note, _ in together])

    def _again_later(self, note: Note, exc: Exception) -> None:
        """The note could not be stamped or recorded (a full disk, a registry that
        cannot write): it is not lost; look at it again a bit later (handed over as
        any note is, so fresh notes handed over after it stay behind it)."""
        delay = min(RETRY_FIRST_S * 2 ** self._retries.get(note.path, 0), RETRY_MAX_S)
        self._retries[note.path] = self._retries.get(note.path, 0) + 1
        log.warning("could not take in %s (%s); trying again in %.1f s", note.path, exc, delay)
        asyncio.get_running_loop().call_later(delay, self.submit, note)

    async def _leave(self, taking: _Taking, paths: list[str]) -> None:
        """Done with what was taken in (the notes at ``paths``): done only once the one
        before it is."""
        taking.room.release()
        place = taking.place
        place.mark_recorded()  # set aside, or recorded some other way
        if taking.before is not None and not taking.before.done.done():
            await asyncio.shield(taking.before.done)
        place.done.set_result(None)
        for path in paths:
            if self._busy.get(path) is place.done:
                del self._busy[path]

    def submit(self, note: Note, *, fresh: bool = False) -> None:
        """Take in an inbound note written by someone other than the watcher (HTTP, CLI);
        ``fresh``: written just now, with a message id made just now."""
        if not fresh:
            self._together = None  # fresh notes handed over later queue behind this one
            self._queue.put_nowait(note)
            return
        self._fresh.add(note.path)
        if self._together is None or len(self._together) >= _TOGETHER:
            self._together = [note]
            self._queue.put_nowait(self._together)
        else:
            self._together.append(note)

    def _plan_together(self, notes: list[Note]) -> list[tuple[Note, Admission]] | None:
        """Each of ``notes`` with its record, if every one is a fresh note that needs
        nothing but that (written stamped and routable, unchanged since, not being
        taken in already); None if any needs more: then each goes on its own."""
        together: list[tuple[Note, Admission]] = []
        paths: set[str] = set()
        for note in notes:
            if (
                note.path not in self._fresh
                or note.path in self._busy
                or note.path in paths
                or self.vault.index.hash_of(note.path) not in (None, note.content_hash)
            ):
                return None
            paths.add(note.path)
            msg = read_message(note)
            received_at = note.get("received_at")
            if msg.id is None or msg.is_draft or msg.is_final or not msg.text or not received_at:
                return None
            destination = self._destination(msg)
            if not isinstance(destination, tuple):
                return None
            spec, channel = destination
            where = address(spec, channel, msg.subject, self.settings.threads_folder, msg.id)
            if self._arrival_fields(msg, msg.id, str(received_at), where.link) is not None:
                return None
            together.append((note, self._admission(msg, msg.id, str(received_at), spec, where)))
        return together

    async def _intake(self, note: Note, order: _InOrder | None = None) -> None:
        if self.vault.index.hash_of(note.path) not in (None, note.content_hash):
            # The note changed since this copy was read (we may have stamped it
            # already): decide on what is on disk now, never on a stale copy.
            try:
                note = await self.vault.read(note.path)
            except VaultError:
                return
            if not is_inbound(note, self.settings):
                return
        msg = read_message(note)
        if msg.is_draft or (not note.frontmatter and not note.body.strip()):
            return  # a draft, or a note just created and still empty: wait for text
        if msg.id is None:
            open_turn, last = await self.registry.turns_for_note(note.path)
            if open_turn is not None:
                # A save from a stale editor buffer dropped our stamp: put it back.
                await self.vault.update_fields(
                    note.path, {"id": open_turn.id, "status": open_turn.status}
                )
                return
            if last is not None and last.message is not None and last.message == msg.text:
                # The same text, answered already: an editor saved a copy from before
                # our stamps. Put them back rather than answer it twice.
                await self._known_message(msg, last)
                return
        elif note.path in self._fresh:
            self._fresh.discard(note.path)  # this copy only: a later one is looked up
        else:
            known = await self.registry.get_turn(msg.id)
            if known is not None:
                await self._known_message(msg, known)
                return
        if msg.is_final:
            return
        turn_id = msg.id or new_message_id()
        received_at = str(note.get("received_at") or now_iso())
        if not msg.text:
            await self._reject(
                msg,
                turn_id,
                received_at,
                "empty message: write the text below the frontmatter, then remove "
                "'status' and 'error' to send it",
            )
            return
        await self._route(msg, turn_id, received_at, order)

    async def _known_message(self, msg: InboundMessage, turn: TurnRecord) -> None:
        if turn.finalized and not msg.is_final:
            # An editor saved an old copy over a finished note: put every stamp back.
            fields: dict[str, Any] = {
                "id": turn.id,
                "status": turn.status,
                "direction": "inbound",
            }
            if turn.received_at:
                fields["received_at"] = turn.received_at
            if turn.thread_id is not None:
                thread = await self.registry.get_thread(turn.thread_id)
                if thread is not None:
                    fields["thread"] = f"[[{thread.note.removesuffix('.md')}]]"
            if turn.reply_note:
                fields["reply"] = f"[[{turn.reply_note.removesuffix('.md')}]]"
            if turn.finished_at:
                fields["finished_at"] = turn.finished_at
            if turn.error:
                fields["error"] = turn.error
            await self.vault.update_fields(msg.note.path, fields)
        elif not turn.finalized and turn.id not in self.queues and turn.id not in self.waiting:
            await self.requeue(turn)

    def _destination(self, msg: InboundMessage) -> tuple[AgentSpec, str] | str | None:
        """Where ``msg`` goes: its agent and channel; or why it cannot go anywhere;
        None if the agent it names is not defined (yet)."""
        if not msg.agent and not msg.channel:
            names = ", ".join(s.name for s in self.catalogue.agents()) or "none defined yet"
            return f"no agent: add 'agent: <name>' or 'channel: <channel>' (agents: {names})"
        spec = (
            self.catalogue.by_name(msg.agent)
            if msg.agent
            else self.catalogue.by_channel(msg.channel or "")
        )
        if spec is None:
            problem = self.catalogue.problem_named(msg.agent or "")
            if problem is None:
                return None
            return (
                f"agent {problem.name!r} has a broken definition ({problem.path}): {problem.error}"
            )
        if not spec.enabled:
            return f"agent {spec.name!r} is disabled ({spec.path})"
        if msg.channel and msg.agent and msg.channel not in spec.channels:
            return (
                f"channel {msg.channel!r} is not one of agent {spec.name!r}'s channels "
                f"({', '.join(spec.channels)})"
            )
        return spec, msg.channel if msg.channel in spec.channels else spec.channels[0]

    async def _route(
        self,
        msg: InboundMessage,
        turn_id: str,
        received_at: str,
        order: _InOrder | None = None,
    ) -> None:
        destination = self._destination(msg)
        if isinstance(destination, str):
            await self._reject(msg, turn_id, received_at, destination)
            return
        if destination is None:
            await self._stamp_arrival(msg, turn_id, received_at, None)
            await self.registry.add_turn(turn_id, msg.note.path, received_at, status="waiting")
            await self.registry.wait_turn(
                turn_id, agent=msg.agent, channel=msg.channel, subject=msg.subject
            )
            # A re-route after another definition loaded keeps the first deadline.
            self.waiting.setdefault(turn_id, time.monotonic() + self.settings.agent_wait_s)
            self.bus.publish("turn.waiting", turn=turn_id, agent=msg.agent, channel=msg.channel)
            return
        spec, channel = destination
        where = address(spec, channel, msg.subject, self.settings.threads_folder, turn_id)
        await self._stamp_arrival(msg, turn_id, received_at, where.link)
        if order is not None:
            # Recorded in arrival order too: a restart queues open turns in the
            # registry's order.
            await order.before_record()
        admission = self._admission(msg, turn_id, received_at, spec, where)
        recording = self.registry.admit([admission])
        if order is not None:
            order.recorded()
            await recording
            await order.before_queueing()
        else:
            await recording
        self._queued(admission)

    @staticmethod
    def _admission(
        msg: InboundMessage, turn_id: str, received_at: str, spec: AgentSpec, where: ThreadAddress
    ) -> Admission:
        return Admission(
            turn_id=turn_id,
            note=msg.note.path,
            received_at=received_at,
            thread_id=where.thread_id,
            agent=spec.name,
            channel=where.channel,
            subject=msg.subject,
            mode=spec.mode,
            thread_note=where.note_path,
            sender=msg.sender,
            drain_key=where.drain_key,
            session_id=new_session_id(),
        )

    def _queued(self, admission: Admission) -> None:
        self.waiting.pop(admission.turn_id, None)
        self.queues.put(admission.drain_key, admission.turn_id)
        self.bus.publish(
            "turn.queued", turn=admission.turn_id, thread=admission.thread_id, agent=admission.agent
        )

    async def _stamp_arrival(
        self, msg: InboundMessage, turn_id: str, received_at: str, thread_link: str | None
    ) -> None:
        fields = self._arrival_fields(msg, turn_id, received_at, thread_link)
        if fields is not None:
            await self.vault.update_fields(msg.note.path, fields)

    @staticmethod
    def _arrival_fields(
        msg: InboundMessage, turn_id: str, received_at: str, thread_link: str | None
    ) -> dict[str, Any] | None:
        """The stamps an arrived message gets; None if its note has them already."""
        tags = list(msg.note.tags)
        if not msg.note.has_tag(MESSAGE_TAG):
            tags.append(MESSAGE_TAG)
        fields: dict[str, Any] = {
            "tags": tags,
            "direction": "inbound",
            "id": turn_id,
            "status": "queued",
            "received_at": received_at,
        }
        if thread_link:
            fields["thread"] = thread_link
        current = msg.note.frontmatter
        if all(key in current and current[key] == value for key, value in fields.items()):
            return None  # written already stamped (HTTP, the CLI, a job): nothing to write
        return fields

    async def _reject(
        self, msg: InboundMessage, turn_id: str, received_at: str, reason: str
    ) -> None:
        await self._stamp_arrival(msg, turn_id, received_at, None)
        await self.vault.update_fields(
            msg.note.path, {"status": "rejected", "error": reason, "finished_at": now_iso()}
        )
        await self.registry.add_turn(turn_id, msg.note.path, received_at, status="rejected")
        await self.registry.set_turn_status(turn_id, "rejected", error=reason)
        await self.registry.add_event("rejected", turn_id=turn_id, data={"reason": reason})
        self.waiting.pop(turn_id, None)
        self.bus.publish("turn.rejected", turn=turn_id, note=msg.note.path, error=reason)

    # -- waiting for definitions ----------------------------------------------

    async def reroute_waiting(self) -> None:
        for turn_id in list(self.waiting):
            turn = await self.registry.get_turn(turn_id)
            if turn is None:
                self.waiting.pop(turn_id, None)
                continue
            await self.requeue(turn)

    async def reap_waiting(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, max(self.settings.agent_wait_s / 4, 0.05)))
            now = time.monotonic()
            for turn_id, deadline in list(self.waiting.items()):
                if deadline > now:
                    continue
                self.waiting.pop(turn_id, None)
                turn = await self.registry.get_turn(turn_id)
                if turn is None or turn.status != "waiting":
                    continue
                try:
                    note = await self.vault.read(turn.note)
                except VaultError:
                    continue
                target = turn.agent or turn.channel
                kind = "agent" if turn.agent else "channel"
                names = ", ".join(s.name for s in self.catalogue.agents()) or "none"
                await self._reject(
                    read_message(note),
                    turn_id,
                    turn.received_at,
                    f"no {kind} named {target!r} (waited {self.settings.agent_wait_s:g} s for "
                    f"its definition; agents: {names})",
                )

    # -- recovery --------------------------------------------------------------

    async def recover(self) -> None:
        """Queue again every turn the registry says is not finished, oldest first."""
        for turn in await self.registry.open_turns():
            await self.requeue(turn)

    async def requeue(self, turn: TurnRecord) -> None:
        if turn.status == "rejected":
            return
        if turn.drain_key is not None and turn.thread_id is not None:
            if turn.status == "running":
                await self.registry.add_event(
                    "interrupted", thread_id=turn.thread_id, turn_id=turn.id
                )
            self.queues.put(turn.drain_key, turn.id)
            return
        # Recorded but never routed (a crash between the two, or waiting for
        # an agent): route it again from its note.
        try:
            note = await self.vault.read(turn.note)
        except VaultError as exc:
            await self.registry.set_turn_status(turn.id, "rejected", error=str(exc))
            return
        await self._route(read_message(note), turn.id, turn.received_at)
