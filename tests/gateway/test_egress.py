"""The egress proxy of restricted turns: rules, the proxy itself, the sandbox, a claude turn.

Real servers throughout: aiohttp on loopback standing in for the model API and for services on
the host (the gateway's own port among them), real bubblewrap, the real claude CLI against the
fake API. The machine has no route to the internet, so "an allowed remote host" shows as the
proxy trying it (a 502: it could not be resolved) where a refused one gets a 403.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.backends import ClaudeBackend, InterimEvent, ResolvedLimits, TurnRequest
from gateway.egress import EgressPolicy, EgressProxy, EgressRuleError, HostRule, Refusal
from gateway.workspace import prepare, workspace_for
from sandbox import SandboxSpec, run
from tests.fakes.fake_anthropic import Bash, FakeAnthropic, Text, tool_result_text
from tests.helpers.harness import Harness, eventually, message

# -- rules ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "allowed", "refused"),
    [
        ("example.com", ["example.com:443", "example.com:80", "EXAMPLE.com.:443"],
         ["example.com:8443", "a.example.com:443", "example.org:443"]),
        ("example.com:8443", ["example.com:8443"], ["example.com:443"]),
        ("*.example.com", ["a.example.com:443", "a.b.example.com:80"],
         ["example.com:443", "badexample.com:443", "a.example.com:22"]),
        ("*.example.com:22", ["git.example.com:22"], ["git.example.com:443"]),
        ("[2001:db8::1]:443", ["2001:db8::1:443"], ["2001:db8::2:443"]),
    ],
)  # fmt: skip
def test_an_egress_entry_opens_its_host_and_ports_and_nothing_near_them(
    entry: str, allowed: list[str], refused: list[str]
) -> None:
    policy = EgressPolicy(rules=(HostRule.parse(entry),))
    for target in allowed:
        host, port = target.rsplit(":", 1)
        assert policy.refusal(host.lower().rstrip("."), int(port)) is None, target
    for target in refused:
        host, port = target.rsplit(":", 1)
        assert policy.refusal(host, int(port)) is not None, target


@pytest.mark.parametrize(
    "entry", ["", "*.", "example.com:https", "example.com:0", "example.com:70000", "a/b", "*x.com"]
)
def test_an_unreadable_egress_entry_is_an_error_naming_it(entry: str) -> None:
    with pytest.raises(EgressRuleError) as caught:
        HostRule.parse(entry)
    assert caught.value.entry == entry


@pytest.mark.parametrize(
    ("base_url", "api"),
    [
        (None, ("api.anthropic.com", 443)),
        ("http://127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("https://LLM.corp.example/anthropic", ("llm.corp.example", 443)),
        ("http://llm.corp.example", ("llm.corp.example", 80)),
    ],
)
def test_the_model_api_is_the_base_url_or_anthropics(
    base_url: str | None, api: tuple[str, int]
) -> None:
    assert EgressPolicy.for_turn(base_url, []).api == api


# -- the proxy, on its own ------------------------------------------------------------------


@dataclass
class Service:
    """An HTTP server on loopback that says who it is and records what it was sent."""

    name: str
    port: int = 0
    seen: list[dict[str, str]] | None = None


@pytest.fixture
async def services() -> AsyncIterator[Callable[[str], Any]]:
    runners: list[web.AppRunner] = []

    async def serve(name: str) -> Service:
        service = Service(name, seen=[])

        async def handle(request: web.Request) -> web.Response:
            assert service.seen is not None
            service.seen.append(
                {"path": request.path_qs, "connection": request.headers.get("Connection", "")}
            )
            return web.Response(text=f"this is {name}")

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        service.port = runner.addresses[0][1]
        return service

    yield serve
    for runner in runners:
        await runner.cleanup()


async def ask(proxy: EgressProxy, head: str, then: str | None = None) -> tuple[str, str]:
    """Send ``head`` to the proxy (and ``then`` through a tunnel it opens); (status, the rest)."""
    reader, writer = await asyncio.open_unix_connection(str(proxy.socket_path))
    try:
        async with asyncio.timeout(10):
            writer.write(head.encode())
            answer = (await reader.readuntil(b"\r\n\r\n")).decode()
            status = answer.split("\r\n", 1)[0]
            if then is not None and status.startswith("HTTP/1.1 200"):
                writer.write(then.encode())
                answer = ""
            return status, answer + (await reader.read()).decode()
    finally:
        writer.close()


def get(url: str) -> str:
    return f"GET {url} HTTP/1.1\r\nHost: x\r\nProxy-Connection: keep-alive\r\n\r\n"


def connect(target: str) -> str:
    return f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n"


async def test_the_model_api_passes_as_plain_http_and_through_a_tunnel(
    services: Callable[[str], Any],
) -> None:
    api = await services("the api")
    refusals: list[Refusal] = []
    policy = EgressPolicy.for_turn(f"http://127.0.0.1:{api.port}", [])
    async with EgressProxy(policy, refusals.append) as proxy:
        status, rest = await ask(proxy, get(f"http://127.0.0.1:{api.port}/v1/messages?beta=true"))
        assert status == "HTTP/1.1 200 OK" and rest.endswith("this is the api")
        inner = "GET /tunnelled HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        status, rest = await ask(proxy, connect(f"127.0.0.1:{api.port}"), inner)
        assert status == "HTTP/1.1 200 Connection established"
        assert rest.startswith("HTTP/1.1 200 OK") and rest.endswith("this is the api")
    # Sent on in origin form, one request per connection.
    assert api.seen == [
        {"path": "/v1/messages?beta=true", "connection": "close"},
        {"path": "/tunnelled", "connection": "close"},
    ]
    assert refusals == []


async def test_everything_else_gets_403_and_each_refusal_is_reported(
    services: Callable[[str], Any],
) -> None:
    api, gateway = await services("the api"), await services("the gateway")
    refusals: list[Refusal] = []
    policy = EgressPolicy.for_turn(f"http://127.0.0.1:{api.port}", ["example.com"])
    async with EgressProxy(policy, refusals.append) as proxy:
        attempts = [
            get(f"http://127.0.0.1:{gateway.port}/api/threads"),  # the gateway's own port
            connect(f"127.0.0.1:{gateway.port}"),
            get(f"http://localhost:{api.port}/"),  # the API's port, under another name
            connect("evil.test:443"),
            connect("example.com:8443"),  # a listed host, another port
        ]
        for attempt in attempts:
            status, rest = await ask(proxy, attempt)
            assert status == "HTTP/1.1 403 Forbidden", attempt
            assert "not in the definition's egress list" in rest
    assert gateway.seen == [] and api.seen == []
    assert [(r.host, r.port) for r in refusals] == [
        ("127.0.0.1", gateway.port),
        ("127.0.0.1", gateway.port),
        ("localhost", api.port),
        ("evil.test", 443),
        ("example.com", 8443),
    ]


async def test_a_listed_name_that_leads_back_to_this_machine_is_refused(
    services: Callable[[str], Any],
) -> None:
    gateway = await services("the gateway")
    entries = [f"localhost:{gateway.port}", f"127.0.0.1:{gateway.port}", "169.254.169.254:80"]
    refusals: list[Refusal] = []
    async with EgressProxy(EgressPolicy.for_turn(None, entries), refusals.append) as proxy:
        for target in (f"localhost:{gateway.port}", f"127.0.0.1:{gateway.port}"):
            assert (await ask(proxy, connect(target)))[0] == "HTTP/1.1 403 Forbidden"
        status, _ = await ask(proxy, get("http://169.254.169.254/latest/meta-data/"))
        assert status == "HTTP/1.1 403 Forbidden"
    assert gateway.seen == []
    assert [r.reason for r in refusals] == [
        "localhost resolves to a local address (127.0.0.1)",
        "127.0.0.1 resolves to a local address (127.0.0.1)",
        "169.254.169.254 resolves to a local address (169.254.169.254)",
    ]


async def test_a_listed_host_is_tried_not_refused(services: Callable[[str], Any]) -> None:
    service = await services("a listed service")
    refusals: list[Refusal] = []
    policy = EgressPolicy(
        rules=(HostRule.parse(f"localhost:{service.port}"), HostRule.parse("*.test")),
        may_be_local=frozenset({("localhost", service.port)}),
    )
    async with EgressProxy(policy, refusals.append) as proxy:
        status, rest = await ask(proxy, get(f"http://localhost:{service.port}/x"))
        assert status == "HTTP/1.1 200 OK" and rest.endswith("this is a listed service")
        # Nothing resolves here: a listed name is looked up and fails as a bad gateway.
        status, _ = await ask(proxy, connect("listed.test:443"))
        assert status == "HTTP/1.1 502 Bad Gateway"
    assert refusals == []


async def test_reports_are_capped_and_malformed_requests_are_not_reported() -> None:
    refusals: list[Refusal] = []
    async with EgressProxy(EgressPolicy(), refusals.append, max_reports=2) as proxy:
        for _ in range(3):
            assert (await ask(proxy, connect("evil.test:443")))[0] == "HTTP/1.1 403 Forbidden"
        assert (await ask(proxy, "hello\r\n\r\n"))[0] == "HTTP/1.1 400 Bad Request"
        assert (await ask(proxy, get("https://evil.test/")))[0] == "HTTP/1.1 400 Bad Request"
    assert len(refusals) == 2 and proxy.refused == 3


async def test_tunnels_are_capped_and_closing_the_proxy_ends_them(
    services: Callable[[str], Any],
) -> None:
    api = await services("the api")
    policy = EgressPolicy.for_turn(f"http://127.0.0.1:{api.port}", [])
    proxy = EgressProxy(policy, lambda refusal: None, max_tunnels=1)
    await proxy.start()
    try:
        reader, writer = await asyncio.open_unix_connection(str(proxy.socket_path))
        writer.write(connect(f"127.0.0.1:{api.port}").encode())
        async with asyncio.timeout(10):
            assert await reader.readuntil(b"\r\n\r\n")  # the tunnel is open and held
        assert (await ask(proxy, connect(f"127.0.0.1:{api.port}")))[0] == (
            "HTTP/1.1 503 Service Unavailable"
        )
    finally:
        await proxy.close()
    async with asyncio.timeout(10):
        assert await reader.read() == b""  # closed under the client
    writer.close()
    assert not proxy_dir_exists(proxy)


def proxy_dir_exists(proxy: EgressProxy) -> bool:
    try:
        return proxy.socket_path.parent.exists()
    except AssertionError:
        return False  # closed: no socket any more


# -- the proxy behind a real sandbox --------------------------------------------------------

# For each target: curl's exit status, the HTTP status, and the proxy's answer to a CONNECT.
PROBES = """
for target in "$@"; do
  out=$(curl -s -m 10 -o /dev/null -w '%{http_code} %{http_connect}' "$target")
  echo "$? $out"
done
curl -s -m 10 --noproxy '*' -o /dev/null "http://127.0.0.1:$GATEWAY/"; echo "direct $?"
"""


@pytest.fixture
def bwrap() -> None:
    """Real bubblewrap: missing it fails in CI and skips elsewhere."""
    if shutil.which("bwrap") is None:
        message = "bwrap is not installed (apt-get install -y bubblewrap)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.mark.usefixtures("bwrap")
async def test_inside_a_restricted_sandbox_only_the_proxy_leads_out(
    services: Callable[[str], Any], tmp_path: Path
) -> None:
    api, gateway = await services("the api"), await services("the gateway")
    refusals: list[Refusal] = []
    policy = EgressPolicy.for_turn(f"http://127.0.0.1:{api.port}", ["listed.test"])
    targets = [
        f"http://127.0.0.1:{api.port}/v1/messages",
        f"http://127.0.0.1:{gateway.port}/api/threads",
        "https://unlisted.test/",
        "https://listed.test/",
    ]
    async with EgressProxy(policy, refusals.append) as proxy:
        spec = SandboxSpec(
            workspace=tmp_path,
            env={"PATH": "/usr/bin:/bin", "GATEWAY": str(gateway.port)},
            network="restricted",
            egress_socket=proxy.socket_path,
        )
        done = await run(spec, ["sh", "-c", PROBES, "probes", *targets], time_limit=60)
    assert done.stdout.decode().splitlines() == [
        "0 200 000",  # the model API
        "0 403 000",  # the gateway's port, through the proxy: refused
        "56 000 403",  # an unlisted host: refused
        "56 000 502",  # a listed host: tried (nothing resolves here)
        "direct 7",  # the gateway's port, straight: there is no route
    ]
    assert gateway.seen == []
    assert [(r.host, r.port) for r in refusals] == [
        ("127.0.0.1", gateway.port),
        ("unlisted.test", 443),
    ]


# -- claude turns with network: restricted ---------------------------------------------------

ROLE = "You are the research agent. Answer briefly."
RESTRICTED = "sandbox: {network: restricted, egress: [listed.test]}\n"
VIA_PROXY = "curl -s -m 10 -o /dev/null -w '%{http_code} %{http_connect}'"


def claude_definition(extra: str = RESTRICTED) -> str:
    return (
        "---\ntags: [agent/definition]\nname: researcher\nmode: multi-threaded\n"
        "backend: claude\ntools: [Bash]\npermission_mode: bypassPermissions\n"
        f"{extra}---\n{ROLE}\n"
    )


@pytest.fixture
async def api() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic(default_text="default answer") as fake:
        yield fake


@pytest.fixture
def backend(harness: Harness, api: FakeAnthropic, claude: Path) -> ClaudeBackend:
    harness.settings = harness.settings.model_copy(
        update={"claude_bin": str(claude), "turn_retries": 0, "claude_max_retries": 0}
    )
    env = {
        "PATH": os.environ["PATH"],
        "ANTHROPIC_API_KEY": "test-key",
        "ANTHROPIC_BASE_URL": api.url,
    }
    return ClaudeBackend(harness.settings, env=env)


@pytest.fixture
def restricted_harness(harness: Harness, backend: ClaudeBackend) -> Harness:
    harness.extra_backends["claude"] = backend
    harness.write("Agents/researcher.md", claude_definition())
    return harness


def probe(gateway_port: int) -> str:
    """A Bash command trying the gateway's port (via the proxy, then straight) and the web."""
    return (
        f"echo gateway $({VIA_PROXY} http://127.0.0.1:{gateway_port}/api/threads); "
        f"echo unlisted $({VIA_PROXY} https://unlisted.example/); "
        f"curl -s -m 10 --noproxy '*' http://127.0.0.1:{gateway_port}/; echo direct $?"
    )


def answer_with_the_tool_output(request: Any) -> Text:
    return Text("saw: " + tool_result_text(request.tool_results[0]))


@pytest.mark.e2e
@pytest.mark.usefixtures("bwrap")
async def test_a_restricted_turn_reaches_the_model_api_and_nothing_else(
    restricted_harness: Harness, api: FakeAnthropic, services: Callable[[str], Any]
) -> None:
    h = restricted_harness
    gateway_api = await services("the gateway's HTTP API")
    api.script(Bash(probe(gateway_api.port)), answer_with_the_tool_output)
    await h.start()
    h.write("Inbox/q.md", message("researcher", "probe the network", subject="net"))
    [done] = await h.done(1, timeout=90)
    assert done["status"] == "done", done
    # Every request of the turn reached the fake API, through the proxy.
    assert len(api.conversation) >= 2
    assert h.note(done["reply"]).body.splitlines() == [
        "saw: gateway 403 000",
        "unlisted 000 403",
        "direct 7",
    ]
    assert gateway_api.seen == []
    refused = [e for e in h.seen if e["type"] == "turn.egress_refused"]
    assert [(e["host"], e["port"], e["thread"]) for e in refused] == [
        ("127.0.0.1", gateway_api.port, done["thread"]),
        ("unlisted.example", 443, done["thread"]),
    ]


@pytest.mark.e2e
@pytest.mark.usefixtures("bwrap")
async def test_listed_hosts_pass_and_each_refusal_is_recorded_as_a_registry_event(
    restricted_harness: Harness, api: FakeAnthropic
) -> None:
    h = restricted_harness
    api.script(
        Bash(f"echo $({VIA_PROXY} https://listed.test/) $({VIA_PROXY} https://unlisted.example/)"),
        answer_with_the_tool_output,
    )
    gateway = await h.start()
    h.write("Inbox/q.md", message("researcher", "try the web", subject="web"))
    [done] = await h.done(1, timeout=90)
    assert done["status"] == "done", done
    assert h.note(done["reply"]).body == "saw: 000 502 000 403\n"  # listed: tried; unlisted: no
    registry = gateway.registry
    assert registry is not None

    async def recorded() -> bool:
        events = await registry.events(thread_id=done["thread"])
        return any(e.kind == "egress_refused" for e in events)

    await eventually(recorded, timeout=10)
    events = await registry.events(thread_id=done["thread"])
    [event] = [e for e in events if e.kind == "egress_refused"]
    assert (event.data["host"], event.data["port"]) == ("unlisted.example", 443)


@pytest.mark.e2e
@pytest.mark.usefixtures("bwrap")
async def test_the_backend_lets_through_the_egress_hosts_its_request_lists(
    harness: Harness, backend: ClaudeBackend, api: FakeAnthropic, tmp_path: Path
) -> None:
    via = "curl -s -m 10 -o /dev/null -w '%{http_connect}'"  # the proxy's answer to CONNECT
    api.script(
        Bash(f"echo $({via} https://a.corp.test/) $({via} https://corp.test/)"),
        answer_with_the_tool_output,
    )
    workspace = workspace_for(tmp_path / "state", "research:researcher--x")
    prepare(workspace, ROLE, {})
    events: list[InterimEvent] = []
    request = TurnRequest(
        thread_id="research:researcher--x",
        agent="researcher",
        system_prompt=ROLE,
        message="probe",
        session_id=str(uuid.uuid4()),
        resume=False,
        workspace=workspace,
        limits=ResolvedLimits(turns=5, tokens=1_000_000, spend_usd=1.0, duration_s=60),
        tools=("Bash",),
        permission_mode="bypassPermissions",
        network="restricted",
        options={"egress": ["*.corp.test"]},
    )
    result = await asyncio.wait_for(backend.run(request, events.append), timeout=90)
    assert not result.is_error, result
    assert result.text == "saw: 502 403"  # the listed subdomain is tried, its parent refused
    refused = [e.data for e in events if e.kind == "egress_refused"]
    assert [(r["host"], r["port"]) for r in refused] == [("corp.test", 443)]


@pytest.mark.e2e
async def test_a_restricted_network_without_a_sandbox_engine_fails_the_turn_clearly(
    harness: Harness, backend: ClaudeBackend
) -> None:
    harness.extra_backends["claude"] = backend
    harness.write(
        "Agents/researcher.md",
        claude_definition("sandbox: {engine: none, network: restricted}\n"),
    )
    await harness.start()
    harness.write("Inbox/q.md", message("researcher", "hi"))
    [done] = await harness.done(1, timeout=30)
    assert done["status"] == "error"
    assert "'restricted' needs a network namespace" in done["error"]
