"""End to end: the gateway, the real claude CLI inside real bubblewrap, a fake model API."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.backends import ClaudeBackend
from gateway.prompt import SEPARATOR
from tests.fakes.fake_anthropic import (
    Bash,
    Failure,
    FakeAnthropic,
    Text,
    Usage,
    tool_result_text,
)
from tests.helpers.harness import Harness, message
from tests.helpers.procs import processes_mentioning

pytestmark = pytest.mark.e2e

SECRET = "vaultgate-secret-" + uuid.uuid4().hex
ROLE = "You are the research agent. Answer briefly."


def claude_definition(name: str = "researcher", extra: str = "") -> str:
    return (
        f"---\ntags: [agent/definition]\nname: {name}\nmode: multi-threaded\nbackend: claude\n"
        "tools: [Bash, Read, Write]\npermission_mode: bypassPermissions\n"
        f"{extra}---\n{ROLE}\n"
    )


@pytest.fixture
async def api() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic(default_text="default answer") as fake:
        yield fake


@pytest.fixture
def claude_harness(harness: Harness, api: FakeAnthropic, claude: Path) -> Harness:
    harness.settings = harness.settings.model_copy(
        update={
            "claude_bin": str(claude),
            "turn_retries": 1,
            "retry_backoff_s": 0.2,
            "claude_max_retries": 1,
        }
    )
    env = {
        "PATH": os.environ["PATH"],
        "ANTHROPIC_API_KEY": "test-key",
        "ANTHROPIC_BASE_URL": api.url,
        "CLAUDE_CODE_OAUTH_TOKEN": "second-credential-" + SECRET,
        "VAULTGATE_TEST_SECRET": SECRET,
    }
    harness.extra_backends["claude"] = ClaudeBackend(harness.settings, env=env)
    harness.write("Agents/researcher.md", claude_definition())
    return harness


def result_events(transcript: Path) -> list[dict[str, object]]:
    events = [json.loads(line) for line in transcript.read_text().splitlines() if line.strip()]
    return [e for e in events if e.get("type") == "result"]


async def test_a_thread_resumes_its_session_and_sums_usage(
    claude_harness: Harness, api: FakeAnthropic
) -> None:
    h = claude_harness
    h.write("Subjects/acme.md", "---\nowner: bob\n---\nAcme buys 400 seats.\n")
    api.script(Text("first answer"), Text("second answer"))
    await h.start()
    h.write("Inbox/1.md", message("researcher", "What is Acme buying?", subject="acme"))
    [first] = await h.done(1, timeout=60)
    assert first["status"] == "done", first
    h.write("Inbox/2.md", message("researcher", "And the term?", subject="acme"))
    [_, second] = await h.done(2, timeout=60)
    assert second["status"] == "done", second

    assert h.note(first["reply"]).body == "first answer\n"
    assert h.note(second["reply"]).body == "second answer\n"
    last = api.conversation[-1]
    assert any("What is Acme buying?" in t for t in last.user_texts)
    assert "first answer" in last.assistant_texts
    assert ROLE + SEPARATOR + "Acme buys 400 seats." in last.system_text

    thread = h.note("Threads/researcher/researcher--acme.md").frontmatter
    assert thread["turn_count"] == 2
    assert {r.session_id for r in api.conversation} == {thread["session"]}
    results = result_events(h.root / ".vaultgate/transcripts/researcher/researcher--acme.jsonl")
    assert len(results) == 2
    assert thread["output_tokens"] == sum(r["usage"]["output_tokens"] for r in results)  # type: ignore[index]
    assert thread["cost_usd"] == pytest.approx(sum(r["total_cost_usd"] for r in results))  # type: ignore[misc]
    assert thread["input_tokens"] > 0


async def test_bash_runs_in_the_workspace_and_cannot_reach_outside_it(
    claude_harness: Harness, api: FakeAnthropic, tmp_path: Path
) -> None:
    h = claude_harness
    planted_home = Path.home() / f".vaultgate-planted-{uuid.uuid4().hex}"
    planted_tmp = Path("/tmp") / f"vaultgate-planted-{uuid.uuid4().hex}"
    for planted in (planted_home, planted_tmp):
        planted.write_text("TOP SECRET\n")
    other = h.root / ".vaultgate/sessions/other/other--x/work"
    other.mkdir(parents=True)
    (other / "notes.txt").write_text("TOP SECRET\n")
    targets = [
        planted_home,
        planted_tmp,
        other / "notes.txt",
        h.root / ".vaultgate/registry.db",
        h.root / "Agents/researcher.md",
    ]
    probe = "; ".join(f"cat {t} 2>&1 | head -c 200" for t in targets)
    api.script(
        Bash(f"echo made-here > inside.txt; pwd; {probe}; env"),
        lambda request: Text("saw: " + tool_result_text(request.tool_results[0])),
    )
    try:
        await h.start()
        h.write("Inbox/q.md", message("researcher", "probe", subject="sec"))
        [done] = await h.done(1, timeout=60)
    finally:
        planted_home.unlink()
        planted_tmp.unlink()
    assert done["status"] == "done", done
    output = tool_result_text(api.conversation[-1].tool_results[0])
    workspace = h.root / ".vaultgate/sessions/researcher/researcher--sec"
    assert (workspace / "work/inside.txt").read_text() == "made-here\n"
    assert str(workspace / "work") in output
    assert "TOP SECRET" not in output
    assert "No such file or directory" in output
    assert "tags: [agent/definition]" not in output
    assert SECRET not in output and "VAULTGATE_TEST_SECRET" not in output
    assert "CLAUDE_CODE_OAUTH_TOKEN" not in output  # exactly one credential enters
    assert "ANTHROPIC_BASE_URL" in output  # the environment was printed


async def test_a_turn_past_its_duration_is_killed_and_the_thread_goes_on(
    claude_harness: Harness, api: FakeAnthropic
) -> None:
    h = claude_harness
    h.write("Agents/researcher.md", claude_definition(extra="limits: {duration_s: 2}\n"))
    api.script(Text("too slow", delay=60), Text("on time"))
    await h.start()
    h.write("Inbox/slow.md", message("researcher", "take your time", subject="t"))
    started = await h.wait_event(lambda e: e["type"] == "turn.started", timeout=60)
    t0 = time.monotonic()
    [done] = await h.done(1, timeout=60)
    elapsed = time.monotonic() - t0
    assert done["status"] == "error"
    assert "duration limit of 2 s" in done["error"]
    assert elapsed < 2 + 1.0, elapsed  # killed within a second of its limit
    workspace = str(h.root / ".vaultgate/sessions/researcher/researcher--t")
    assert processes_mentioning(workspace) == []
    h.write("Inbox/next.md", message("researcher", "now quickly", subject="t"))
    [_, nxt] = await h.done(2, timeout=60)
    assert nxt["status"] == "done" and h.note(nxt["reply"]).body == "on time\n"
    assert started["thread"] == nxt["thread"]


async def test_a_rate_limit_is_retried_and_succeeds(
    claude_harness: Harness, api: FakeAnthropic
) -> None:
    api.script(Failure(429, retry_after=0), Text("after the retry"))
    await claude_harness.start()
    claude_harness.write("Inbox/q.md", message("researcher", "hi"))
    [done] = await claude_harness.done(1, timeout=60)
    assert done["status"] == "done", done
    assert claude_harness.note(done["reply"]).body == "after the retry\n"


async def test_a_lasting_server_error_ends_in_a_failure_reply(
    claude_harness: Harness, api: FakeAnthropic
) -> None:
    api.script(*[Failure(500, message="boom")] * 30)
    await claude_harness.start()
    claude_harness.write("Inbox/q.md", message("researcher", "hi"))
    [done] = await claude_harness.done(1, timeout=90)
    assert done["status"] == "error"
    reply = claude_harness.note(done["reply"])
    assert "This turn failed" in reply.body and "500" in reply.body


async def test_a_cut_stream_and_a_huge_line_do_not_break_the_backend(
    claude_harness: Harness, api: FakeAnthropic
) -> None:
    huge = "x" * (2 * 1024 * 1024)
    api.script(Text("cut short", cut_after=3))
    await claude_harness.start()
    claude_harness.write("Inbox/a.md", message("researcher", "one", subject="a"))
    [first] = await claude_harness.done(1, timeout=60)
    # The CLI may answer a cut stream by asking again without streaming, which
    # takes the default answer; the huge reply is queued only for the next turn.
    api.script(Text(huge))
    claude_harness.write("Inbox/b.md", message("researcher", "two", subject="b"))
    [_, second] = await claude_harness.done(2, timeout=60)
    assert first["status"] in ("done", "error")
    assert second["status"] == "done", second
    assert len(claude_harness.note(second["reply"]).body) > 100_000


async def test_a_lost_session_restarts_fresh_with_history_and_the_thread_says_so(
    claude_harness: Harness, api: FakeAnthropic
) -> None:
    h = claude_harness
    api.script(Text("remembered: blue"), Text("fresh but informed"))
    await h.start()
    h.write("Inbox/1.md", message("researcher", "My favourite colour is blue.", subject="c"))
    [first] = await h.done(1, timeout=60)
    assert first["status"] == "done", first
    old_session = h.note("Threads/researcher/researcher--c.md").frontmatter["session"]
    home = h.root / ".vaultgate/sessions/researcher/researcher--c/home"
    for stored in home.rglob(f"{old_session}.jsonl"):
        stored.unlink()
    h.write("Inbox/2.md", message("researcher", "What is my favourite colour?", subject="c"))
    [_, second] = await h.done(2, timeout=60)
    assert second["status"] == "done", second
    thread = h.note("Threads/researcher/researcher--c.md")
    assert thread.frontmatter["session"] != old_session
    assert thread.frontmatter["turn_count"] == 2
    assert "previous session" in thread.body and "was lost" in thread.body
    seeded = api.conversation[-1].last_user_text
    assert "My favourite colour is blue." in seeded and "remembered: blue" in seeded
    assert "session=new" in seeded


async def test_a_model_that_calls_tools_forever_is_stopped_by_max_turns(
    claude_harness: Harness, api: FakeAnthropic
) -> None:
    h = claude_harness
    h.write("Agents/researcher.md", claude_definition(extra="limits: {turns: 3}\n"))
    api.script(*[Bash(f"echo round {i}") for i in range(50)])
    await h.start()
    h.write("Inbox/loop.md", message("researcher", "keep going", subject="loop"))
    [done] = await h.done(1, timeout=90)
    assert done["status"] == "error"
    assert "limit of 3 model turns (limits.turns)" in done["error"], done["error"]
    reply = h.note(done["reply"])
    assert "This turn failed" in reply.body and "limits.turns" in reply.body


async def test_a_turn_over_its_spend_limit_is_stopped_with_a_clear_reply(
    claude_harness: Harness, api: FakeAnthropic
) -> None:
    h = claude_harness
    h.write("Agents/researcher.md", claude_definition(extra="limits: {spend_usd: 0.01}\n"))
    expensive = Usage(input_tokens=2_000_000, output_tokens=100_000)
    api.script(*[Bash(f"echo costly {i}", usage=expensive) for i in range(20)])
    await h.start()
    h.write("Inbox/spend.md", message("researcher", "spend it", subject="spend"))
    [done] = await h.done(1, timeout=90)
    assert done["status"] == "error"
    assert "spend limit" in done["error"] and "limits.spend_usd" in done["error"], done["error"]
