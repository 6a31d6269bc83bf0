"""Request bodies (validated with pydantic) and the JSON shapes the API answers with."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.definitions import AgentSpec, DefinitionProblem
from gateway.registry import EventRecord, ThreadRecord, TurnRecord


class SendMessage(BaseModel):
    """``POST /api/messages``."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    agent: str | None = Field(None, min_length=1, max_length=200)
    channel: str | None = Field(None, min_length=1, max_length=200)
    text: str = Field(min_length=1, max_length=1_000_000)
    subject: str | None = Field(None, min_length=1, max_length=500)
    sender: str | None = Field(None, min_length=1, max_length=200)
    wait: bool = False
    timeout_s: float = Field(60.0, gt=0, le=3600)

    @field_validator("agent", "channel", "text", "subject", "sender")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value

    @model_validator(mode="after")
    def _one_target(self) -> SendMessage:
        if not self.agent and not self.channel:
            raise ValueError("give 'agent' or 'channel'")
        return self


def agent_json(entry: AgentSpec | DefinitionProblem, status: str) -> dict[str, Any]:
    """One agent as ``GET /api/agents`` and ``vaultgate agents`` show it."""
    if isinstance(entry, AgentSpec):
        return {
            "name": entry.name,
            "channels": entry.channels,
            "mode": entry.mode,
            "backend": entry.backend,
            "model": entry.model,
            "definition": entry.path,
            "status": status,
            "error": None,
        }
    return {
        "name": entry.name,
        "channels": [],
        "mode": None,
        "backend": None,
        "model": None,
        "definition": entry.path,
        "status": "error",
        "error": entry.error,
    }


def thread_json(thread: ThreadRecord) -> dict[str, Any]:
    data = asdict(thread)
    data["cost_usd"] = round(thread.cost_usd, 6)
    return data


def message_json(turn: TurnRecord) -> dict[str, Any]:
    """One inbound message and its reply, as listings and ``GET /api/messages/{id}`` show it."""
    return {
        "id": turn.id,
        "status": turn.status,
        "note": turn.note,
        "thread": turn.thread_id,
        "agent": turn.agent,
        "channel": turn.channel,
        "subject": turn.subject,
        "sender": turn.sender,
        "text": turn.message,
        "reply": turn.reply_text if turn.finalized or turn.has_result else None,
        "reply_note": turn.reply_note,
        "error": turn.error,
        "received_at": turn.received_at,
        "started_at": turn.started_at,
        "finished_at": turn.finished_at,
        "input_tokens": turn.input_tokens,
        "output_tokens": turn.output_tokens,
        "cost_usd": round(turn.cost_usd, 6),
    }


def event_json(event: EventRecord) -> dict[str, Any]:
    return asdict(event)
