"""What a backend is: a turn request in, interim events out, a result back.

A backend runs one turn of one thread. Failures are values: a backend returns
a :class:`TurnResult` with ``is_error`` set rather than raising, so the
gateway has one path for every outcome. The only exception that crosses this
seam is cancellation (a terminated thread, a shutdown), which the backend
must honour by stopping what it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from gateway.workspace import Workspace


@dataclass(frozen=True, slots=True)
class ResolvedLimits:
    """The limits in force for one turn, after settings, definition and budget."""

    turns: int
    tokens: int
    spend_usd: float
    duration_s: float


@dataclass(frozen=True, slots=True)
class TurnRequest:
    thread_id: str
    agent: str
    system_prompt: str
    message: str
    """The full user message: run-context preamble plus the delimited inbound text."""
    session_id: str
    resume: bool
    workspace: Workspace | None
    """The thread's workspace, prepared (prompt and MCP config written) when the
    backend says it ``uses_workspace``."""
    limits: ResolvedLimits
    model: str | None = None
    tools: tuple[str, ...] | None = None
    permission_mode: str | None = None
    sender: str | None = None
    engine: Literal["bwrap", "none"] = "bwrap"
    network: Literal["open", "restricted"] = "open"
    options: dict[str, Any] = field(default_factory=dict)
    """Backend-specific settings from the definition (e.g. the scripted backend's script)."""


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class TurnResult:
    text: str
    usage: Usage = Usage()
    cost_usd: float = 0.0
    session_id: str | None = None
    is_error: bool = False
    error: str | None = None
    num_turns: int = 0
    model: str | None = None
    session_lost: bool = False
    """The resumed session was not found; the gateway retries once with a fresh one."""


InterimKind = Literal[
    "init", "text", "tool_use", "tool_result", "retry", "warning", "egress_refused"
]


@dataclass(frozen=True, slots=True)
class InterimEvent:
    kind: InterimKind
    data: dict[str, Any]


EventSink = Callable[[InterimEvent], None]


class Backend(Protocol):
    name: str
    uses_workspace: bool

    async def run(self, request: TurnRequest, on_event: EventSink) -> TurnResult: ...
