"""The HTTP API's handlers (SPEC 7). Each one raises on a client mistake; the
error middleware turns that into the JSON error body."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from gateway import __version__
from gateway.control import VERBS
from gateway.definitions import AgentSpec
from gateway.engine import Gateway
from gateway.errors import RoutingError, UnknownThread
from gateway.http.errors import ApiError
from gateway.http.models import (
    SendMessage,
    agent_json,
    event_json,
    message_json,
    thread_json,
)
from gateway.inbound import new_message_id
from gateway.jobs import Job
from gateway.registry import Registry, ThreadRecord
from gateway.send import write_inbound
from vault_adapter import VaultError, parse_webhook
from vault_adapter.workers import URGENT

GATEWAY: web.AppKey[Gateway] = web.AppKey("gateway", Gateway)
PREFLIGHT: web.AppKey[dict[str, Any]] = web.AppKey("preflight", dict)


def _gw(request: web.Request) -> Gateway:
    return request.app[GATEWAY]


def _registry(request: web.Request) -> Registry:
    registry = _gw(request).registry
    assert registry is not None
    return registry


def _int(request: web.Request, name: str, default: int, *, low: int = 1, high: int = 1000) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "bad_query", f"{name} must be an integer, not {raw!r}") from None
    if not low <= value <= high:
        raise ApiError(400, "bad_query", f"{name} must be between {low} and {high}")
    return value


async def health(request: web.Request) -> web.Response:
    gateway = _gw(request)
    return web.json_response(
        {
            "ok": True,
            "version": __version__,
            **gateway.status(),
            "preflight": request.app[PREFLIGHT],
        }
    )


# -- agents -------------------------------------------------------------------


def _agent_status(spec: AgentSpec, activity: dict[str, int]) -> str:
    if activity.get("running"):
        return "working"
    queued = activity.get("queued", 0) + activity.get("waiting", 0)
    if queued:
        return f"queued:{queued}"
    if activity.get("threads_paused") or activity.get("threads_terminated"):
        return "paused"
    return "idle" if spec.enabled else "disabled"


async def _agents(request: web.Request) -> list[dict[str, Any]]:
    activity = await _registry(request).activity()
    return [
        agent_json(
            entry,
            _agent_status(entry, activity.get(entry.name, {}))
            if isinstance(entry, AgentSpec)
            else "error",
        )
        for entry in _gw(request).catalogue.entries()
    ]


async def list_agents(request: web.Request) -> web.Response:
    return web.json_response({"agents": await _agents(request)})


async def get_agent(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    for agent in await _agents(request):
        if agent["name"].casefold() == name.casefold():
            return web.json_response(agent)
    raise ApiError(404, "unknown_agent", f"no agent named {name!r}")


# -- messages -----------------------------------------------------------------


async def _json_body(request: web.Request) -> Any:
    raw = await request.read()
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, RecursionError, ValueError) as exc:
        # JSONDecodeError is a ValueError; so are integers past Python's digit limit,
        # and a body nested past the recursion limit raises RecursionError.
        detail = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)[:200]
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {detail}") from exc


async def post_message(request: web.Request) -> web.Response:
    gateway = _gw(request)
    body = SendMessage.model_validate(await _json_body(request))
    spec = (
        gateway.catalogue.by_name(body.agent)
        if body.agent
        else gateway.catalogue.by_channel(body.channel or "")
    )
    if spec is None:
        target = f"agent {body.agent!r}" if body.agent else f"channel {body.channel!r}"
        names = ", ".join(s.name for s in gateway.catalogue.agents()) or "none"
        raise RoutingError(f"no {target} (agents: {names})")
    if body.agent and body.channel and body.channel not in spec.channels:
        raise ApiError(
            422,
            "invalid_body",
            f"channel {body.channel!r} is not one of "
            f"agent {spec.name!r}'s channels ({', '.join(spec.channels)})",
        )
    message_id = new_message_id()
    where = gateway.address_for(spec, body.channel, body.subject, message_id)
    # Someone waits for this write: it goes before the turns' note work, and turns
    # wait to start until it is done (gateway/pressure.py).
    URGENT.set(True)
    with gateway.pressure.accept():
        note = await write_inbound(
            gateway.vault,
            gateway.settings,
            text=body.text,
            agent=spec.name,
            channel=body.channel,
            subject=body.subject,
            sender=body.sender,
            source="http",
            message_id=message_id,
            thread_link=where.link,
        )
    # Registered before the gateway sees the note, so the end cannot be missed.
    done = gateway.waiter(message_id) if body.wait else None
    gateway.submit(note, fresh=True)
    answer: dict[str, Any] = {
        "id": message_id,
        "note": note.path,
        "thread": where.thread_id,
        "status": "queued",
    }
    if done is None:
        return web.json_response(answer, status=202)
    try:
        async with asyncio.timeout(body.timeout_s):
            await done
    except TimeoutError:
        return web.json_response({**answer, "timed_out": True}, status=202)
    finally:
        gateway.forget_waiter(message_id, done)
    turn = await _registry(request).get_turn(message_id)
    assert turn is not None
    return web.json_response({**answer, **message_json(turn)}, status=200)


async def get_message(request: web.Request) -> web.Response:
    message_id = request.match_info["id"]
    turn = await _registry(request).get_turn(message_id)
    if turn is None:
        raise ApiError(404, "unknown_message", f"no message {message_id!r}")
    return web.json_response(message_json(turn))


# -- threads ------------------------------------------------------------------


async def _thread(request: web.Request, channel: str | None = None) -> ThreadRecord:
    thread_id = request.match_info["id"]
    if channel is not None and ":" not in thread_id:
        thread_id = f"{channel}:{thread_id}"
    thread = await _registry(request).get_thread(thread_id)
    if thread is None or (channel is not None and thread.channel != channel):
        raise UnknownThread(thread_id)
    return thread


async def list_threads(request: web.Request) -> web.Response:
    channel = request.match_info.get("ch") or request.query.get("channel")
    threads = await _registry(request).list_threads(
        agent=request.query.get("agent"),
        channel=channel,
        status=request.query.get("status"),
        since=request.query.get("since"),
        limit=_int(request, "limit", 100),
    )
    return web.json_response({"threads": [thread_json(t) for t in threads]})


async def get_thread(request: web.Request) -> web.Response:
    thread = await _thread(request, request.match_info.get("ch"))
    return web.json_response(thread_json(thread))


async def thread_messages(request: web.Request) -> web.StreamResponse:
    thread = await _thread(request, request.match_info.get("ch"))
    turns = await _registry(request).thread_turns(thread.id, limit=_int(request, "limit", 100))
    items = [message_json(t) for t in turns]
    if request.query.get("format") == "jsonl":
        lines = "".join(json.dumps(item) + "\n" for item in items)
        return web.Response(text=lines, content_type="application/x-ndjson")
    return web.json_response({"thread": thread.id, "messages": items})


async def thread_events(request: web.Request) -> web.Response:
    thread = await _thread(request)
    events = await _registry(request).events(
        thread_id=thread.id,
        after_id=_int(request, "after", 0, low=0, high=2**62),
        limit=_int(request, "limit", 200),
    )
    return web.json_response({"thread": thread.id, "events": [event_json(e) for e in events]})


async def intervene(request: web.Request) -> web.Response:
    verb = request.match_info["verb"]
    if verb not in VERBS:
        raise ApiError(404, "not_found", f"no action {verb!r}; use one of {', '.join(VERBS)}")
    thread = await _thread(request)
    updated = await _gw(request).intervene(thread.id, verb, source="http")
    return web.json_response(thread_json(updated))


# -- jobs ---------------------------------------------------------------------


async def list_jobs(request: web.Request) -> web.Response:
    jobs = _gw(request).jobs
    assert jobs is not None
    return web.json_response({"jobs": await jobs.describe()})


async def run_job(request: web.Request) -> web.Response:
    runner = _gw(request).jobs
    assert runner is not None
    job_id = request.match_info["id"]
    job = runner.jobs.get(job_id)
    if job is None:
        raise ApiError(404, "unknown_job", f"no job {job_id!r} (see GET /api/jobs)")
    if not isinstance(job, Job):
        raise ApiError(409, "broken_job", f"job {job_id!r} cannot run: {job.error}")
    message_id = await runner.fire(job)
    if message_id is None:
        raise ApiError(409, "broken_job", f"job {job_id!r} cannot run: no agent {job.agent!r}")
    return web.json_response({"job": job_id, "id": message_id, "status": "queued"}, status=202)


# -- vault webhooks -------------------------------------------------------------


async def vault_webhook(request: web.Request) -> web.Response:
    try:
        paths = parse_webhook(await request.read())
    except VaultError as exc:
        raise ApiError(400, "invalid_webhook", str(exc)) from exc
    seen = await _gw(request).webhook(paths)
    return web.json_response({"notes": len(paths), "read": seen})


# -- events -------------------------------------------------------------------


async def events_stream(request: web.Request) -> web.StreamResponse:
    gateway = _gw(request)
    queue = gateway.bus.subscribe()
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    heartbeat = gateway.settings.sse_heartbeat_s
    try:
        await response.write(b": connected\n\n")
        while True:
            try:
                async with asyncio.timeout(heartbeat):
                    event = await queue.get()
            except TimeoutError:
                await response.write(b": ping\n\n")
                continue
            if event is None:
                await response.write(b"event: dropped\ndata: {}\n\n")
                break
            data = json.dumps(event, default=str)
            await response.write(f"event: {event['type']}\ndata: {data}\n\n".encode())
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        gateway.bus.unsubscribe(queue)
    return response


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/health", health)
    r.add_get("/api/agents", list_agents)
    r.add_get("/api/agents/{name}", get_agent)
    r.add_post("/api/messages", post_message)
    r.add_get("/api/messages/{id}", get_message)
    r.add_get("/api/threads", list_threads)
    r.add_get("/api/threads/{id}", get_thread)
    r.add_get("/api/threads/{id}/messages", thread_messages)
    r.add_get("/api/threads/{id}/events", thread_events)
    r.add_post("/api/threads/{id}/{verb}", intervene)
    r.add_get("/api/events", events_stream)
    r.add_post("/api/webhooks/vault", vault_webhook)
    r.add_get("/api/jobs", list_jobs)
    r.add_post("/api/jobs/{id}/run", run_job)
    r.add_get("/api/channels/{ch}/threads", list_threads)
    r.add_get("/api/channels/{ch}/threads/{id}", get_thread)
    r.add_get("/api/channels/{ch}/threads/{id}/messages", thread_messages)
