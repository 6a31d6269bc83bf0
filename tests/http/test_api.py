from __future__ import annotations

import asyncio
import json

import aiohttp

from tests.helpers.harness import message
from tests.http.conftest import Api


async def test_send_with_wait_returns_the_reply(api: Api) -> None:
    status, body = await api.post(
        "/api/messages",
        {
            "agent": "helper",
            "text": "hello there",
            "subject": "acme",
            "sender": "crm",
            "wait": True,
            "timeout_s": 10,
        },
    )
    assert status == 200, body
    assert body["status"] == "done"
    assert body["reply"] == "scripted reply to: hello there"
    assert body["thread"] == "help:helper--acme"
    note = api.harness.note(body["note"])
    assert note.frontmatter["status"] == "done" and note.frontmatter["sender"] == "crm"


async def test_async_send_then_get_shows_done(api: Api) -> None:
    status, accepted = await api.post("/api/messages", {"channel": "help", "text": "later"})
    assert status == 202, accepted
    assert (api.harness.root / accepted["note"]).exists()  # durable before the 202
    await api.harness.done(1)
    status, body = await api.get(f"/api/messages/{accepted['id']}")
    assert status == 200
    assert body["status"] == "done" and body["reply"] == "scripted reply to: later"


async def test_threads_list_show_and_messages_agree_with_the_vault(api: Api) -> None:
    h = api.harness
    h.write("Inbox/a.md", message("helper", "one", subject="s"))
    await h.done(1)
    h.write("Inbox/b.md", message("helper", "two", subject="s"))
    await h.done(2)
    status, listing = await api.get("/api/threads?agent=helper")
    assert status == 200
    [thread] = listing["threads"]
    note = h.note("Threads/help/helper--s.md").frontmatter
    assert thread["id"] == "help:helper--s"
    assert thread["turn_count"] == note["turn_count"] == 2
    assert thread["session_id"] == note["session"]
    status, shown = await api.get("/api/threads/help:helper--s")
    assert shown == thread
    status, msgs = await api.get("/api/threads/help:helper--s/messages")
    assert [m["text"] for m in msgs["messages"]] == ["one", "two"]
    assert [m["reply"] for m in msgs["messages"]] == [
        "scripted reply to: one",
        "scripted reply to: two",
    ]
    status, lines = await api.get("/api/threads/help:helper--s/messages?format=jsonl")
    assert [json.loads(line)["text"] for line in lines.splitlines()] == ["one", "two"]
    status, scoped = await api.get("/api/channels/help/threads/helper--s/messages")
    assert scoped["messages"] == msgs["messages"]
    status, events = await api.get("/api/threads/help:helper--s/events")
    assert status == 200 and isinstance(events["events"], list)


async def test_pause_holds_a_queued_message_and_resume_releases_it(api: Api) -> None:
    h = api.harness
    h.write("Inbox/a.md", message("helper", "first", subject="p"))
    await h.done(1)
    status, paused = await api.post("/api/threads/help:helper--p/pause")
    assert status == 200 and paused["status"] == "paused"
    assert h.note("Threads/help/helper--p.md").frontmatter["status"] == "paused"
    h.write("Inbox/b.md", message("helper", "second", subject="p"))
    await h.wait_count(("turn.queued",), 2)
    assert h.gateway is not None
    assert not h.gateway.queues.running
    assert len(h.backend.calls) == 1
    status, resumed = await api.post("/api/threads/help:helper--p/resume")
    assert resumed["status"] == "idle"
    await h.done(2)
    assert len(h.backend.calls) == 2


async def test_terminate_stops_a_running_turn_within_a_second(api: Api) -> None:
    h = api.harness
    h.backend.gate = asyncio.Event()  # the turn runs until someone stops it
    h.write("Inbox/a.md", message("helper", "long job", subject="t"))
    await h.wait_count(("turn.started",), 1)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    status, body = await api.post("/api/threads/help:helper--t/terminate")
    assert status == 200 and body["status"] == "terminated"
    [done] = await h.done(1, timeout=1.0)
    assert loop.time() - t0 < 1.0
    assert done["status"] == "error" and done["error"] == "terminated by an operator"
    assert h.note("Threads/help/helper--t.md").frontmatter["status"] == "terminated"


async def test_reset_makes_the_next_turn_start_a_new_session(api: Api) -> None:
    h = api.harness
    h.write("Inbox/a.md", message("helper", "one", subject="r"))
    await h.done(1)
    _, before = await api.get("/api/threads/help:helper--r")
    _, after = await api.post("/api/threads/help:helper--r/reset")
    assert after["session_id"] != before["session_id"] and not after["session_started"]
    h.write("Inbox/b.md", message("helper", "two", subject="r"))
    await h.done(2)
    second = h.backend.calls[-1].request
    assert second.resume is False and second.session_id == after["session_id"]
    assert "session=new" in second.message


async def test_control_paused_in_the_thread_note_pauses_the_thread(api: Api) -> None:
    h = api.harness
    h.write("Inbox/a.md", message("helper", "one", subject="v"))
    await h.done(1)
    path = h.root / "Threads/help/helper--v.md"
    path.write_text(path.read_text().replace("status: idle", "status: idle\ncontrol: paused"))
    await h.wait_event(lambda e: e["type"] == "thread.status" and e["status"] == "paused")
    h.write("Inbox/b.md", message("helper", "two", subject="v"))
    await h.wait_count(("turn.queued",), 2)
    assert len(h.backend.calls) == 1
    path.write_text(path.read_text().replace("control: paused\n", ""))
    await h.done(2)
    assert len(h.backend.calls) == 2


async def test_events_stream_shows_start_interim_and_end(api: Api) -> None:
    seen: list[str] = []
    async with api.session.get(api.url + "/api/events", headers=api.auth()) as stream:
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        api.harness.write("Inbox/a.md", message("helper", "stream me"))

        async def read() -> None:
            async for raw in stream.content:
                line = raw.decode().strip()
                if line.startswith("event: "):
                    seen.append(line.removeprefix("event: "))
                    if seen[-1] == "turn.done":
                        return

        await asyncio.wait_for(read(), 10)
    assert seen.index("turn.started") < seen.index("turn.text") < seen.index("turn.done")


async def test_health_needs_no_token_and_reports_preflight(api: Api) -> None:
    async with api.session.get(api.url + "/health") as r:
        body = await r.json()
    assert r.status == 200 and body["ok"] and body["agents"] == 1
    assert body["preflight"] == {"claude": {"ok": False}}


async def test_agents_listing(api: Api) -> None:
    status, body = await api.get("/api/agents")
    assert status == 200
    [agent] = body["agents"]
    assert (agent["name"], agent["channels"], agent["status"]) == ("helper", ["help"], "idle")
    status, one = await api.get("/api/agents/helper")
    assert one == agent
    status, missing = await api.get("/api/agents/nobody")
    assert status == 404 and missing["error"]["code"] == "unknown_agent"


async def test_client_mistakes_are_4xx_json_and_write_nothing(api: Api) -> None:
    inbox_before = sorted(p.name for p in (api.harness.root / "Inbox").rglob("*"))
    cases = [
        (b"{not json", "invalid_json", 400),
        (json.dumps({"agent": "helper", "text": 5}).encode(), "invalid_body", 422),
        (json.dumps({"agent": "helper"}).encode(), "invalid_body", 422),
        (json.dumps({"text": "who?"}).encode(), "invalid_body", 422),
        (json.dumps({"agent": "nobody", "text": "hi"}).encode(), "unknown_agent", 404),
        (json.dumps({"agent": "helper", "text": "x", "extra": 1}).encode(), "invalid_body", 422),
        (json.dumps([1, 2]).encode(), "invalid_body", 422),
        (b"\xff\xfe", "invalid_json", 400),
        (json.dumps({"agent": "helper", "text": "x" * 70_000}).encode(), "body_too_large", 413),
    ]
    for raw, code, expected in cases:
        async with api.session.post(
            api.url + "/api/messages",
            data=raw,
            headers={**api.auth(), "Content-Type": "application/json"},
        ) as r:
            body = await r.json()
            assert (r.status, body["error"]["code"]) == (expected, code), (raw[:40], body)
            assert body["error"]["message"]
    status, body = await api.get("/api/threads/nope:nope")
    assert status == 404 and body["error"]["code"] == "unknown_thread"
    status, body = await api.post("/api/threads/nope:nope/pause")
    assert status == 404
    status, body = await api.get("/api/nowhere")
    assert status == 404 and body["error"]["code"] == "not_found"
    status, body = await api.get("/api/threads?limit=abc")
    assert status == 400 and body["error"]["code"] == "bad_query"
    assert sorted(p.name for p in (api.harness.root / "Inbox").rglob("*")) == inbox_before


async def test_a_missing_or_wrong_token_is_401(api: Api) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
        async with api.session.get(api.url + "/api/threads", headers=headers) as r:
            body = await r.json()
        assert r.status == 401 and body["error"]["code"] == "unauthorized"
    async with api.session.post(
        api.url + "/api/messages", json={"agent": "helper", "text": "x"}
    ) as r:
        assert r.status == 401
    assert not list((api.harness.root / "Inbox").rglob("*.md"))


async def test_slow_event_clients_are_dropped_not_waited_for(api: Api) -> None:
    gateway = api.harness.gateway
    assert gateway is not None
    queue = gateway.bus.subscribe()
    for i in range(gateway.bus._buffer + 5):
        gateway.bus.publish("test.flood", i=i)
    items = [queue.get_nowait() for _ in range(queue.qsize())]
    assert items[-1] is None  # told it was dropped
    assert queue not in gateway.bus._subscribers


async def test_http_client_survives_connection_reuse(api: Api) -> None:
    conn = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=conn) as session:
        for _ in range(3):
            async with session.get(api.url + "/api/agents", headers=api.auth()) as r:
                assert r.status == 200


async def test_jobs_are_listed_and_can_be_run_now(api: Api) -> None:
    h = api.harness
    h.write(
        "Jobs/brief.md",
        "---\ntags: [agent/job]\nagent: helper\ncron: '0 9 * * *'\n"
        "subject: daily\n---\nThe brief, please.\n",
    )
    await h.wait_for_file("Jobs/brief.md", lambda fm: "next_run_at" in fm)
    status, body = await api.get("/api/jobs")
    assert status == 200
    [job] = body["jobs"]
    assert (job["id"], job["status"], job["cron"]) == ("brief", "enabled", "0 9 * * *")
    status, fired = await api.post("/api/jobs/brief/run")
    assert status == 202 and fired["job"] == "brief"
    [done] = await h.done(1)
    assert done["turn"] == fired["id"] and done["thread"] == "help:helper--daily"
    status, missing = await api.post("/api/jobs/nope/run")
    assert status == 404 and missing["error"]["code"] == "unknown_job"


async def test_the_vault_webhook_reads_the_named_notes_now(api: Api) -> None:
    h = api.harness
    h.write("Inbox/hook.md", message("helper", "via the trigger"))
    payload = {
        "trigger": "vaultgate",
        "event": "created",
        "note": {"id": "1", "path": "Inbox/hook", "content": "via the trigger"},
    }
    token = api.auth()["Authorization"].removeprefix("Bearer ")
    async with api.session.post(f"{api.url}/api/webhooks/vault?token={token}", json=payload) as r:
        assert r.status == 200, await r.text()
        assert await r.json() == {"notes": 1, "read": 1}
    [done] = await h.done(1)
    assert done["status"] == "done"
    status, bad = await api.post("/api/webhooks/vault", [1, 2])
    assert status == 400 and bad["error"]["code"] == "invalid_webhook"
    async with api.session.post(f"{api.url}/api/webhooks/vault?token=wrong", json=payload) as r:
        assert r.status == 401


async def test_hostile_bodies_and_headers_are_4xx_never_5xx(api: Api) -> None:
    before = sorted((api.harness.root / "Inbox").rglob("*.md"))
    cases: list[tuple[bytes, dict[str, str], int]] = [
        (b"[" * 50_000, {}, 400),
        (b"1" * 5000, {}, 400),
        (json.dumps({"agent": "helper", "text": "a\x00b"}).encode(), {}, 422),
        (b"not compressed", {"Content-Encoding": "gzip"}, 400),
    ]
    for raw, extra, expected in cases:
        async with api.session.post(
            api.url + "/api/messages",
            data=raw,
            headers={**api.auth(), "Content-Type": "application/json", **extra},
        ) as r:
            assert r.status == expected, (raw[:30], await r.text())
            assert (await r.json())["error"]["code"]
    assert sorted((api.harness.root / "Inbox").rglob("*.md")) == before
