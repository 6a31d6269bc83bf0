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
from gateway.backends.claude import ClaudeBackend
from gateway.backends.echo import EchoBackend
from gateway.backends.scripted import ScriptedBackend
from gateway.settings import Settings


def default_backends(settings: Settings) -> dict[str, Backend]:
    backends: dict[str, Backend] = {"echo": EchoBackend(), "claude": ClaudeBackend(settings)}
    if os.environ.get("VAULTGATE_TEST_BACKENDS") == "1":
        backends["scripted"] = ScriptedBackend()
    return backends


__all__ = [
    "Backend",
    "ClaudeBackend",
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
