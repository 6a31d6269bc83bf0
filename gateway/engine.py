"""The gateway engine: from vault events to queued turns, and back after a restart.

Start-up order matters for "nothing lost, nothing twice": the watcher starts
first (so no change is missed), one scan then reads every note once (loading
definitions and collecting inbound notes), the registry's open turns are
queued again in their original order, and only then are the scanned inbound
notes taken in. All intake goes through one task, so arrival order is the
order notes were seen, and a note is stamped with its message id *before*
the registry records it: a crash in between leaves a stamped note that the
next start records, never an unstamped note with a turn somewhere.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.backends import Backend, default_backends
from gateway.bus import EventBus
from gateway.control import ThreadControl, Verb
from gateway.definitions import (
    DEFINITION_TAG,
    AgentSpec,
    Catalogue,
    DefinitionProblem,
    parse_definition,
)
from gateway.inbound import (
    FINAL_STATUSES,
    MESSAGE_TAG,
    is_gateway_owned,
    is_inbound,
    is_inbound_path,
    read_message,
)
from gateway.intake import Intake
from gateway.jobs import JOB_TAG, Clock, JobRunner
from gateway.pressure import AcceptPressure
from gateway.queues import DrainQueues
from gateway.registry import Registry, ThreadRecord, TurnRecord
from gateway.settings import Settings
from gateway.threads import ThreadAddress, address
from gateway.turns import TurnRunner, reply_path
from vault_adapter import Note, NoteParseError, Vault, VaultError, VaultEvent
from vault_adapter.base import NoteWatcher
from vault_adapter.note import dump_yaml, split_frontmatter
from vault_adapter.scan import NoteSummary

log = logging.getLogger(__name__)

INDEX_FIELDS = ("status", "direction", "agent", "channel", "id")


def _under(path: str, folder: str) -> bool:
    return path.startswith(folder.rstrip("/") + "/")


def _thread_id_of(note_path: str, threads_folder: str) -> str | None:
    """``Threads/<channel>/<leaf>.md`` -> ``<channel>:<leaf>``; None for any other note
    (an archive note in the folder beside a thread note among them)."""
    if not _under(note_path, threads_folder):
        return None
    rest = note_path[len(threads_folder.rstrip("/")) + 1 :].removesuffix(".md")
    channel, _, leaf = rest.partition("/")
    return f"{channel}:{leaf}" if leaf and "/" not in leaf else None


class Gateway:
    """One running gateway over one vault."""

    def __init__(
        self,
        vault: Vault,
        settings: Settings,
        *,
        backends: Mapping[str, Backend] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.vault = vault
        self.settings = settings
        self.backends = dict(backends) if backends is not None else default_backends(settings)
        self.catalogue = Catalogue()
        self.bus = EventBus()
        self.state_dir = vault.root / settings.state_dir
        self.registry: Registry | None = None
        self.runner: TurnRunner | None = None
        self.control: ThreadControl | None = None
        self.jobs: JobRunner | None = None
        self._clock = clock
        self.pressure = AcceptPressure()
        self.queues = DrainQueues(
            settings.max_concurrent_turns,
            self._run_turn,
            self._finish_turn,
            gate=self.pressure.before_turn,
        )
        self.started_at = time.time()
        self._watcher: NoteWatcher | None = None
        self.intake: Intake | None = None
        self._resumed: dict[str, asyncio.Event] = {}
        self._note_paused: set[str] = set()
        self._turn_waiters: dict[str, list[asyncio.Future[dict[str, Any]]]] = {}
        self.bus.add_listener(self._resolve_waiters)
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self.ready = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.registry = await Registry.open(self.state_dir / "registry.db")
        self.runner = TurnRunner(
            self.vault,
            self.registry,
            self.settings,
            self.catalogue,
            self.backends,
            self.bus,
            self.state_dir,
            slot=self.queues.slot,
            resumed=self._resumed,
        )
        self.control = ThreadControl(
            self.registry, self.vault, self.bus, self.runner, self._resumed
        )
        self.intake = Intake(
            self.vault, self.settings, self.registry, self.catalogue, self.queues, self.bus
        )
        self.jobs = JobRunner(
            self.vault,
            self.settings,
            self.registry,
            self.catalogue,
            self.submit,
            self.bus,
            self._clock,
        )
        self._watcher = self.vault.watch()
        await self._watcher.start()
        inbound: list[Note] = []
        job_notes: list[Note] = []
        async for item in self.vault.rescan(self._read_at_start):
            if item.note is not None:
                await self._load_if_definition(item.note)
                self._note_control(item.note, at_start=True)
                if is_inbound(item.note, self.settings) and not self._finished(item.note):
                    inbound.append(item.note)
                if self.jobs.is_job_note(item.note):
                    job_notes.append(item.note)
            elif item.error is not None:
                await self._on_broken(item.error)
        for note in job_notes:
            await self.jobs.load(note)
        await self.jobs.recheck_agents()
        await self.intake.recover()
        self.jobs.start()
        self._tasks = [
            asyncio.create_task(self.intake.run(), name="intake"),
            asyncio.create_task(self._watch_loop(), name="watch"),
            asyncio.create_task(self.intake.reap_waiting(), name="waiting"),
        ]
        inbound.sort(key=lambda n: (str(n.get("received_at") or ""), n.mtime, n.path))
        for note in inbound:
            self.intake.submit(note)
        self.ready.set()

    async def stop(self) -> None:
        """Stop taking work, let running turns finish for a while, keep the rest for later."""
        self._stopping = True
        if self._watcher is not None:
            await self._watcher.stop()
        if self.jobs is not None:
            await self.jobs.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        interrupted = await self.queues.stop(self.settings.shutdown_grace_s)
        if self.registry is not None:
            for turn_id in interrupted:
                await self.registry.interrupt_turn(turn_id)
            if self.runner is not None:
                await self.runner.drain_event_writes()
            await self.registry.close()

    def _finished(self, note: Note) -> bool:
        return read_message(note).is_final

    def _read_at_start(self, note: NoteSummary) -> bool:
        """The notes the start-up scan hands over in full (every note is indexed):
        definitions and jobs anywhere, thread notes (for ``control``), and what may be
        an open inbound message. Never too few; the loop decides on the full note, and
        a field the vault does not index only ever makes this take more."""
        if note.has_tag(DEFINITION_TAG) or note.has_tag(JOB_TAG):
            return True
        if _thread_id_of(note.path, self.settings.threads_folder) is not None:
            return True
        if is_gateway_owned(note.path, self.settings) or note.fields.get("direction") == "outbound":
            return False
        if not (is_inbound_path(note.path, self.settings) or note.has_tag(MESSAGE_TAG)):
            return False
        status = note.fields.get("status")
        return status is None or str(status).strip().lower() not in FINAL_STATUSES

    # -- definitions -----------------------------------------------------------

    async def _load_if_definition(self, note: Note) -> None:
        if not note.has_tag(DEFINITION_TAG):
            if self.catalogue.remove(note.path) is not None:
                self.bus.publish("agent.removed", path=note.path)
                await self._definitions_changed()
            return
        entry = self.catalogue.put(note.path, parse_definition(note))
        await self._stamp_definition(note, entry)
        if isinstance(entry, AgentSpec):
            self.bus.publish("agent.loaded", agent=entry.name)
            if self.intake is not None and self.intake.waiting:
                await self.intake.reroute_waiting()
        await self._definitions_changed()

    async def _definitions_changed(self) -> None:
        for path in self.catalogue.blocked():
            # A clash may be gone: load the refused definition again (and clear its stamp).
            try:
                note = await self.vault.read(path)
            except VaultError:
                continue
            self.catalogue.remove(path)
            entry = self.catalogue.put(path, parse_definition(note))
            await self._stamp_definition(note, entry)
            if isinstance(entry, AgentSpec):
                self.bus.publish("agent.loaded", agent=entry.name)
        if self.jobs is not None and self.ready.is_set():
            await self.jobs.recheck_agents()

    async def _stamp_definition(self, note: Note, entry: AgentSpec | DefinitionProblem) -> None:
        try:
            if isinstance(entry, DefinitionProblem):
                await self.vault.update_fields(note.path, {"status": "error", "error": entry.error})
            elif note.get("status") == "error" or "error" in note.frontmatter:
                await self.vault.update_fields(note.path, {}, remove=("status", "error"))
        except VaultError as exc:
            log.warning("cannot stamp definition %s: %s", note.path, exc)

    async def _on_broken(self, error: NoteParseError) -> None:
        if _under(error.path, self.settings.agents_folder):
            self.catalogue.put(
                error.path,
                DefinitionProblem(error.path, Path(error.path).stem, error.detail),
            )
        elif is_inbound_path(error.path, self.settings):
            await self._quarantine(error)

    async def _quarantine(self, error: NoteParseError) -> None:
        """Refuse an inbox note whose YAML is broken, keeping every byte of it."""
        reason = (
            f"{error.detail}. The original frontmatter is kept in broken_frontmatter: "
            "fix it there and replace these fields with it to send the message again"
        )

        def wrap(text: str) -> str:
            try:
                yaml_text, body = split_frontmatter(text, error.path)
            except NoteParseError:
                yaml_text, body = text, ""
            fields = {"status": "rejected", "error": reason, "broken_frontmatter": yaml_text}
            return f"---\n{dump_yaml(fields)}---\n{body}"

        try:
            await self.vault.rewrite(error.path, wrap)
        except VaultError as exc:
            log.warning("cannot mark broken inbound note %s: %s", error.path, exc)
            return
        if self.registry is not None:
            await self.registry.add_event("rejected", data={"note": error.path, "error": reason})

    # -- events ----------------------------------------------------------------

    async def _watch_loop(self) -> None:
        assert self._watcher is not None
        async for event in self._watcher:
            try:
                await self._on_event(event)
            except Exception:
                log.exception("could not handle change to %s", event.path)

    async def _on_event(self, event: VaultEvent) -> None:
        if event.kind == "rescan":
            async for item in self.vault.rescan():
                if item.note is not None:
                    await self._on_note(item.note)
                elif item.error is not None:
                    await self._on_broken(item.error)
            return
        if event.kind == "deleted":
            if self.catalogue.remove(event.path) is not None:
                self.bus.publish("agent.removed", path=event.path)
                await self._definitions_changed()
            if self.jobs is not None:
                self.jobs.forget(event.path)
            return
        if event.error is not None:
            await self._on_broken(event.error)
            return
        if event.note is not None:
            await self._on_note(event.note)

    async def webhook(self, paths: list[str]) -> int:
        """Notes a remote vault's trigger says changed: look at them now. Returns how many
        could be read; the poller still sees every change if one cannot."""
        poke = getattr(self._watcher, "poke", None)
        if callable(poke):
            poke()
        seen = 0
        for path in paths:
            try:
                note = await self.vault.read(path)
            except VaultError:
                continue
            seen += 1
            await self._on_note(note)
        return seen

    async def _on_note(self, note: Note) -> None:
        await self._load_if_definition(note)
        if is_inbound(note, self.settings) and not self._finished(note):
            self.submit(note)
        if self.jobs is not None:
            await self.jobs.load(note)
        await self._apply_note_control(note)

    # -- control from the vault -----------------------------------------------

    def _note_control(self, note: Note, *, at_start: bool = False) -> str | None:
        """The ``control:`` verb on a thread note, if any (remembering note pauses)."""
        thread_id = _thread_id_of(note.path, self.settings.threads_folder)
        if thread_id is None:
            return None
        value = str(note.get("control") or "").strip().lower()
        if value in ("pause", "paused") and at_start:
            self._note_paused.add(thread_id)
        return value or None

    async def _apply_note_control(self, note: Note) -> None:
        value = self._note_control(note)
        thread_id = _thread_id_of(note.path, self.settings.threads_folder)
        if thread_id is None or self.control is None:
            return
        thread = await self._registry().get_thread(thread_id)
        if thread is None:
            return
        if value in ("pause", "paused"):
            if thread.status != "paused":
                await self.control.apply(thread_id, "pause", source="vault")
            self._note_paused.add(thread_id)
        elif value in ("resume", "running", "terminate", "reset"):
            verb: Verb = "resume" if value in ("resume", "running") else value  # type: ignore[assignment]
            self._note_paused.discard(thread_id)
            await self.control.apply(thread_id, verb, source="vault")
            await self.vault.update_fields(note.path, {}, remove=("control",))
        elif value is None and thread_id in self._note_paused:
            # The person took `control: paused` out again: that undoes their pause.
            self._note_paused.discard(thread_id)
            if thread.status == "paused":
                await self.control.apply(thread_id, "resume", source="vault")

    async def intervene(self, thread_id: str, verb: Verb, *, source: str) -> ThreadRecord:
        assert self.control is not None, "gateway not started"
        return await self.control.apply(thread_id, verb, source=source)

    def submit(self, note: Note, *, fresh: bool = False) -> None:
        """Take in an inbound note (from the watcher, HTTP, the CLI or a job); ``fresh``:
        the gateway wrote it just now with a message id it made just now."""
        assert self.intake is not None, "gateway not started"
        self.intake.submit(note, fresh=fresh)

    # -- running turns ----------------------------------------------------------

    async def _run_turn(self, turn_id: str) -> None:
        assert self.runner is not None
        await self.runner.run(turn_id)

    async def _finish_turn(self, turn_id: str) -> None:
        assert self.runner is not None
        await self.runner.finish(turn_id)

    def _registry(self) -> Registry:
        assert self.registry is not None, "gateway not started"
        return self.registry

    # -- queries used by the CLI and HTTP ---------------------------------------

    def waiter(self, turn_id: str) -> asyncio.Future[dict[str, Any]]:
        """A future resolved with the turn's final event (done or rejected)."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._turn_waiters.setdefault(turn_id, []).append(future)
        return future

    def forget_waiter(self, turn_id: str, future: asyncio.Future[dict[str, Any]]) -> None:
        waiting = self._turn_waiters.get(turn_id, [])
        if future in waiting:
            waiting.remove(future)
        if not waiting:
            self._turn_waiters.pop(turn_id, None)

    def _resolve_waiters(self, event: dict[str, Any]) -> None:
        if event["type"] not in ("turn.done", "turn.rejected"):
            return
        for future in self._turn_waiters.pop(str(event.get("turn")), []):
            if not future.done():
                future.set_result(event)

    def address_for(
        self, spec: AgentSpec, channel: str | None, subject: str | None, message_id: str
    ) -> ThreadAddress:
        """Where a message will land (before the gateway routes it)."""
        chosen = channel if channel in spec.channels else spec.channels[0]
        return address(spec, chosen, subject, self.settings.threads_folder, message_id)

    def reply_path(self, turn: TurnRecord) -> str:
        return reply_path(self.settings, turn)

    def status(self) -> dict[str, Any]:
        return {
            "uptime_s": round(time.time() - self.started_at, 3),
            "agents": len(self.catalogue.agents()),
            "broken_agents": [
                {"path": p.path, "error": p.error} for p in self.catalogue.problems()
            ],
            "queued": self.queues.depth(),
            "running": len(self.queues.running),
            "waiting": len(self.intake.waiting) if self.intake else 0,
        }
