"""A fake Anthropic Messages API, good enough for the real claude CLI to hold a conversation with.

Tests script it instead of patching anything: each conversation request (``POST /v1/messages``)
takes the next reply from a queue - a text answer, a tool call, an HTTP failure - and once the
queue is empty every request gets a default text answer. Replies are written the way the real
API writes them: server-sent events for streaming requests (``message_start``,
``content_block_*``, ``message_delta``, ``message_stop``) and one JSON message otherwise, errors
in the API's ``{"type": "error", "error": {...}}`` shape. Every request is recorded (headers and
JSON body) so a test can assert on the system prompt, on the messages a resumed turn resends, or
on the tool result the CLI sent back, and can wait for a request without sleeping.

A queue entry may also be a function of the request it answers, for replies that depend on what
the CLI sent (for example echoing a tool result). ``gate`` holds a reply until the test releases
it, which is how a test keeps a turn "in flight" for as long as it needs.

Usage::

    async with FakeAnthropic() as api:
        api.script(Bash("echo hi > out.txt"), Text("done"))
        ... run claude with ANTHROPIC_BASE_URL=api.url ...
        assert api.conversation[-1].tool_results[0]["is_error"] is False
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from aiohttp import web

# The error "type" the real API puts in its body for each status it uses.
ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


@dataclass(frozen=True)
class Usage:
    """Token counts reported for one reply; the CLI computes ``total_cost_usd`` from these."""

    input_tokens: int = 100
    output_tokens: int = 20
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


@dataclass(frozen=True, kw_only=True)
class _Timing:
    delay: float = 0.0
    """Seconds to wait before answering (simulates a slow model, not a synchronisation aid)."""
    gate: asyncio.Event | None = None
    """When set, the reply waits until the test sets this event."""


@dataclass(frozen=True, kw_only=True)
class _Streamed(_Timing):
    usage: Usage = field(default_factory=Usage)
    cut_after: int | None = None
    """Hang up after this many server-sent events (streaming requests only)."""


@dataclass(frozen=True)
class Text(_Streamed):
    """Answer with text and ``stop_reason: end_turn``."""

    text: str


@dataclass(frozen=True)
class ToolCall(_Streamed):
    """Ask the client to run a tool (``stop_reason: tool_use``), optionally after some text."""

    name: str
    input: Mapping[str, Any]
    text: str = ""
    id: str | None = None


@dataclass(frozen=True)
class Failure(_Timing):
    """Fail with an HTTP status and the API's error body (429 rate limit, 529 overloaded, ...)."""

    status: int
    message: str = ""
    retry_after: float | None = None


def Bash(command: str, *, description: str = "run a command", **kwargs: Any) -> ToolCall:
    """A ``ToolCall`` of claude's Bash tool."""
    return ToolCall(name="Bash", input={"command": command, "description": description}, **kwargs)


Reply: TypeAlias = Text | ToolCall | Failure
ScriptEntry: TypeAlias = "Reply | Callable[[RecordedRequest], Reply]"


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it (header names lower-cased)."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: Any

    @property
    def stream(self) -> bool:
        return isinstance(self.body, dict) and bool(self.body.get("stream"))

    @property
    def session_id(self) -> str | None:
        return self.headers.get("x-claude-code-session-id")

    @property
    def system_blocks(self) -> list[str]:
        """The system prompt as a list of texts (the API accepts a string or text blocks)."""
        system = self.body.get("system") if isinstance(self.body, dict) else None
        if isinstance(system, str):
            return [system]
        if isinstance(system, list):
            return [b.get("text", "") for b in system if isinstance(b, dict)]
        return []

    @property
    def system_text(self) -> str:
        return "\n".join(self.system_blocks)

    @property
    def messages(self) -> list[dict[str, Any]]:
        messages = self.body.get("messages") if isinstance(self.body, dict) else None
        return list(messages) if isinstance(messages, list) else []

    @property
    def last_user_text(self) -> str:
        """The last text block of the last user message: where the CLI puts the prompt."""
        for message in reversed(self.messages):
            if message.get("role") == "user":
                texts = _texts(message.get("content"))
                return texts[-1] if texts else ""
        return ""

    @property
    def user_texts(self) -> list[str]:
        """Every user text block of the conversation, oldest first."""
        return [t for m in self.messages if m.get("role") == "user" for t in _texts(m["content"])]

    @property
    def assistant_texts(self) -> list[str]:
        """Every assistant text block of the conversation, oldest first."""
        return [
            t for m in self.messages if m.get("role") == "assistant" for t in _texts(m["content"])
        ]

    @property
    def tool_results(self) -> list[dict[str, Any]]:
        """The ``tool_result`` blocks of the last user message."""
        for message in reversed(self.messages):
            if message.get("role") == "user":
                content = message.get("content")
                if not isinstance(content, list):
                    return []
                return [b for b in content if b.get("type") == "tool_result"]
        return []


def tool_result_text(block: Mapping[str, Any]) -> str:
    """The text of a ``tool_result`` block, whether its content is a string or text blocks."""
    content = block.get("content")
    if isinstance(content, str):
        return content
    return "".join(_texts(content))


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        return []
    return [b["text"] for b in content if isinstance(b, dict) and b.get("type") == "text"]


_RECORDED = web.RequestKey("recorded", RecordedRequest)


class FakeAnthropic:
    """The fake API server on 127.0.0.1 (a free port). Use as ``async with`` or start()/stop()."""

    def __init__(self, *, default_text: str = "OK", host: str = "127.0.0.1") -> None:
        self.default_text = default_text
        self.requests: list[RecordedRequest] = []
        self._host = host
        self._port: int | None = None
        self._queue: deque[ScriptEntry] = deque()
        self._changed = asyncio.Condition()
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(middlewares=[self._record])
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/v1/messages/count_tokens", self._count_tokens)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        # handler_cancellation: a client that hangs up mid-reply cancels the handler, as the
        # real server would stop generating, instead of leaving it writing to a dead socket.
        # A short shutdown_timeout: a reply held by a gate nobody released must not hold up
        # the test's teardown for aiohttp's default minute.
        self._runner = web.AppRunner(
            app, handle_signals=False, handler_cancellation=True, shutdown_timeout=0.5
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, 0).start()
        self._port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeAnthropic:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        """Base URL for ``ANTHROPIC_BASE_URL``."""
        if self._port is None:
            raise RuntimeError("FakeAnthropic is not started")
        return f"http://{self._host}:{self._port}"

    # -- scripting and inspection --------------------------------------------------------------

    def script(self, *replies: ScriptEntry) -> None:
        """Queue replies for the next conversation requests, in order."""
        self._queue.extend(replies)

    @property
    def pending(self) -> int:
        """Scripted replies not served yet."""
        return len(self._queue)

    @property
    def conversation(self) -> list[RecordedRequest]:
        """The ``POST /v1/messages`` requests, oldest first."""
        return [r for r in self.requests if r.method == "POST" and r.path == "/v1/messages"]

    async def wait_for(self, predicate: Callable[[RecordedRequest], bool]) -> RecordedRequest:
        """Wait until a recorded request satisfies ``predicate``; return the first that does.

        Bound it with ``asyncio.timeout`` in the test.
        """
        async with self._changed:
            while True:
                for request in self.requests:
                    if predicate(request):
                        return request
                await self._changed.wait()

    async def wait_for_conversation(self, count: int) -> None:
        """Wait until at least ``count`` conversation requests have arrived."""
        async with self._changed:
            await self._changed.wait_for(lambda: len(self.conversation) >= count)

    # -- HTTP ----------------------------------------------------------------------------------

    @web.middleware
    async def _record(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Any],
    ) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        recorded = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
        )
        request[_RECORDED] = recorded
        async with self._changed:
            self.requests.append(recorded)
            self._changed.notify_all()
        response: web.StreamResponse = await handler(request)
        return response

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        recorded = request[_RECORDED]
        reply = self._next_reply(recorded)
        if reply.gate is not None:
            await reply.gate.wait()
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if isinstance(reply, Failure):
            return _error_response(reply)
        model = recorded.body.get("model", "claude-fake") if isinstance(recorded.body, dict) else ""
        message_id = f"msg_fake{next(self._ids):06d}"
        if recorded.stream:
            return await _stream(request, reply, message_id, model)
        return web.json_response(_message(reply, message_id, model), headers=_request_id())

    async def _count_tokens(self, request: web.Request) -> web.Response:
        size = len(json.dumps(request[_RECORDED].body))
        return web.json_response({"input_tokens": max(1, size // 4)}, headers=_request_id())

    async def _not_found(self, request: web.Request) -> web.Response:
        return _error_response(Failure(404, f"{request.method} {request.path} is not faked"))

    def _next_reply(self, request: RecordedRequest) -> Reply:
        if not self._queue:
            return Text(self.default_text)
        entry = self._queue.popleft()
        return entry(request) if callable(entry) else entry


def _request_id() -> dict[str, str]:
    return {"request-id": f"req_fake{uuid.uuid4().hex[:20]}"}


def _error_response(failure: Failure) -> web.Response:
    error_type = ERROR_TYPES.get(failure.status, "api_error")
    body = {
        "type": "error",
        "error": {"type": error_type, "message": failure.message or error_type},
        "request_id": _request_id()["request-id"],
    }
    headers = _request_id()
    if failure.retry_after is not None:
        headers["retry-after"] = str(max(0, round(failure.retry_after)))
        headers["retry-after-ms"] = str(max(0, round(failure.retry_after * 1000)))
    return web.json_response(body, status=failure.status, headers=headers)


def _content(reply: Text | ToolCall) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if reply.text:
        blocks.append({"type": "text", "text": reply.text})
    if isinstance(reply, ToolCall):
        tool_id = reply.id or f"toolu_fake{uuid.uuid4().hex[:16]}"
        blocks.append({"type": "tool_use", "id": tool_id, "name": reply.name, "input": reply.input})
    return blocks


def _stop_reason(reply: Text | ToolCall) -> str:
    return "tool_use" if isinstance(reply, ToolCall) else "end_turn"


def _usage(usage: Usage, *, output_tokens: int) -> dict[str, int]:
    return {
        "input_tokens": usage.input_tokens,
        "cache_creation_input_tokens": usage.cache_creation_input_tokens,
        "cache_read_input_tokens": usage.cache_read_input_tokens,
        "output_tokens": output_tokens,
    }


def _message(reply: Text | ToolCall, message_id: str, model: str) -> dict[str, Any]:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": _content(reply),
        "stop_reason": _stop_reason(reply),
        "stop_sequence": None,
        "usage": _usage(reply.usage, output_tokens=reply.usage.output_tokens),
    }


def _events(reply: Text | ToolCall, message_id: str, model: str) -> list[dict[str, Any]]:
    """The server-sent events of one streamed message, in the real API's order."""
    start = _message(reply, message_id, model) | {"content": [], "stop_reason": None}
    start["usage"] = _usage(reply.usage, output_tokens=1)
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": start},
        {"type": "ping"},
    ]
    for index, block in enumerate(_content(reply)):
        if block["type"] == "text":
            events.append(
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": block | {"text": ""},
                }
            )
            events.extend(
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "text_delta", "text": piece},
                }
                for piece in _pieces(block["text"])
            )
        else:
            events.append(
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": block | {"input": {}},
                }
            )
            events.extend(
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": piece},
                }
                for piece in _pieces(json.dumps(block["input"]))
            )
        events.append({"type": "content_block_stop", "index": index})
    events.append(
        {
            "type": "message_delta",
            "delta": {"stop_reason": _stop_reason(reply), "stop_sequence": None},
            "usage": {"output_tokens": reply.usage.output_tokens},
        }
    )
    events.append({"type": "message_stop"})
    return events


def _pieces(text: str, size: int = 16) -> list[str]:
    # Several deltas per block, so clients that only handle one-delta blocks are caught out.
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


async def _stream(
    request: web.Request, reply: Text | ToolCall, message_id: str, model: str
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"content-type": "text/event-stream", "cache-control": "no-cache"} | _request_id()
    )
    await response.prepare(request)
    for sent, event in enumerate(_events(reply, message_id, model)):
        if reply.cut_after is not None and sent >= reply.cut_after:
            # Hang up without ending the chunked body: the client sees a broken stream, the way
            # a dropped connection looks, not a clean end of message.
            assert request.transport is not None
            request.transport.abort()
            return response
        await response.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
    await response.write_eof()
    return response
