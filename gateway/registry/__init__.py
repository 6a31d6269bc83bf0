"""The thread registry (SQLite): threads, turns and events."""

from gateway.registry.store import (
    FINAL_TURN,
    Admission,
    EventRecord,
    JobState,
    Registry,
    ThreadRecord,
    ThreadStatus,
    TurnOutcome,
    TurnRecord,
    TurnStatus,
    now_iso,
)

__all__ = [
    "FINAL_TURN",
    "Admission",
    "EventRecord",
    "JobState",
    "Registry",
    "ThreadRecord",
    "ThreadStatus",
    "TurnOutcome",
    "TurnRecord",
    "TurnStatus",
    "now_iso",
]
