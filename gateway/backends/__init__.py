"""Backends run turns: ``echo`` (offline), ``scripted`` (tests), ``claude`` (real)."""

from __future__ import annotations

import os

from gateway.backends.base import (
    Backend,
    EventSink,
    InterimEvent,
    ResolvedLimits,
    TurnRequest,
    TurnResult,
    Usage,
)
from gateway.backends.echo import EchoBackend
from gateway.backends.scripted import ScriptedBackend


def default_backends() -> dict[str, Backend]:
    backends: dict[str, Backend] = {"echo": EchoBackend()}
    if os.environ.get("VAULTGATE_TEST_BACKENDS") == "1":
        backends["scripted"] = ScriptedBackend()
    return backends


__all__ = [
    "Backend",
    "EchoBackend",
    "EventSink",
    "InterimEvent",
    "ResolvedLimits",
    "ScriptedBackend",
    "TurnRequest",
    "TurnResult",
    "Usage",
    "default_backends",
]
