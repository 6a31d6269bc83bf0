"""Scheduled jobs: ``agent/job`` notes that send their body to an agent on a cron schedule.

A job note (``Jobs/<id>.md``) names an ``agent``, a 5-field ``cron`` in a
``tz`` (default UTC), an optional ``subject`` and ``enabled``; its body is
the message. At each slot the runner writes an inbound message with
``sender: runner:<id>`` and hands it to the gateway, like any other message,
so a job's thread continues across fires and every fire gets exactly one reply.

When each job last fired is kept in the registry. After a restart, a job whose
slot passed while the gateway was down fires once (for the latest missed
slot), not once per missed slot; a job seen for the first time waits for its
next slot. The job note gets ``last_run_at``, ``last_status`` and
``next_run_at`` stamped; a broken job (bad cron, unknown time zone, unknown
agent) gets ``status: error`` and an ``error`` and never stops the runner.

Cron expressions are parsed by croniter (maintained under pallets-eco, used
widely, handles time zones and DST through aware datetimes) rather than by
code of ours. Time comes from a :class:`Clock`, so tests can move it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from gateway.bus import EventBus
from gateway.definitions import Catalogue
from gateway.registry import Registry
from gateway.send import write_inbound
from gateway.settings import Settings
from vault_adapter import Note, Vault, VaultError, slug

log = logging.getLogger(__name__)

JOB_TAG = "agent/job"


class Clock(Protocol):
    def now(self) -> datetime: ...

    async def sleep_until(self, when: datetime, wake: asyncio.Event) -> None:
        """Return at ``when`` or as soon as ``wake`` is set, whichever comes first."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep_until(self, when: datetime, wake: asyncio.Event) -> None:
        # Sleep in bounded steps so a wall-clock jump (suspend, NTP) is noticed.
        seconds = min(max((when - self.now()).total_seconds(), 0.0), 30.0)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await wake.wait()


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    path: str
    agent: str
    cron: str
    tz: str
    subject: str | None
    enabled: bool
    text: str

    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    def next_after(self, moment: datetime) -> datetime:
        local = moment.astimezone(self.zone())
        nxt: datetime = croniter(self.cron, local).get_next(datetime)
        return nxt.astimezone(UTC)

    def latest_at_or_before(self, moment: datetime) -> datetime:
        """The last slot at or before ``moment``."""
        local = (moment + timedelta(microseconds=1)).astimezone(self.zone())
        prev: datetime = croniter(self.cron, local).get_prev(datetime)
        return prev.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class JobProblem:
    id: str
    path: str
    error: str


def parse_job(note: Note) -> Job | JobProblem:
    fm = note.frontmatter
    job_id = slug(note.stem)
    agent = str(fm.get("agent") or "").strip()
    cron = " ".join(str(fm.get("cron") or "").split())
    tz = str(fm.get("tz") or "UTC").strip()
    subject = fm.get("subject")
    enabled = fm.get("enabled", True)
    if not agent:
        return JobProblem(job_id, note.path, "no agent: add 'agent: <name>'")
    if len(cron.split()) != 5 or not croniter.is_valid(cron):
        return JobProblem(job_id, note.path, f"cron {cron!r} is not a 5-field cron expression")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        return JobProblem(job_id, note.path, f"unknown time zone {tz!r} (try 'Europe/Paris')")
    if not isinstance(enabled, bool):
        return JobProblem(job_id, note.path, "enabled must be true or false")
    text = note.body.strip()
    if not text:
        return JobProblem(job_id, note.path, "the message (the note's body) is empty")
    return Job(
        id=job_id,
        path=note.path,
        agent=agent,
        cron=cron,
        tz=tz,
        subject=str(subject).strip() if subject else None,
        enabled=enabled,
        text=text,
    )


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


class JobRunner:
    """Fires jobs on time; lives inside ``vaultgate serve``."""

    def __init__(
        self,
        vault: Vault,
        settings: Settings,
        registry: Registry,
        catalogue: Catalogue,
        submit: Callable[[Note], None],
        bus: EventBus,
        clock: Clock | None = None,
    ) -> None:
        self.vault = vault
        self.settings = settings
        self.registry = registry
        self.catalogue = catalogue
        self.submit = submit
        self.bus = bus
        self.clock: Clock = clock or SystemClock()
        self.jobs: dict[str, Job | JobProblem] = {}
        self._next: dict[str, datetime] = {}
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._fired: dict[str, str] = {}
        """Message id -> job id, for fires whose turn has not finished yet."""
        bus.add_listener(self._on_event)

    def is_job_note(self, note: Note) -> bool:
        return note.has_tag(JOB_TAG)

    async def load(self, note: Note) -> None:
        """Take in a new or edited job note (or forget it when it lost its tag)."""
        if not self.is_job_note(note):
            self.forget(note.path)
            return
        entry = parse_job(note)
        previous = self.jobs.get(entry.id)
        if previous is not None and previous.path != note.path:
            entry = JobProblem(
                entry.id, note.path, f"job id {entry.id!r} is used by {previous.path}"
            )
        self.jobs[entry.id] = entry
        self._next.pop(entry.id, None)
        if isinstance(entry, Job) and entry.enabled:
            await self._schedule(entry)
        await self._stamp_problem(note, entry)
        self._changed.set()

    def forget(self, path: str) -> None:
        for job_id, entry in list(self.jobs.items()):
            if entry.path == path:
                del self.jobs[job_id]
                self._next.pop(job_id, None)
                self._changed.set()

    async def _schedule(self, job: Job) -> None:
        state = await self.registry.job_state(job.id)
        now = self.clock.now()
        last = _parse_iso(state.last_slot) if state else None
        if last is None:
            # New job: its first fire is its next slot; past slots are not owed.
            await self.registry.save_job_state(job.id)
            self._next[job.id] = job.next_after(now)
        else:
            owed = job.next_after(last)
            # A slot (or many) passed while we were down: owe exactly one fire.
            self._next[job.id] = owed if owed > now else job.latest_at_or_before(now)
        await self._stamp(job, {"next_run_at": _iso(self._next[job.id])})

    async def _stamp_problem(self, note: Note, entry: Job | JobProblem) -> None:
        try:
            if isinstance(entry, JobProblem):
                await self.vault.update_fields(note.path, {"status": "error", "error": entry.error})
            elif note.get("status") == "error" or "error" in note.frontmatter:
                await self.vault.update_fields(note.path, {}, remove=("status", "error"))
        except VaultError as exc:
            log.warning("cannot stamp job %s: %s", note.path, exc)

    async def _stamp(self, job: Job, fields: dict[str, object]) -> None:
        try:
            await self.vault.update_fields(job.path, fields)
        except VaultError as exc:
            log.warning("cannot stamp job %s: %s", job.path, exc)

    # -- running --------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="jobs")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    def _on_event(self, event: dict[str, object]) -> None:
        """Turn a fired job's ``last_status`` into its turn's outcome when it ends."""
        if event["type"] not in ("turn.done", "turn.rejected"):
            return
        job_id = self._fired.pop(str(event.get("turn")), None)
        entry = self.jobs.get(job_id) if job_id else None
        if job_id is None or not isinstance(entry, Job):
            return
        status = str(event.get("status") or "rejected")
        task = asyncio.create_task(self._record_outcome(entry, status))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _record_outcome(self, job: Job, status: str) -> None:
        await self.registry.save_job_state(job.id, last_status=status)
        await self._stamp(job, {"last_status": status})

    async def recheck_agents(self) -> None:
        """After definitions change: flag jobs whose agent is missing, clear the others."""
        for entry in list(self.jobs.values()):
            if not isinstance(entry, Job):
                continue
            try:
                note = await self.vault.read(entry.path)
            except VaultError:
                continue
            missing = self.catalogue.by_name(entry.agent) is None
            problem = JobProblem(entry.id, entry.path, f"no agent named {entry.agent!r}")
            await self._stamp_problem(note, problem if missing else entry)

    async def _loop(self) -> None:
        while True:
            self._changed.clear()
            now = self.clock.now()
            for job_id, when in sorted(self._next.items(), key=lambda item: item[1]):
                if when <= now:
                    await self._fire_scheduled(job_id, when)
            upcoming = min(self._next.values(), default=None)
            if upcoming is None:
                await self._changed.wait()
            elif upcoming > self.clock.now():
                await self.clock.sleep_until(upcoming, self._changed)

    async def _fire_scheduled(self, job_id: str, slot: datetime) -> None:
        entry = self.jobs.get(job_id)
        if not isinstance(entry, Job):
            self._next.pop(job_id, None)
            return
        try:
            await self.fire(entry, slot=slot)
        except Exception:
            log.exception("job %s failed to fire", job_id)
        self._next[job_id] = entry.next_after(max(slot, self.clock.now()))
        await self._stamp(entry, {"next_run_at": _iso(self._next[job_id])})

    async def fire(self, job: Job, *, slot: datetime | None = None) -> str | None:
        """Send the job's message now; the message id, or None when it cannot go."""
        moment = slot or self.clock.now()
        spec = self.catalogue.by_name(job.agent)
        if spec is None:
            error = f"no agent named {job.agent!r}"
            await self.registry.save_job_state(
                job.id,
                last_slot=_iso(moment),
                last_run_at=_iso(self.clock.now()),
                last_status="error",
            )
            await self._stamp(
                job, {"last_run_at": _iso(self.clock.now()), "last_status": f"error: {error}"}
            )
            self.bus.publish("job.error", job=job.id, error=error)
            return None
        note = await write_inbound(
            self.vault,
            self.settings,
            text=job.text,
            agent=spec.name,
            subject=job.subject,
            sender=f"runner:{job.id}",
            source="jobs",
        )
        message_id = str(note.get("id"))
        await self.registry.save_job_state(
            job.id,
            last_slot=_iso(moment),
            last_run_at=_iso(self.clock.now()),
            last_status="fired",
            last_message=message_id,
        )
        await self._stamp(job, {"last_run_at": _iso(self.clock.now()), "last_status": "fired"})
        self._fired[message_id] = job.id
        self.submit(note)
        self.bus.publish("job.fired", job=job.id, turn=message_id)
        return message_id

    async def describe(self) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        for job_id, entry in sorted(self.jobs.items()):
            state = await self.registry.job_state(job_id)
            base: dict[str, object] = {"id": job_id, "path": entry.path}
            if isinstance(entry, JobProblem):
                out.append({**base, "status": "error", "error": entry.error})
                continue
            out.append(
                {
                    **base,
                    "agent": entry.agent,
                    "cron": entry.cron,
                    "tz": entry.tz,
                    "subject": entry.subject,
                    "enabled": entry.enabled,
                    "status": "enabled" if entry.enabled else "disabled",
                    "next_run_at": _iso(self._next[job_id]) if job_id in self._next else None,
                    "last_run_at": state.last_run_at if state else None,
                    "last_status": state.last_status if state else None,
                    "last_message": state.last_message if state else None,
                    "error": None,
                }
            )
        return out
