from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.vault_adapter.remote_fake import FakeParachuteVault, Lost, remote_vault
from vault_adapter import (
    FolderVault,
    NoteExists,
    NoteNotFound,
    VaultError,
    VaultEvent,
    VaultPathError,
    WriteConflict,
)
from vault_adapter.remote import RemotePoller, RemoteVault, parse_webhook
from vault_adapter.remote_http import RemoteHTTPError, RemoteUnavailable

TIMEOUT = 5.0


@pytest.fixture
def fake() -> Iterator[FakeParachuteVault]:
    fake = FakeParachuteVault()
    with fake.mocked():
        yield fake


@pytest.fixture
async def remote(fake: FakeParachuteVault, tmp_path: Path) -> AsyncIterator[RemoteVault]:
    async with remote_vault(fake, tmp_path / "state") as vault:
        yield vault


def sent(request: httpx.Request) -> Any:
    return json.loads(request.content)


# -- mapping ----------------------------------------------------------------------


async def test_a_server_note_reads_as_tags_then_metadata_then_body(
    fake: FakeParachuteVault, remote: RemoteVault
) -> None:
    fake.put(
        "Inbox/q",
        "What changed?\n",
        metadata={"agent": "researcher", "unknown": {"keep": "me"}},
        tags=["agent/message"],
    )
    note = await remote.read("Inbox/q.md")
    assert note.path == "Inbox/q.md"
    assert list(note.frontmatter) == ["tags", "agent", "unknown"]
    assert note.tags == ("agent/message",)
    assert note.body == "What changed?\n"
    assert note.mtime > 0


async def test_requests_carry_the_bearer_token_and_one_escaped_path_segment(
    fake: FakeParachuteVault, remote: RemoteVault
) -> None:
    fake.put("Inbox/deep/q w", "x")
    await remote.read("Inbox/deep/q w.md")
    request = fake.requests[-1]
    assert request.headers["authorization"] == "Bearer t0ken"
    assert request.url.raw_path.startswith(b"/vault/default/api/notes/Inbox%2Fdeep%2Fq%20w")


async def test_a_note_with_the_same_text_has_the_same_hash_as_in_a_folder_vault(
    remote: RemoteVault, vault: FolderVault
) -> None:
    fields = {"tags": ["agent/thread"], "turn_count": 2, "cost_usd": 0.5, "subject": "acme"}
    ours = await remote.write("Threads/t.md", fields, "# thread\n")
    theirs = await vault.write("Threads/t.md", fields, "# thread\n")
    assert ours.content_hash == theirs.content_hash
    assert ours.frontmatter == theirs.frontmatter


async def test_only_markdown_paths_are_accepted(remote: RemoteVault) -> None:
    with pytest.raises(VaultPathError):
        await remote.write("notes/data.csv", {}, "a,b")


async def test_non_markdown_pathless_and_hidden_notes_are_not_listed(
    fake: FakeParachuteVault, remote: RemoteVault
) -> None:
    fake.put("Agents/a", "x")
    fake.put("Agents/table", "a,b", extension="csv")
    fake.put(".obsidian/workspace", "x")
    fake._create(None, "a pathless jot", None, ())
    assert await remote.list_notes() == ["Agents/a.md"]
    assert [item.path async for item in remote.rescan()] == ["Agents/a.md"]


async def test_a_name_that_matches_another_notes_id_is_not_that_note(
    fake: FakeParachuteVault, remote: RemoteVault
) -> None:
    other = fake.put("Elsewhere/x", "not me")
    assert not await remote.exists(other["id"] + ".md")
    with pytest.raises(NoteNotFound):
        await remote.read(other["id"] + ".md")


async def test_find_by_field_compares_non_string_values_locally(
    fake: FakeParachuteVault, remote: RemoteVault
) -> None:
    fake.put("a", "x", metadata={"turn_count": 2, "status": "done"})
    fake.put("b", "x", metadata={"turn_count": "2", "status": "queued"})
    assert await remote.find_by_field("turn_count", 2) == ["a.md"]
    assert await remote.find_by_field("status", "queued") == ["b.md"]
    assert any("meta%5Bstatus%5D=queued" in str(r.url) for r in fake.requests)


# -- errors ------------------------------------------------------------------------


async def test_a_missing_note_is_note_not_found_everywhere(remote: RemoteVault) -> None:
    assert not await remote.exists("nope.md")
    with pytest.raises(NoteNotFound):
        await remote.read("nope.md")
    with pytest.raises(NoteNotFound):
        await remote.update_fields("nope.md", {"a": 1})
    with pytest.raises(NoteNotFound):
        await remote.delete("nope.md")


async def test_a_create_that_loses_the_race_on_the_server_is_note_exists(
    fake: FakeParachuteVault, remote: RemoteVault
) -> None:
    # Someone else's note lands between our decision to create and our POST.
    fake.put("Messages/r", "theirs")
    with pytest.raises(NoteExists):
        await remote.create("Messages/r.md", {"a": 1}, "ours")
    assert fake.calls("POST")[-1].url.path.endswith("/api/notes")
    assert fake.find("Messages/r")["content"] == "theirs"


async def test_a_create_whose_answer_was_lost_is_not_reported_as_a_conflict(
    fake: FakeParachuteVault, remote: RemoteVault
) -> None:
    fake.fail_next(Lost(502))  # lands on the server, the answer does not come back
    note = await remote.create("Messages/r.md", {"a": 1}, "ours")
    assert note.body == "ours"
    assert len(fake.calls("POST")) == 2
    assert len(fake.notes) == 1


async def test_5xx_then_success_is_retried(fake: FakeParachuteVault, remote: RemoteVault) -> None:
    fake.put("n", "x")
    fake.fail_next(503, 500)
    assert (await remote.read("n.md")).body == "x"
    assert len(fake.calls("GET")) == 3


async def test_lasting_5xx_is_a_vault_error_with_the_status(
    fake: FakeParachuteVault, remote: RemoteVault
) -> None:
    fake.fail_next(503, 503, 503)
    with pytest.raises(RemoteHTTPError) as info:
        await remote.read("n.md")
    assert info.value.status == 503
    assert "injected HTTP 503" in str(info.value)


async def test_4xx_is_not_retried_and_carries_the_server_message(
    fake: FakeParachuteVault, remote: RemoteVault
) -> None:
    fake.fail_next(
        httpx.Response(
            422, json={"error_type": "schema_validation", "message": "status must be one of ..."}
        )
    )
    with pytest.raises(RemoteHTTPError) as info:
        await remote.write("n.md", {"status": "bogus"}, "")
    assert (info.value.status, info.value.error_type) == (422, "schema_validation")
    assert info.value.detail == "status must be one of ..."
    assert len(fake.requests) == 1


async def test_a_wrong_token_is_a_vault_error_naming_the_status(
    fake: FakeParachuteVault, tmp_path: Path
) -> None:
    async with remote_vault(fake, tmp_path, token="wrong") as vault:
        with pytest.raises(RemoteHTTPError) as info:
            await vault.read("n.md")
    assert info.value.status == 401


async def test_a_connect_timeout_then_success_is_retried(
    fake: FakeParachuteVault, remote: RemoteVault
) -> None:
    fake.put("n", "x")
    fake.fail_next(httpx.ConnectTimeout)
    assert (await remote.read("n.md")).body == "x"


async def test_a_lasting_timeout_is_a_vault_error(
    fake: FakeParachuteVault, remote: RemoteVault
) -> None:
    fake.fail_next(httpx.ConnectTimeout, httpx.ReadTimeout, httpx.ConnectError)
    with pytest.raises(RemoteUnavailable) as info:
        await remote.read("n.md")
    assert isinstance(info.value, VaultError)
    assert info.value.attempts == 3
    assert "ConnectError" in str(info.value)


async def test_malformed_json_is_a_vault_error(
    fake: FakeParachuteVault, remote: RemoteVault
) -> None:
    fake.fail_next(httpx.Response(200, content=b'{"id": "x", "content": '))
    with pytest.raises(VaultError, match="malformed JSON"):
        await remote.read("n.md")


@pytest.mark.parametrize(
    "answer",
    [[1, 2], {"id": 7, "path": "n"}, {"path": "n", "content": "x"}, {"id": "x", "tags": "a"}],
)
async def test_an_unexpected_note_shape_is_a_vault_error(
    fake: FakeParachuteVault, remote: RemoteVault, answer: Any
) -> None:
    fake.fail_next(httpx.Response(200, json=answer))
    with pytest.raises(VaultError, match="unexpected note shape"):
        await remote.read("n.md")


async def test_a_list_that_is_not_a_list_is_a_vault_error(
    fake: FakeParachuteVault, remote: RemoteVault
) -> None:
    fake.fail_next(httpx.Response(200, json={"notes": "many"}))
    with pytest.raises(VaultError, match="expected a list of notes"):
        await remote.list_notes()


# -- updates -------------------------------------------------------------------------


async def test_update_fields_sends_only_the_named_fields_with_the_concurrency_token(
    fake: FakeParachuteVault, remote: RemoteVault
) -> None:
    record = fake.put(
        "Inbox/q", "keep me\n", metadata={"agent": "r", "unknown": {"keep": "me"}, "error": "x"}
    )
    note = await remote.update_fields("Inbox/q.md", {"status": "queued"}, remove=("error",))
    patch = sent(fake.calls("PATCH")[-1])
    assert patch == {
        "metadata": {"error": None, "status": "queued"},
        "if_updated_at": patch["if_updated_at"],
    }
    assert patch["if_updated_at"] < record["updatedAt"]
    assert record["metadata"] == {"agent": "r", "unknown": {"keep": "me"}, "status": "queued"}
    assert record["content"] == "keep me\n"
    assert note.frontmatter == record["metadata"]


async def test_update_fields_retries_when_the_note_changed_between_read_and_write(
    fake: FakeParachuteVault, remote: RemoteVault
) -> None:
    fake.put("Inbox/q", "original\n", metadata={"owner": "alice"})
    edits = iter([{"content": "edited by a person\n", "metadata": {"owner": "bob"}}])

    def person_saves_just_before_our_patch(record: dict[str, Any]) -> None:
        edit = next(edits, None)
        if edit is not None:
            fake.edit(record["path"], **edit)

    fake.before_update = person_saves_just_before_our_patch
    note = await remote.update_fields("Inbox/q.md", {"status": "done"})
    assert note.body == "edited by a person\n"
    assert note.frontmatter == {"owner": "bob", "status": "done"}
    assert len(fake.calls("PATCH")) == 2


async def test_update_fields_gives_up_with_write_conflict_if_the_note_never_settles(
    fake: FakeParachuteVault, remote: RemoteVault
) -> None:
    fake.put("busy", "x")
    fake.before_update = lambda record: fake.edit("busy", metadata={"n": len(fake.requests)})
    with pytest.raises(WriteConflict):
        await remote.update_fields("busy.md", {"status": "done"})


async def test_append_once_uses_the_servers_append(
    fake: FakeParachuteVault, remote: RemoteVault
) -> None:
    fake.put("t", "# thread", metadata={"turn_count": 0})
    await remote.update_fields(
        "t.md", {"turn_count": 1}, append_once=("<!-- 1 -->", "<!-- 1 -->\n")
    )
    patch = sent(fake.calls("PATCH")[-1])
    assert patch["append"] == "\n<!-- 1 -->\n"
    assert "content" not in patch
    assert fake.find("t")["content"] == "# thread\n<!-- 1 -->\n"


async def test_concurrent_field_updates_lose_nothing(remote: RemoteVault) -> None:
    await remote.write("n.md", {"title": "t"}, "body\n")
    await asyncio.gather(*(remote.update_fields("n.md", {f"k{i}": i}) for i in range(20)))
    note = await remote.read("n.md")
    assert {f"k{i}": i for i in range(20)}.items() <= note.frontmatter.items()


async def test_write_replaces_tags_fields_and_body(
    fake: FakeParachuteVault, remote: RemoteVault
) -> None:
    fake.put("n", "old", metadata={"a": 1, "b": 2}, tags=["x", "y"])
    note = await remote.write("n.md", {"tags": ["y", "z"], "b": 3}, "new")
    assert note.frontmatter == {"tags": ["y", "z"], "b": 3}
    assert sent(fake.calls("PATCH")[-1])["tags"] == {"add": ["z"], "remove": ["x"]}


async def test_a_field_set_to_none_is_removed(
    fake: FakeParachuteVault, remote: RemoteVault
) -> None:
    fake.put("n", "x", metadata={"status": "error", "last_error": "boom"})
    note = await remote.update_fields("n.md", {"status": "idle", "last_error": None})
    assert note.frontmatter == {"status": "idle"}


async def test_rewrite_sees_the_whole_text(fake: FakeParachuteVault, remote: RemoteVault) -> None:
    fake.put("n", "body\n", metadata={"a": 1})
    note = await remote.rewrite("n.md", lambda text: text.replace("a: 1", "a: 2"))
    assert note is not None and note.frontmatter == {"a": 2}
    assert await remote.rewrite("n.md", lambda text: "---\nbroken: [\n---\n") is None
    assert fake.find("n")["metadata"] == {"a": 2}


# -- the poller ----------------------------------------------------------------------


@pytest.fixture
async def poller(remote: RemoteVault) -> AsyncIterator[RemotePoller]:
    async with remote.watch() as watcher:
        yield watcher


async def next_event(watcher: RemotePoller) -> VaultEvent:
    return await asyncio.wait_for(watcher.get(), TIMEOUT)


async def test_the_poller_yields_one_event_per_change(
    fake: FakeParachuteVault, remote: RemoteVault, poller: RemotePoller
) -> None:
    fake.put("Inbox/a", "hello", metadata={"agent": "r"})
    created = await next_event(poller)
    assert (created.kind, created.path) == ("created", "Inbox/a.md")
    assert created.note is not None and created.note.body == "hello"
    fake.edit("Inbox/a", content="hello again")
    modified = await next_event(poller)
    assert (modified.kind, modified.path) == ("modified", "Inbox/a.md")
    fake.put("sentinel", "s")
    assert (await next_event(poller)).path == "sentinel.md"
    assert poller.pending() == 0 and poller._queue.empty()


async def test_the_poller_is_silent_about_our_own_writes(
    fake: FakeParachuteVault, remote: RemoteVault
) -> None:
    fake.put("human", "x", metadata={"a": 1})
    watcher = remote.watch()
    watcher.full_scan_every = 2  # every second poll also lists everything (deletions)
    await watcher.start()
    try:
        await remote.write("Messages/reply.md", {"tags": ["agent/message"]}, "reply")
        await remote.update_fields("human.md", {"status": "done"})
        await remote.create("Threads/t.md", {"turn_count": 1}, "")
        await remote.update_fields("Threads/t.md", {"turn_count": 2}, append_once=("m", "m\n"))
        await remote.delete("Messages/reply.md")
        fake.put("sentinel", "after our writes")
        event = await next_event(watcher)
        assert event.path == "sentinel.md"
        await asyncio.sleep(0.2)  # a few more polls, full scans included
        assert watcher._queue.empty()
    finally:
        await watcher.stop()


async def test_a_poll_that_sees_our_write_before_we_do_stays_silent(
    fake: FakeParachuteVault, remote: RemoteVault
) -> None:
    fake.put("n", "x", metadata={"a": 1})
    watcher = RemotePoller(remote, full_scan_every=0)
    await watcher.baseline()  # polls are driven by hand here
    polls: list[asyncio.Task[list[VaultEvent]]] = []

    async def poll_before_our_answer_arrives(request: httpx.Request) -> None:
        if request.method == "PATCH":
            polls.append(asyncio.create_task(watcher.poll()))
            await asyncio.sleep(0.05)  # the poll reads the new version meanwhile

    fake.on_applied = poll_before_our_answer_arrives
    await remote.update_fields("n.md", {"status": "done"})
    fake.on_applied = None
    assert await polls[0] == []
    assert [r.method for r in fake.requests[-2:]] == ["PATCH", "GET"]  # the poll's read


async def test_a_human_edit_after_our_write_is_seen(
    fake: FakeParachuteVault, remote: RemoteVault, poller: RemotePoller
) -> None:
    await remote.write("n.md", {"status": "done"}, "ours\n")
    fake.edit("n", content="edited by a person\n")
    event = await next_event(poller)
    assert event.kind == "modified"
    assert event.note is not None and event.note.body == "edited by a person\n"


async def test_deletions_are_found_by_the_full_scan(
    fake: FakeParachuteVault, remote: RemoteVault
) -> None:
    fake.put("a", "x")
    fake.put("b", "x")
    watcher = RemotePoller(remote, full_scan_every=2)
    await watcher.baseline()  # polls are driven by hand here
    assert await watcher.poll() == []
    fake.remove("a")
    assert await watcher.poll() == [VaultEvent("deleted", "a.md")]
    assert await watcher.poll() == []


async def test_each_poll_asks_only_for_notes_updated_since_the_newest_seen(
    fake: FakeParachuteVault, tmp_path: Path
) -> None:
    async with remote_vault(fake, tmp_path, poll_overlap_s=0.0) as vault:
        for i in range(5):
            fake.put(f"old{i}", "x")
        watcher = RemotePoller(vault, full_scan_every=0)
        await watcher.baseline()
        fake.advance(10)
        fake.put("new", "x")
        events = await watcher.poll()
        assert [e.path for e in events] == ["new.md"]
        query = fake.calls("GET")[-1].url.params
        assert query["meta[updated_at][gte]"] == fake.find("old4")["updatedAt"]
        assert query["include_content"] == "true"


async def test_the_poller_keeps_polling_through_server_errors(
    fake: FakeParachuteVault, remote: RemoteVault, poller: RemotePoller
) -> None:
    fake.fail_next(503, 503, 503, httpx.ConnectTimeout, httpx.ConnectTimeout, httpx.ConnectTimeout)
    fake.put("after", "outage")
    assert (await next_event(poller)).path == "after.md"


async def test_a_broken_note_event_carries_the_parse_error(
    fake: FakeParachuteVault, remote: RemoteVault, poller: RemotePoller
) -> None:
    fake.put("bad", "binary\x00content")
    event = await next_event(poller)
    assert event.note is None
    assert event.error is not None and event.error.path == "bad.md"


# -- webhooks --------------------------------------------------------------------------


def trigger_body(note: dict[str, Any], event: str = "created") -> bytes:
    """What parachute-vault's ``send: json`` trigger POSTs (src/triggers.ts dispatchJson)."""
    return json.dumps({"trigger": "vaultgate", "event": event, "note": note}).encode()


def test_parse_webhook_reads_a_parachute_trigger_payload() -> None:
    note = {
        "id": "01J0000000000000000000000",
        "content": "hi",
        "path": "Inbox/hello",
        "tags": ["agent/message"],
        "metadata": {"agent": "researcher"},
        "attachments": [],
        "createdAt": "2026-05-01T10:00:00.000Z",
        "updatedAt": "2026-05-01T10:00:01.000Z",
    }
    assert parse_webhook(trigger_body(note)) == ["Inbox/hello.md"]
    both = json.dumps([json.loads(trigger_body(note)), json.loads(trigger_body(note))]).encode()
    assert parse_webhook(both) == ["Inbox/hello.md"]


@pytest.mark.parametrize(
    "note",
    [
        {"id": "1", "content": "jot"},
        {"id": "1", "path": "Data/t", "extension": "csv"},
        {"id": "1", "path": ".obsidian/x"},
        {"id": "1", "path": "../../etc/passwd"},
    ],
)
def test_parse_webhook_leaves_out_notes_the_gateway_cannot_address(note: dict[str, Any]) -> None:
    assert parse_webhook(trigger_body(note)) == []


@pytest.mark.parametrize("body", [b"not json", b'"a string"', b'{"note": {"path": 3}}', b"\xff"])
def test_parse_webhook_refuses_a_malformed_body(body: bytes) -> None:
    with pytest.raises(VaultError):
        parse_webhook(body)
