"""The ``scripted`` backend: a fake at the backend seam, for tests.

In-process tests hand the gateway a :class:`ScriptedBackend` and read back
what it was asked and when each turn started and ended. A definition with
``backend: scripted`` and a ``script:`` mapping drives the same backend in a
gateway subprocess (crash tests): ``delay_s``, ``reply`` (``{message}`` is
replaced), ``fail`` (an error text), ``usage`` (input/output tokens, cost).
It is only registered when ``VAULTGATE_TEST_BACKENDS=1``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from gateway.backends.base import EventSink, InterimEvent, TurnRequest, TurnResult, Usage


@dataclass
class Call:
    request: TurnRequest
    started: float
    ended: float | None = None


@dataclass
class ScriptedBackend:
    name: str = "scripted"
    uses_workspace: bool = False
    delay_s: float = 0.0
    reply: str = "scripted reply to: {message}"
    fail: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    gate: asyncio.Event | None = None
    """When set, every turn waits for it before answering (tests hold turns open)."""

    async def run(self, request: TurnRequest, on_event: EventSink) -> TurnResult:
        script = {**self._defaults(), **request.options.get("script", {})}
        call = Call(request, time.monotonic())
        self.calls.append(call)
        try:
            on_event(InterimEvent("init", {"session_id": request.session_id}))
            if script["delay_s"]:
                await asyncio.sleep(float(script["delay_s"]))
            if self.gate is not None:
                await self.gate.wait()
            usage = script["usage"] or {}
            if script["fail"]:
                return TurnResult(
                    text="", is_error=True, error=str(script["fail"]), session_id=request.session_id
                )
            text = str(script["reply"]).replace("{message}", _inbound_text(request.message))
            on_event(InterimEvent("text", {"text": text}))
            return TurnResult(
                text=text,
                usage=Usage(
                    input_tokens=int(usage.get("input_tokens", 10)),
                    output_tokens=int(usage.get("output_tokens", 5)),
                ),
                cost_usd=float(usage.get("cost_usd", 0.001)),
                session_id=request.session_id,
                num_turns=1,
            )
        finally:
            call.ended = time.monotonic()

    def _defaults(self) -> dict[str, Any]:
        return {
            "delay_s": self.delay_s,
            "reply": self.reply,
            "fail": self.fail,
            "usage": self.usage,
        }


def _inbound_text(message: str) -> str:
    """The sender's text inside the delimited message block."""
    start = message.find(">\n", message.find("<message"))
    end = message.rfind("\n</message>")
    return message[start + 2 : end] if start != -1 and end > start else message
