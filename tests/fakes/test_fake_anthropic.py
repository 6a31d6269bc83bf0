"""The fake Anthropic API: its wire format, and the real claude CLI holding turns against it."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sandbox import Engine, SandboxSpec, start
from tests.fakes.fake_anthropic import (
    Bash,
    Failure,
    FakeAnthropic,
    RecordedRequest,
    Text,
    ToolCall,
    Usage,
    tool_result_text,
)

SYSTEM_PROMPT = "You are the vaultgate test agent. Answer briefly."


@pytest.fixture
async def api() -> Any:
    async with FakeAnthropic(default_text="default answer") as fake:
        yield fake


# -- the wire format, checked with a plain HTTP client ------------------------------------------


async def post(api: FakeAnthropic, body: dict[str, Any], path: str = "/v1/messages") -> Any:
    async with aiohttp.ClientSession() as http, http.post(api.url + path, json=body) as response:
        return response.status, dict(response.headers), await response.read()


def sse_events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for chunk in raw.decode().strip().split("\n\n"):
        name, data = chunk.split("\n")
        assert name.startswith("event: ") and data.startswith("data: ")
        events.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return events


REQUEST = {
    "model": "claude-test",
    "max_tokens": 100,
    "system": [{"type": "text", "text": "sys one"}, {"type": "text", "text": "sys two"}],
    "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
}


async def test_streamed_text_follows_the_api_event_order(api: FakeAnthropic) -> None:
    api.script(Text("a fairly long answer, in several deltas", usage=Usage(7, 3)))
    status, headers, raw = await post(api, REQUEST | {"stream": True})
    assert status == 200
    assert headers["Content-Type"] == "text/event-stream"
    events = sse_events(raw)
    names = [name for name, _ in events]
    assert names[:4] == ["message_start", "ping", "content_block_start", "content_block_delta"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert all(name == data["type"] for name, data in events)
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert text == "a fairly long answer, in several deltas"
    assert events[0][1]["message"]["model"] == "claude-test"
    assert events[0][1]["message"]["usage"]["input_tokens"] == 7
    assert events[-2][1]["delta"]["stop_reason"] == "end_turn"
    assert events[-2][1]["usage"] == {"output_tokens": 3}


async def test_streamed_tool_call_sends_its_input_as_json_deltas(api: FakeAnthropic) -> None:
    api.script(
        ToolCall(name="Bash", input={"command": "ls -la /tmp"}, text="Let me look.", id="t1")
    )
    _, _, raw = await post(api, REQUEST | {"stream": True})
    events = sse_events(raw)
    starts = [d["content_block"] for n, d in events if n == "content_block_start"]
    assert starts == [
        {"type": "text", "text": ""},
        {"type": "tool_use", "id": "t1", "name": "Bash", "input": {}},
    ]
    partial = "".join(
        d["delta"]["partial_json"]
        for n, d in events
        if n == "content_block_delta" and d["delta"]["type"] == "input_json_delta"
    )
    assert json.loads(partial) == {"command": "ls -la /tmp"}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


async def test_non_streaming_request_gets_one_message(api: FakeAnthropic) -> None:
    api.script(Text("plain"))
    status, _, raw = await post(api, REQUEST)
    message = json.loads(raw)
    assert status == 200
    assert message["type"] == "message"
    assert message["content"] == [{"type": "text", "text": "plain"}]
    assert message["stop_reason"] == "end_turn"


async def test_count_tokens_answers_plainly(api: FakeAnthropic) -> None:
    status, _, raw = await post(api, REQUEST, "/v1/messages/count_tokens")
    assert status == 200
    assert json.loads(raw)["input_tokens"] > 0
    assert api.conversation == []


@pytest.mark.parametrize(
    ("status", "error_type"),
    [(429, "rate_limit_error"), (500, "api_error"), (529, "overloaded_error")],
)
async def test_failure_has_the_api_error_shape(
    api: FakeAnthropic, status: int, error_type: str
) -> None:
    api.script(Failure(status, "try later", retry_after=2))
    got, headers, raw = await post(api, REQUEST | {"stream": True})
    body = json.loads(raw)
    assert got == status
    assert body["type"] == "error"
    assert body["error"] == {"type": error_type, "message": "try later"}
    assert body["request_id"].startswith("req_")
    assert headers["Retry-After"] == "2"


async def test_empty_script_answers_with_the_default_text(api: FakeAnthropic) -> None:
    _, _, raw = await post(api, REQUEST)
    assert json.loads(raw)["content"][0]["text"] == "default answer"


async def test_requests_are_recorded_with_headers_and_body(api: FakeAnthropic) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            api.url + "/v1/messages",
            json=REQUEST,
            headers={"X-Claude-Code-Session-Id": "abc"},
        ),
    ):
        pass
    [request] = api.conversation
    assert request.session_id == "abc"
    assert request.system_blocks == ["sys one", "sys two"]
    assert request.last_user_text == "hi"
    assert not request.stream


async def test_scripted_function_answers_from_the_request(api: FakeAnthropic) -> None:
    api.script(lambda request: Text(f"you said {request.last_user_text}"))
    _, _, raw = await post(api, REQUEST)
    assert json.loads(raw)["content"][0]["text"] == "you said hi"


async def test_gate_holds_the_reply_until_released(api: FakeAnthropic) -> None:
    gate = asyncio.Event()
    api.script(Text("released", gate=gate))
    call = asyncio.create_task(post(api, REQUEST))
    async with asyncio.timeout(10):
        await api.wait_for_conversation(1)
    assert not call.done()
    gate.set()
    async with asyncio.timeout(10):
        _, _, raw = await call
    assert json.loads(raw)["content"][0]["text"] == "released"


async def test_stop_does_not_wait_for_a_held_reply() -> None:
    api = FakeAnthropic()
    await api.start()
    api.script(Text("never sent", gate=asyncio.Event()))
    call = asyncio.create_task(post(api, REQUEST))
    async with asyncio.timeout(10):
        await api.wait_for_conversation(1)
        started = time.monotonic()
        await api.stop()
    assert time.monotonic() - started < 5
    with pytest.raises(aiohttp.ClientError):
        await call


async def test_cut_stream_ends_without_message_stop(api: FakeAnthropic) -> None:
    api.script(Text("never finished", cut_after=3))
    with pytest.raises(aiohttp.ClientPayloadError):
        await post(api, REQUEST | {"stream": True})


# -- the real claude CLI against the fake -------------------------------------------------------


@dataclass
class Turn:
    events: list[dict[str, Any]]
    returncode: int
    stderr: str
    seconds: float

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event.get("type") == kind]

    @property
    def result(self) -> dict[str, Any]:
        [result] = self.of_type("result")
        return result


async def claude_turn(
    claude: Path,
    api: FakeAnthropic,
    workspace: Path,
    prompt: str,
    *,
    session: str,
    resume: bool = False,
    engine: Engine = "bwrap",
) -> Turn:
    home = workspace / "home"
    home.mkdir(exist_ok=True)
    system_prompt = workspace / "system-prompt.txt"
    system_prompt.write_text(SYSTEM_PROMPT)
    spec = SandboxSpec(
        workspace=workspace,
        ro_binds=(claude.parent,),
        engine=engine,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(home),
            "ANTHROPIC_API_KEY": "x",
            "ANTHROPIC_BASE_URL": api.url,
            "IS_SANDBOX": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        },
    )
    command = [
        str(claude),
        "-p",
        "--output-format", "stream-json",
        "--verbose",
        "--system-prompt-file", str(system_prompt),
        "--max-turns", "3",
        "--tools", "Bash",
        "--permission-mode", "bypassPermissions",
        "--strict-mcp-config",
        "--mcp-config", '{"mcpServers":{}}',
        "--resume" if resume else "--session-id", session,
        "--", prompt,
    ]  # fmt: skip
    started = time.monotonic()
    async with asyncio.timeout(90), await start(spec, command) as proc:
        events = [json.loads(line) async for line in proc.lines()]
        returncode = await proc.wait()
    return Turn(events, returncode, proc.stderr_tail(), time.monotonic() - started)


@pytest.mark.e2e
async def test_claude_completes_a_text_turn_unconfined(
    claude: Path, api: FakeAnthropic, tmp_path: Path
) -> None:
    session = str(uuid.uuid4())
    api.script(Text("hello from the fake"))

    turn = await claude_turn(claude, api, tmp_path, "hello", session=session, engine="none")

    assert turn.returncode == 0, turn.stderr
    [init] = turn.of_type("system")
    assert init["subtype"] == "init" and init["session_id"] == session
    assert turn.result["is_error"] is False
    assert turn.result["result"] == "hello from the fake"
    assert turn.result["usage"]["input_tokens"] == 100
    [request] = api.conversation
    assert request.stream
    assert request.session_id == session
    assert request.system_blocks[-1] == SYSTEM_PROMPT
    assert request.last_user_text == "hello"


@pytest.mark.e2e
async def test_claude_bash_tool_call_runs_inside_the_sandbox(
    claude: Path, api: FakeAnthropic, tmp_path: Path
) -> None:
    workspace = tmp_path / "workspace"
    workspace.mkdir()

    def echo_tool_result(request: RecordedRequest) -> Text:
        return Text("the tool said: " + tool_result_text(request.tool_results[0]))

    api.script(Bash("echo made inside > made.txt; ls /root; ps -e | wc -l"), echo_tool_result)

    turn = await claude_turn(claude, api, workspace, "hello", session=str(uuid.uuid4()))

    assert turn.returncode == 0, turn.stderr
    assert (workspace / "made.txt").read_text() == "made inside\n"
    [tool_result] = api.conversation[-1].tool_results
    output = tool_result_text(tool_result)
    assert "ls: cannot access '/root': No such file or directory" in output
    assert int(output.split()[-1]) < 10  # ps header, bwrap, claude, bash, ps, wc
    assert turn.result["num_turns"] == 2
    assert turn.result["result"] == "the tool said: " + output
    assert [e["message"]["content"][0]["type"] for e in turn.of_type("user")] == ["tool_result"]


@pytest.mark.e2e
async def test_claude_resumed_turn_resends_the_first_exchange(
    claude: Path, api: FakeAnthropic, tmp_path: Path
) -> None:
    session = str(uuid.uuid4())
    api.script(Text("first answer"), Text("second answer"))

    first = await claude_turn(claude, api, tmp_path, "first question", session=session)
    second = await claude_turn(
        claude, api, tmp_path, "second question", session=session, resume=True
    )

    assert (first.result["result"], second.result["result"]) == ("first answer", "second answer")
    assert second.result["session_id"] == session
    # Sessions live under $HOME, in a folder named after the cwd with every non-alphanumeric
    # character turned into "-": resuming needs the same HOME and the same cwd.
    project = re.sub("[^A-Za-z0-9]", "-", str(tmp_path))
    assert (tmp_path / "home/.claude/projects" / project / f"{session}.jsonl").is_file()
    resumed = api.conversation[-1]
    assert resumed.session_id == session
    assert "first question" in resumed.user_texts
    assert resumed.assistant_texts == ["first answer"]
    assert resumed.last_user_text == "second question"


@pytest.mark.e2e
async def test_claude_retries_an_overloaded_api(
    claude: Path, api: FakeAnthropic, tmp_path: Path
) -> None:
    api.script(Failure(529, "Overloaded"), Text("after the retry"))

    turn = await claude_turn(claude, api, tmp_path, "hello", session=str(uuid.uuid4()))

    [retry] = [e for e in turn.of_type("system") if e.get("subtype") == "api_retry"]
    assert retry["error_status"] == 529
    assert turn.result["result"] == "after the retry"
    assert len(api.conversation) == 2


@pytest.mark.e2e
async def test_claude_falls_back_to_a_plain_request_when_the_stream_breaks(
    claude: Path, api: FakeAnthropic, tmp_path: Path
) -> None:
    api.script(Text("this stream breaks", cut_after=3), Text("non-streamed answer"))

    turn = await claude_turn(claude, api, tmp_path, "hello", session=str(uuid.uuid4()))

    assert turn.result["result"] == "non-streamed answer"
    assert [request.stream for request in api.conversation] == [True, False]
