"""Append-only, named schema migrations for the registry.

Each migration is applied once, in order, inside a transaction, and recorded
in ``_migrations``. Never edit or reorder a migration that has shipped: add
the next one. A database from any earlier version is brought up to date by
running the ones it lacks.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

m001_initial = """
        CREATE TABLE threads (
            id TEXT PRIMARY KEY,
            agent TEXT NOT NULL,
            channel TEXT NOT NULL,
            subject TEXT,
            mode TEXT NOT NULL,
            note TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'idle',
            session_id TEXT,
            session_started INTEGER NOT NULL DEFAULT 0,
            turn_count INTEGER NOT NULL DEFAULT 0,
            input_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            cost_usd REAL NOT NULL DEFAULT 0,
            model TEXT,
            last_error TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            last_turn_at TEXT
        );
        CREATE INDEX threads_agent ON threads(agent);
        CREATE INDEX threads_status ON threads(status);

        CREATE TABLE turns (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            note TEXT NOT NULL,
            status TEXT NOT NULL,
            agent TEXT,
            channel TEXT,
            subject TEXT,
            sender TEXT,
            message TEXT,
            thread_id TEXT,
            drain_key TEXT,
            received_at TEXT NOT NULL,
            started_at TEXT,
            finished_at TEXT,
            input_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            cost_usd REAL NOT NULL DEFAULT 0,
            session_id TEXT,
            reply_text TEXT,
            reply_note TEXT,
            error TEXT,
            notice TEXT,
            finalized INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX turns_thread ON turns(thread_id, seq);
        CREATE INDEX turns_open ON turns(finalized, status);
        CREATE INDEX turns_note ON turns(note);

        CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            ts TEXT NOT NULL,
            thread_id TEXT,
            turn_id TEXT,
            kind TEXT NOT NULL,
            data TEXT NOT NULL DEFAULT '{}'
        );
        CREATE INDEX events_thread ON events(thread_id, id);
"""

m002_jobs = """
        CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            last_run_at TEXT,
            last_slot TEXT,
            next_run_at TEXT,
            last_status TEXT,
            last_message TEXT,
            updated_at TEXT NOT NULL
        );
"""

MIGRATIONS: list[tuple[str, str]] = [
    ("m001_initial", m001_initial),
    ("m002_jobs", m002_jobs),
]


def migrate(db: sqlite3.Connection) -> list[str]:
    """Apply every migration ``db`` lacks; return the names applied."""
    db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT)")
    done = {row[0] for row in db.execute("SELECT name FROM _migrations")}
    applied = []
    for name, sql in MIGRATIONS:
        if name in done:
            continue
        stamp = datetime.now(UTC).isoformat()
        # executescript commits whatever is open first, so the transaction is
        # spelled out in the script: the schema change and its record land together.
        try:
            db.executescript(
                f"BEGIN;\n{sql}\nINSERT INTO _migrations VALUES ('{name}', '{stamp}');\nCOMMIT;"
            )
        except sqlite3.Error:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        applied.append(name)
    return applied
