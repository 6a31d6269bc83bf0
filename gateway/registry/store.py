"""The thread registry: a SQLite process table of threads, turns and events.

It is what makes restarts safe. Every inbound message is one ``turns`` row,
keyed by the message id, from arrival to the moment its notes are written
(``finalized``); a turn's outcome and usage are recorded, and the thread's
aggregates rolled up, in one transaction, before any note is written, so
notes can always be (re)written from the registry after a crash and the
aggregates can never count a turn twice.

SQLite runs in WAL mode off the event loop: all writes go through one
thread with its own connection, in arrival order; reads use a second thread
and connection, which WAL lets run beside a write. ``synchronous=NORMAL``
keeps every committed transaction across a killed process (the OS still has
it); a power cut may lose the last few, which the start-up scan re-derives
from the notes.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

from gateway.errors import RegistryError
from gateway.registry.migrations import migrate
from vault_adapter.batches import GroupCommit
from vault_adapter.workers import Workers

T = TypeVar("T")

TurnStatus = Literal["waiting", "queued", "running", "done", "error", "rejected"]
ThreadStatus = Literal["idle", "working", "paused", "error", "terminated"]
FINAL_TURN = ("done", "error", "rejected")


_SECOND: tuple[int, str] = (0, "")


def now_iso() -> str:
    """UTC now to the millisecond, ``2026-11-21T07:00:00.123Z`` (every event has one:
    the formatted second is kept for the calls within it)."""
    global _SECOND
    now = time.time()
    second = int(now)
    if second != _SECOND[0]:
        _SECOND = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{_SECOND[1]}.{int((now - second) * 1000):03d}Z"


@dataclass(frozen=True, slots=True)
class ThreadRecord:
    id: str
    agent: str
    channel: str
    subject: str | None
    mode: str
    note: str
    status: str
    session_id: str | None
    session_started: bool
    turn_count: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    model: str | None
    last_error: str | None
    created_at: str
    updated_at: str
    last_turn_at: str | None


@dataclass(frozen=True, slots=True)
class TurnRecord:
    seq: int
    id: str
    note: str
    status: str
    agent: str | None
    channel: str | None
    subject: str | None
    sender: str | None
    message: str | None
    thread_id: str | None
    drain_key: str | None
    received_at: str
    started_at: str | None
    finished_at: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float
    session_id: str | None
    reply_text: str | None
    reply_note: str | None
    error: str | None
    notice: str | None
    finalized: bool

    @property
    def has_result(self) -> bool:
        return self.status in ("done", "error")


@dataclass(frozen=True, slots=True)
class EventRecord:
    id: int
    ts: str
    thread_id: str | None
    turn_id: str | None
    kind: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class JobState:
    id: str
    last_run_at: str | None
    last_slot: str | None
    next_run_at: str | None
    last_status: str | None
    last_message: str | None
    updated_at: str


@dataclass(frozen=True, slots=True)
class Admission:
    """An arrived message, routed: its turn and the thread it goes to."""

    turn_id: str
    note: str
    received_at: str
    thread_id: str
    agent: str
    channel: str
    subject: str | None
    mode: str
    thread_note: str
    sender: str | None
    drain_key: str
    session_id: str
    """The thread's first session id, used only if the thread is new."""


@dataclass(frozen=True, slots=True)
class TurnOutcome:
    """What a finished turn produced, as the registry records it."""

    status: Literal["done", "error"]
    reply_text: str
    error: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    session_id: str | None = None
    model: str | None = None
    message: str | None = None
    """The inbound text as the turn saw it (kept for listings and history)."""
    notice: str | None = None
    """Something the thread should say about this turn (a session that was lost)."""


_WriteFn = Callable[[sqlite3.Connection], Any]


def _registry_error(exc: Exception) -> Exception:
    if isinstance(exc, sqlite3.Error):
        return RegistryError(f"{type(exc).__name__}: {exc}")
    return exc


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA foreign_keys=ON")
    return db


def _thread(row: sqlite3.Row) -> ThreadRecord:
    data = dict(row)
    data["session_started"] = bool(data["session_started"])
    return ThreadRecord(**data)


def _turn(row: sqlite3.Row) -> TurnRecord:
    data = dict(row)
    data["finalized"] = bool(data["finalized"])
    return TurnRecord(**data)


def _thread_of(db: sqlite3.Connection, turn: TurnRecord) -> ThreadRecord | None:
    if turn.thread_id is None:
        return None
    row = db.execute("SELECT * FROM threads WHERE id = ?", (turn.thread_id,)).fetchone()
    return _thread(row) if row else None


class Registry:
    """Async access to the registry database; create with :meth:`open`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer = Workers(1, "registry-write")
        self._writes: GroupCommit[_WriteFn, Any] = GroupCommit(self._write_many, self._writer)
        self._reader = Workers(1, "registry-read")
        self._wdb: sqlite3.Connection | None = None
        self._rdb: sqlite3.Connection | None = None

    @classmethod
    async def open(cls, path: Path) -> Registry:
        registry = cls(path)
        await registry._start()
        return registry

    async def _start(self) -> None:
        def setup() -> None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._wdb = _connect(self.path)
            migrate(self._wdb)

        await self._run(self._writer, setup)

        def setup_reader() -> None:
            self._rdb = _connect(self.path)

        await self._run(self._reader, setup_reader)

    async def close(self) -> None:
        for workers, attr in ((self._writer, "_wdb"), (self._reader, "_rdb")):
            db = getattr(self, attr)
            if db is not None:
                await self._run(workers, db.close)
                setattr(self, attr, None)
            workers.close()

    async def _run(self, workers: Workers, fn: Callable[[], T]) -> T:
        try:
            return await workers.run(fn)
        except sqlite3.Error as exc:
            raise _registry_error(exc) from exc

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn`` in a transaction of its own (a savepoint), committed with the writes
        that came in while the last commit was made (see :meth:`_write_many`)."""
        return cast(T, await self._writes.submit(fn))

    def _write_many(self, fns: Sequence[_WriteFn]) -> list[Any]:
        """On the writer thread: each of ``fns`` under a savepoint of its own (one that
        fails is rolled back alone and fails alone), all in one transaction.

        Each transaction alone cost the writer thread four waits for the interpreter
        lock (one a statement), a WAL append of every page it touched and its file
        locks; messages taken in side by side now share them."""
        assert self._wdb is not None, "registry is closed"
        db = self._wdb
        results: list[Any] = []
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                for fn in fns:
                    db.execute("SAVEPOINT one")
                    try:
                        results.append(fn(db))
                    except Exception as exc:
                        db.execute("ROLLBACK TO one")
                        results.append(_registry_error(exc))
                    db.execute("RELEASE one")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            # The transaction itself failed (a full disk at COMMIT): every write fails.
            return [_registry_error(exc)] * len(fns)
        return results

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def job() -> T:
            assert self._rdb is not None, "registry is closed"
            return fn(self._rdb)

        return await self._run(self._reader, job)

    # -- turns ----------------------------------------------------------------

    async def add_turn(
        self, turn_id: str, note: str, received_at: str, status: TurnStatus = "queued"
    ) -> tuple[TurnRecord, bool]:
        """Record an arrived message; ``(record, created)``, the existing row if known."""

        def op(db: sqlite3.Connection) -> tuple[TurnRecord, bool]:
            cur = db.execute(
                "INSERT OR IGNORE INTO turns (id, note, status, received_at) VALUES (?, ?, ?, ?)",
                (turn_id, note, status, received_at),
            )
            row = db.execute("SELECT * FROM turns WHERE id = ?", (turn_id,)).fetchone()
            return _turn(row), cur.rowcount == 1

        return await self._write(op)

    def admit(self, admissions: Sequence[Admission]) -> asyncio.Future[None]:
        """Record arrived, routed messages and make sure their threads exist, in one
        savepoint. Not a coroutine: when this returns, the records have their place
        among the registry's writes (what is admitted one call after another commits
        in that order, possibly together); await the future for the commit."""
        turns = [(a.turn_id, a.note, "queued", a.received_at) for a in admissions]
        threads = [
            (a.thread_id, a.agent, a.channel, a.subject, a.mode, a.thread_note, a.session_id)
            for a in admissions
        ]
        routes = [
            (a.agent, a.channel, a.subject, a.sender, a.thread_id, a.drain_key, a.turn_id)
            for a in admissions
        ]

        def op(db: sqlite3.Connection) -> None:
            stamp = now_iso()
            db.executemany(
                "INSERT OR IGNORE INTO turns (id, note, status, received_at) VALUES (?, ?, ?, ?)",
                turns,
            )
            db.executemany(
                "INSERT OR IGNORE INTO threads (id, agent, channel, subject, mode, note,"
                " session_id, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(*thread, stamp, stamp) for thread in threads],
            )
            db.executemany(
                "UPDATE turns SET agent=?, channel=?, subject=?, sender=?, thread_id=?,"
                " drain_key=?, status='queued' WHERE id=?",
                routes,
            )

        return self._writes.enqueue(op)

    async def get_turn(self, turn_id: str) -> TurnRecord | None:
        row = await self._read(
            lambda db: db.execute("SELECT * FROM turns WHERE id = ?", (turn_id,)).fetchone()
        )
        return _turn(row) if row else None

    async def route_turn(
        self,
        turn_id: str,
        *,
        agent: str,
        channel: str,
        subject: str | None,
        sender: str | None,
        thread_id: str,
        drain_key: str,
    ) -> None:
        await self._write(
            lambda db: db.execute(
                "UPDATE turns SET agent=?, channel=?, subject=?, sender=?, thread_id=?,"
                " drain_key=?, status='queued' WHERE id=?",
                (agent, channel, subject, sender, thread_id, drain_key, turn_id),
            )
        )

    async def wait_turn(
        self, turn_id: str, *, agent: str | None, channel: str | None, subject: str | None
    ) -> None:
        """Park a message whose agent is not defined (yet)."""
        await self._write(
            lambda db: db.execute(
                "UPDATE turns SET status='waiting', agent=?, channel=?, subject=? WHERE id=?",
                (agent, channel, subject, turn_id),
            )
        )

    async def turn_with_thread(self, turn_id: str) -> tuple[TurnRecord | None, ThreadRecord | None]:
        """A turn and its thread, read together (one round trip)."""

        def op(db: sqlite3.Connection) -> tuple[TurnRecord | None, ThreadRecord | None]:
            row = db.execute("SELECT * FROM turns WHERE id = ?", (turn_id,)).fetchone()
            if row is None:
                return None, None
            turn = _turn(row)
            return turn, _thread_of(db, turn)

        return await self._read(op)

    async def turns_for_note(self, note: str) -> tuple[TurnRecord | None, TurnRecord | None]:
        """``(open, last)``: the note's newest unfinalized turn and its newest turn."""

        def op(db: sqlite3.Connection) -> tuple[TurnRecord | None, TurnRecord | None]:
            open_row = db.execute(
                "SELECT * FROM turns WHERE note = ? AND finalized = 0 ORDER BY seq DESC LIMIT 1",
                (note,),
            ).fetchone()
            last_row = db.execute(
                "SELECT * FROM turns WHERE note = ? ORDER BY seq DESC LIMIT 1", (note,)
            ).fetchone()
            return (_turn(open_row) if open_row else None, _turn(last_row) if last_row else None)

        return await self._read(op)

    async def set_turn_status(
        self,
        turn_id: str,
        status: TurnStatus,
        *,
        error: str | None = None,
        message: str | None = None,
    ) -> None:
        started = now_iso() if status == "running" else None
        finalized = 1 if status == "rejected" else 0
        await self._write(
            lambda db: db.execute(
                "UPDATE turns SET status=?, error=COALESCE(?, error), message=COALESCE(?, message),"
                " started_at=COALESCE(?, started_at), finalized=MAX(finalized, ?) WHERE id=?",
                (status, error, message, started, finalized, turn_id),
            )
        )

    async def record_outcome(
        self, turn_id: str, outcome: TurnOutcome
    ) -> tuple[TurnRecord, ThreadRecord | None]:
        """Store a turn's result and roll it into its thread, exactly once; the turn
        and its thread as they now stand."""

        def op(db: sqlite3.Connection) -> tuple[TurnRecord, ThreadRecord | None]:
            row = db.execute("SELECT * FROM turns WHERE id = ?", (turn_id,)).fetchone()
            if row is None:
                raise RegistryError(f"no turn {turn_id}")
            turn = _turn(row)
            if turn.has_result:
                return turn, _thread_of(db, turn)
            finished = now_iso()
            db.execute(
                "UPDATE turns SET status=?, finished_at=?, input_tokens=?, output_tokens=?,"
                " cost_usd=?, session_id=?, reply_text=?, error=?, notice=?,"
                " message=COALESCE(?, message) WHERE id=?",
                (
                    outcome.status,
                    finished,
                    outcome.input_tokens,
                    outcome.output_tokens,
                    outcome.cost_usd,
                    outcome.session_id,
                    outcome.reply_text,
                    outcome.error,
                    outcome.notice,
                    outcome.message,
                    turn_id,
                ),
            )
            if turn.thread_id is not None:
                # The thread stops working with the outcome (a pause or terminate that
                # came meanwhile is kept).
                db.execute(
                    "UPDATE threads SET turn_count=turn_count+1, input_tokens=input_tokens+?,"
                    " status = CASE WHEN status = 'working' THEN ? ELSE status END,"
                    " output_tokens=output_tokens+?, cost_usd=cost_usd+?, last_turn_at=?,"
                    " updated_at=?, model=COALESCE(?, model), last_error=?,"
                    " session_started = CASE WHEN ? THEN 1 ELSE session_started END"
                    " WHERE id=?",
                    (
                        outcome.input_tokens,
                        "error" if outcome.status == "error" else "idle",
                        outcome.output_tokens,
                        outcome.cost_usd,
                        finished,
                        finished,
                        outcome.model,
                        outcome.error,
                        outcome.session_id is not None and outcome.status == "done",
                        turn.thread_id,
                    ),
                )
            turn = _turn(db.execute("SELECT * FROM turns WHERE id = ?", (turn_id,)).fetchone())
            return turn, _thread_of(db, turn)

        return await self._write(op)

    async def interrupt_turn(self, turn_id: str) -> None:
        """A turn stopped while its backend ran (a shutdown): queued again, with an event.
        A turn whose outcome was recorded keeps it (its notes are written at the next start)."""

        def op(db: sqlite3.Connection) -> None:
            cur = db.execute(
                "UPDATE turns SET status='queued' WHERE id=? AND status='running'", (turn_id,)
            )
            db.execute(
                "INSERT INTO events (ts, thread_id, turn_id, kind, data)"
                " SELECT ?, thread_id, id, 'interrupted', ? FROM turns WHERE id = ?",
                (now_iso(), json.dumps({"requeued": cur.rowcount == 1}), turn_id),
            )

        await self._write(op)

    async def finalize_turn(self, turn_id: str, reply_note: str | None) -> None:
        await self._write(
            lambda db: db.execute(
                "UPDATE turns SET finalized=1, reply_note=COALESCE(?, reply_note) WHERE id=?",
                (reply_note, turn_id),
            )
        )

    async def open_turns(self) -> list[TurnRecord]:
        """Turns whose notes are not all written yet, oldest first."""
        rows = await self._read(
            lambda db: db.execute("SELECT * FROM turns WHERE finalized = 0 ORDER BY seq").fetchall()
        )
        return [_turn(r) for r in rows]

    async def thread_turns(
        self, thread_id: str, *, limit: int = 100, before_seq: int | None = None
    ) -> list[TurnRecord]:
        """A thread's turns, oldest first (the last ``limit`` of them)."""
        rows = await self._read(
            lambda db: db.execute(
                "SELECT * FROM (SELECT * FROM turns WHERE thread_id = ? AND seq < ?"
                " ORDER BY seq DESC LIMIT ?) ORDER BY seq",
                (thread_id, before_seq if before_seq is not None else 2**62, limit),
            ).fetchall()
        )
        return [_turn(r) for r in rows]

    async def activity(self) -> dict[str, dict[str, int]]:
        """Per agent: how many of its unfinished turns are waiting, queued, running; and
        how many of its threads are paused or terminated."""

        def op(db: sqlite3.Connection) -> dict[str, dict[str, int]]:
            out: dict[str, dict[str, int]] = {}
            for agent, status, count in db.execute(
                "SELECT agent, status, COUNT(*) FROM turns WHERE finalized = 0"
                " AND agent IS NOT NULL GROUP BY agent, status"
            ):
                out.setdefault(agent, {})[status] = count
            for agent, status, count in db.execute(
                "SELECT agent, status, COUNT(*) FROM threads"
                " WHERE status IN ('paused', 'terminated') GROUP BY agent, status"
            ):
                out.setdefault(agent, {})[f"threads_{status}"] = count
            return out

        return await self._read(op)

    async def count_turns(self, status: str | None = None) -> int:
        sql = "SELECT COUNT(*) FROM turns"
        args: tuple[str, ...] = ()
        if status is not None:
            sql, args = sql + " WHERE status = ?", (status,)
        return int((await self._read(lambda db: db.execute(sql, args).fetchone()))[0])

    # -- threads --------------------------------------------------------------

    async def ensure_thread(
        self,
        thread_id: str,
        *,
        agent: str,
        channel: str,
        subject: str | None,
        mode: str,
        note: str,
        session_id: str,
    ) -> ThreadRecord:
        def op(db: sqlite3.Connection) -> ThreadRecord:
            stamp = now_iso()
            db.execute(
                "INSERT OR IGNORE INTO threads (id, agent, channel, subject, mode, note,"
                " session_id, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (thread_id, agent, channel, subject, mode, note, session_id, stamp, stamp),
            )
            return _thread(
                db.execute("SELECT * FROM threads WHERE id = ?", (thread_id,)).fetchone()
            )

        return await self._write(op)

    async def get_thread(self, thread_id: str) -> ThreadRecord | None:
        row = await self._read(
            lambda db: db.execute("SELECT * FROM threads WHERE id = ?", (thread_id,)).fetchone()
        )
        return _thread(row) if row else None

    async def update_thread(self, thread_id: str, **fields: Any) -> ThreadRecord | None:
        allowed = {"status", "session_id", "session_started", "last_error", "model"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"cannot update thread fields {sorted(unknown)}")

        def op(db: sqlite3.Connection) -> ThreadRecord | None:
            if fields:
                assignments = ", ".join(f"{k} = ?" for k in fields)
                db.execute(
                    f"UPDATE threads SET {assignments}, updated_at = ? WHERE id = ?",
                    (*fields.values(), now_iso(), thread_id),
                )
            row = db.execute("SELECT * FROM threads WHERE id = ?", (thread_id,)).fetchone()
            return _thread(row) if row else None

        return await self._write(op)

    async def begin_turn(self, turn_id: str, thread_id: str, message: str) -> ThreadRecord:
        """Mark a turn running and its thread working (unless an operator paused or
        terminated it meanwhile), in one transaction; the thread as it now stands."""

        def op(db: sqlite3.Connection) -> ThreadRecord:
            stamp = now_iso()
            db.execute(
                "UPDATE turns SET status='running', message=COALESCE(?, message),"
                " started_at=COALESCE(started_at, ?) WHERE id=?",
                (message, stamp, turn_id),
            )
            db.execute(
                "UPDATE threads SET status='working', updated_at=? WHERE id=?"
                " AND status NOT IN ('paused', 'terminated')",
                (stamp, thread_id),
            )
            row = db.execute("SELECT * FROM threads WHERE id = ?", (thread_id,)).fetchone()
            if row is None:
                raise RegistryError(f"no thread {thread_id}")
            return _thread(row)

        return await self._write(op)

    async def swap_thread_status(
        self, thread_id: str, new: str, *, unless: tuple[str, ...] = (), only_if: str | None = None
    ) -> ThreadRecord | None:
        """Change a thread's status in one statement, so a concurrent pause or
        terminate is never overwritten: not when it is one of ``unless``, only
        when it is ``only_if``."""

        def op(db: sqlite3.Connection) -> ThreadRecord | None:
            sql = "UPDATE threads SET status = ?, updated_at = ? WHERE id = ?"
            args: list[Any] = [new, now_iso(), thread_id]
            if unless:
                sql += f" AND status NOT IN ({', '.join('?' * len(unless))})"
                args += list(unless)
            if only_if is not None:
                sql += " AND status = ?"
                args.append(only_if)
            db.execute(sql, args)
            row = db.execute("SELECT * FROM threads WHERE id = ?", (thread_id,)).fetchone()
            return _thread(row) if row else None

        return await self._write(op)

    async def list_threads(
        self,
        *,
        agent: str | None = None,
        channel: str | None = None,
        status: str | None = None,
        since: str | None = None,
        limit: int = 100,
    ) -> list[ThreadRecord]:
        clauses: list[str] = []
        args: list[Any] = []
        for column, value in (("agent", agent), ("channel", channel), ("status", status)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        if since is not None:
            clauses.append("updated_at >= ?")
            args.append(since)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT * FROM threads{where} ORDER BY updated_at DESC LIMIT ?"
        rows = await self._read(lambda db: db.execute(sql, (*args, limit)).fetchall())
        return [_thread(r) for r in rows]

    # -- jobs -----------------------------------------------------------------

    async def job_state(self, job_id: str) -> JobState | None:
        row = await self._read(
            lambda db: db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        )
        return JobState(**dict(row)) if row else None

    async def save_job_state(self, job_id: str, **fields: Any) -> None:
        allowed = {"last_run_at", "last_slot", "next_run_at", "last_status", "last_message"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"cannot update job fields {sorted(unknown)}")

        def op(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO jobs (id, updated_at) VALUES (?, ?) ON CONFLICT(id) DO NOTHING",
                (job_id, now_iso()),
            )
            if fields:
                assignments = ", ".join(f"{k} = ?" for k in fields)
                db.execute(
                    f"UPDATE jobs SET {assignments}, updated_at = ? WHERE id = ?",
                    (*fields.values(), now_iso(), job_id),
                )

        await self._write(op)

    # -- events ---------------------------------------------------------------

    async def add_event(
        self,
        kind: str,
        *,
        thread_id: str | None = None,
        turn_id: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> int:
        payload = json.dumps(data or {}, default=str)

        def op(db: sqlite3.Connection) -> int:
            cur = db.execute(
                "INSERT INTO events (ts, thread_id, turn_id, kind, data) VALUES (?, ?, ?, ?, ?)",
                (now_iso(), thread_id, turn_id, kind, payload),
            )
            return int(cur.lastrowid or 0)

        return await self._write(op)

    async def events(
        self, *, thread_id: str | None = None, after_id: int = 0, limit: int = 200
    ) -> list[EventRecord]:
        sql = "SELECT * FROM events WHERE id > ?"
        args: Sequence[Any] = (after_id,)
        if thread_id is not None:
            sql += " AND thread_id = ?"
            args = (after_id, thread_id)
        sql += " ORDER BY id LIMIT ?"
        rows = await self._read(lambda db: db.execute(sql, (*args, limit)).fetchall())
        return [
            EventRecord(
                r["id"], r["ts"], r["thread_id"], r["turn_id"], r["kind"], json.loads(r["data"])
            )
            for r in rows
        ]
