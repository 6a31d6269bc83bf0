from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from gateway.errors import RegistryError
from gateway.registry import Admission, Registry, TurnOutcome
from gateway.registry.migrations import MIGRATIONS, migrate


async def test_migrations_apply_from_blank_and_only_once(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "r.db", isolation_level=None)
    assert migrate(db) == [name for name, _ in MIGRATIONS]
    assert migrate(db) == []
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"threads", "turns", "events", "_migrations"} <= tables


async def test_registry_is_in_wal_mode(tmp_path: Path) -> None:
    registry = await Registry.open(tmp_path / "r.db")
    await registry.close()
    db = sqlite3.connect(tmp_path / "r.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_an_outcome_rolls_into_its_thread_exactly_once(tmp_path: Path) -> None:
    registry = await Registry.open(tmp_path / "r.db")
    try:
        await registry.ensure_thread(
            "c:t",
            agent="a",
            channel="c",
            subject=None,
            mode="single-threaded",
            note="Threads/c/t.md",
            session_id="s",
        )
        await registry.add_turn("m1", "Inbox/1.md", "2026-01-01T00:00:00Z")
        await registry.route_turn(
            "m1", agent="a", channel="c", subject=None, sender="x", thread_id="c:t", drain_key="c"
        )
        outcome = TurnOutcome(
            "done", "hi", input_tokens=7, output_tokens=3, cost_usd=0.5, session_id="s"
        )
        for _ in range(3):
            await registry.record_outcome("m1", outcome)
        thread = await registry.get_thread("c:t")
        assert thread is not None
        assert (thread.turn_count, thread.input_tokens, thread.cost_usd) == (1, 7, 0.5)
        assert thread.session_started
        assert [t.id for t in await registry.open_turns()] == ["m1"]
        await registry.finalize_turn("m1", "Messages/c/x/m1.md")
        assert await registry.open_turns() == []
    finally:
        await registry.close()


async def test_a_shutdown_requeues_a_running_turn_but_keeps_a_recorded_outcome(
    tmp_path: Path,
) -> None:
    registry = await Registry.open(tmp_path / "r.db")
    try:
        for turn in ("running", "recorded"):
            await registry.admit([Admission(
                turn, f"Inbox/{turn}.md", "2026-01-01T00:00:00Z", thread_id="c:t", agent="a",
                channel="c", subject=None, mode="multi-threaded", thread_note="Threads/c/t.md",
                session_id="s", sender=None, drain_key="c:t",
            )])  # fmt: skip
            await registry.begin_turn(turn, "c:t", "hello")
        turn, thread = await registry.record_outcome("recorded", TurnOutcome("done", "hi"))
        assert turn.status == "done" and thread is not None and thread.turn_count == 1
        for turn_id in ("running", "recorded"):
            await registry.interrupt_turn(turn_id)
        running, recorded = [await registry.get_turn(t) for t in ("running", "recorded")]
        assert running is not None and running.status == "queued"
        assert recorded is not None and recorded.status == "done" and recorded.has_result
        events = await registry.events()
        assert [(e.kind, e.turn_id, e.data) for e in events] == [
            ("interrupted", "running", {"requeued": True}),
            ("interrupted", "recorded", {"requeued": False}),
        ]
    finally:
        await registry.close()


async def test_adding_a_known_turn_returns_the_existing_row(tmp_path: Path) -> None:
    registry = await Registry.open(tmp_path / "r.db")
    try:
        first, created = await registry.add_turn("m1", "Inbox/1.md", "t0")
        again, created_again = await registry.add_turn("m1", "Inbox/other.md", "t1")
        assert created and not created_again
        assert again.note == "Inbox/1.md" and again.seq == first.seq
    finally:
        await registry.close()


async def test_an_old_database_is_brought_up_to_date_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at TEXT)")
    first_name, first_sql = MIGRATIONS[0]
    db.executescript(
        f"BEGIN;\n{first_sql}\nINSERT INTO _migrations VALUES ('{first_name}', 'then');\nCOMMIT;"
    )
    db.execute(
        "INSERT INTO turns (id, note, status, received_at) VALUES ('m1', 'n.md', 'queued', 't')"
    )
    db.close()
    registry = await Registry.open(path)
    try:
        assert (await registry.get_turn("m1")) is not None
        await registry.save_job_state("j", last_status="fired")
        state = await registry.job_state("j")
        assert state is not None and state.last_status == "fired"
    finally:
        await registry.close()
    db = sqlite3.connect(path)
    names = [r[0] for r in db.execute("SELECT name FROM _migrations ORDER BY name")]
    assert names == [name for name, _ in MIGRATIONS]


async def test_writes_that_arrive_together_commit_together_and_fail_alone(
    tmp_path: Path,
) -> None:
    registry = await Registry.open(tmp_path / "r.db")
    try:
        adds = [
            registry.add_turn(f"m{i}", f"Inbox/{i}.md", "2026-01-01T00:00:00Z") for i in range(40)
        ]
        # Marks m3 done, then breaks a constraint: its savepoint is rolled back, the
        # rest of the group is not.
        broken = registry._write(
            lambda db: (
                db.execute("UPDATE turns SET status = 'done' WHERE id = 'm3'"),
                db.execute("INSERT INTO turns (id, note, status) VALUES ('m0', 'x', 'queued')"),
            )
        )
        outcomes = await asyncio.gather(*adds, broken, return_exceptions=True)
        assert isinstance(outcomes[-1], RegistryError)
        assert "IntegrityError" in str(outcomes[-1])
        assert not any(isinstance(o, BaseException) for o in outcomes[:-1])
        assert registry._writes.largest > 1  # they did go as one transaction
        turns = [await registry.get_turn(f"m{i}") for i in range(40)]
        assert all(t is not None for t in turns)
        m3 = await registry.get_turn("m3")
        assert m3 is not None and m3.status == "queued"
    finally:
        await registry.close()
    db = sqlite3.connect(tmp_path / "r.db")
    assert db.execute("SELECT count(*) FROM turns").fetchone()[0] == 40
