"""The ``echo`` backend: an offline loopback that shows what a turn received.

No model, no credentials, no cost. The reply is a pure function of the
request, which makes it the backend of the demo and of people trying
vaultgate before they have an API key.
"""

from __future__ import annotations

from gateway.backends.base import EventSink, InterimEvent, TurnRequest, TurnResult


class EchoBackend:
    name = "echo"
    uses_workspace = False

    async def run(self, request: TurnRequest, on_event: EventSink) -> TurnResult:
        on_event(InterimEvent("init", {"session_id": request.session_id, "backend": "echo"}))
        quoted = "\n".join(f"> {line}" if line else ">" for line in request.message.splitlines())
        lines = [
            f"**echo** received this on thread `{request.thread_id}`"
            f" ({'resumed' if request.resume else 'new'} session):",
            "",
            quoted,
            "",
            f"System prompt: {len(request.system_prompt)} characters, starting "
            f"{request.system_prompt[:60]!r}.",
        ]
        text = "\n".join(lines)
        on_event(InterimEvent("text", {"text": text}))
        return TurnResult(text=text, session_id=request.session_id, num_turns=1)
