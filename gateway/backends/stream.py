"""claude's stream-json output, one line at a time, into typed events.

One function, :func:`parse_line`, turns a line into an event or ``None``.
Unknown event types, truncated JSON and non-object lines are ``None``: the
CLI adds event types between versions and a killed process can leave half a
line, and neither may break a turn. The ``result`` event is authoritative;
everything before it is interim.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from gateway.backends.base import Usage


@dataclass(frozen=True, slots=True)
class Init:
    session_id: str | None
    model: str | None
    tools: list[str]
    cwd: str | None


@dataclass(frozen=True, slots=True)
class AssistantText:
    text: str
    usage: Usage


@dataclass(frozen=True, slots=True)
class ToolUse:
    id: str
    name: str
    input: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolResult:
    tool_use_id: str
    content: str
    is_error: bool


@dataclass(frozen=True, slots=True)
class ApiRetry:
    attempt: int | None
    error: str


@dataclass(frozen=True, slots=True)
class Result:
    is_error: bool
    subtype: str
    text: str
    session_id: str | None
    num_turns: int
    cost_usd: float
    usage: Usage
    errors: list[str] = field(default_factory=list)


StreamEvent = Init | AssistantText | ToolUse | ToolResult | ApiRetry | Result


def _usage(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage()

    def num(key: str) -> int:
        value = raw.get(key)
        return int(value) if isinstance(value, int | float) else 0

    return Usage(
        input_tokens=num("input_tokens"),
        output_tokens=num("output_tokens"),
        cache_read_tokens=num("cache_read_input_tokens"),
        cache_creation_tokens=num("cache_creation_input_tokens"),
    )


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def parse_line(line: bytes | str) -> list[StreamEvent]:
    """The events in one stream-json line; empty for anything not understood."""
    try:
        data = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return []
    if not isinstance(data, dict):
        return []
    kind = data.get("type")
    if kind == "system":
        if data.get("subtype") == "init":
            tools = data.get("tools")
            return [
                Init(
                    session_id=data.get("session_id"),
                    model=data.get("model"),
                    tools=[str(t) for t in tools] if isinstance(tools, list) else [],
                    cwd=data.get("cwd"),
                )
            ]
        if data.get("subtype") == "api_retry":
            attempt = data.get("attempt")
            return [
                ApiRetry(
                    attempt=attempt if isinstance(attempt, int) else None,
                    error=str(data.get("error") or data.get("error_status") or ""),
                )
            ]
        return []
    if kind in ("assistant", "user"):
        message = data.get("message")
        if not isinstance(message, dict):
            return []
        content = message.get("content")
        if not isinstance(content, list):
            return []
        events: list[StreamEvent] = []
        usage = _usage(message.get("usage"))
        for block in content:
            if not isinstance(block, dict):
                continue
            btype = block.get("type")
            if btype == "text" and kind == "assistant":
                events.append(AssistantText(str(block.get("text", "")), usage))
            elif btype == "tool_use":
                raw_input = block.get("input")
                events.append(
                    ToolUse(
                        id=str(block.get("id", "")),
                        name=str(block.get("name", "")),
                        input=raw_input if isinstance(raw_input, dict) else {},
                    )
                )
            elif btype == "tool_result":
                events.append(
                    ToolResult(
                        tool_use_id=str(block.get("tool_use_id", "")),
                        content=_text_of(block.get("content")),
                        is_error=bool(block.get("is_error")),
                    )
                )
        return events
    if kind == "result":
        cost = data.get("total_cost_usd")
        turns = data.get("num_turns")
        errors = data.get("errors")
        return [
            Result(
                is_error=bool(data.get("is_error")),
                subtype=str(data.get("subtype", "")),
                text=str(data.get("result") or ""),
                session_id=data.get("session_id"),
                num_turns=turns if isinstance(turns, int) else 0,
                cost_usd=float(cost) if isinstance(cost, int | float) else 0.0,
                usage=_usage(data.get("usage")),
                errors=[str(e) for e in errors] if isinstance(errors, list) else [],
            )
        ]
    return []
