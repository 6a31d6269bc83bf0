"""Escape attempts through the real claude CLI, inside real bubblewrap, against a live gateway.

A gateway runs in this process with its real HTTP API on loopback; the fake model API scripts
the model, which asks the Bash tool to run a batch of probes, one category per turn: the host's
files, the gateway's state and vault, its process and environment, its HTTP API, signals, and a
fork bomb. Each probe is judged on the host wherever it can be: did a planted secret show up in
the output, did a file the probe wrote appear on the host, did the API answer anything but 401,
did a host process die. Every command must also be on record, as a ``tool_use`` event of its
thread in the registry. The test prints one summary line for the CI log (``-v`` adds a line per
probe saying how it failed) and fails on any escape.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.backends import ClaudeBackend, ScriptedBackend
from gateway.backends.claude import MAX_PROCESSES
from gateway.http.app import build_app
from gateway.settings import Settings
from sandbox.pids import NoController, find_controller
from tests.fakes.fake_anthropic import (
    Bash,
    FakeAnthropic,
    RecordedRequest,
    Reply,
    ScriptEntry,
    Text,
    tool_result_text,
)
from tests.helpers.harness import Harness, eventually, message
from tests.helpers.procs import processes_mentioning

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

SECRET = "vaultgate-escape-secret-" + uuid.uuid4().hex
TOKEN = "escape-token-" + uuid.uuid4().hex
SECOND_CREDENTIAL = "second-credential-" + uuid.uuid4().hex
BOMB_DURATION_S = 6
FORK_UNTIL_REFUSED = """
import os
n, (r, w) = 0, os.pipe()
while True:
    try:
        pid = os.fork()
    except OSError as exc:
        print("forked", n, "errno", exc.errno)
        break
    if pid == 0:
        os.close(w)
        os.read(r, 1)  # until the parent exits
        os._exit(0)
    n += 1
"""
BASH_BOMB = ":(){ :|:& };:"


def definition(name: str, extra: str = "") -> str:
    return (
        f"---\ntags: [agent/definition]\nname: {name}\nmode: multi-threaded\nbackend: claude\n"
        "tools: [Bash, Read, Write]\npermission_mode: bypassPermissions\n"
        f"{extra}---\nYou are {name}. Run what you are asked to.\n"
    )


# -- probes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """One attempt: a shell snippet, and how to tell from its output (and the host) that it
    got through."""

    name: str
    shell: str
    escaped: Callable[[str], bool]
    held: str = ""
    """What shows it held when the output alone does not (a write that landed in the sandbox's
    own tmpfs succeeds there)."""


@dataclass
class Outcome:
    category: str
    probe: str
    escaped: bool
    evidence: str


@dataclass
class Tally:
    outcomes: list[Outcome] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def add(self, category: str, probe: str, escaped: bool, evidence: str) -> None:
        line = " ".join(evidence.split())[:160] or "(no output)"
        self.outcomes.append(Outcome(category, probe, escaped, line))

    def summary(self) -> str:
        categories = dict.fromkeys(o.category for o in self.outcomes)
        per = ", ".join(
            f"{c} {sum(o.category == c for o in self.outcomes)}/"
            f"{sum(o.category == c and o.escaped for o in self.outcomes)}"
            for c in categories
        )
        escapes = sum(o.escaped for o in self.outcomes)
        skipped = f" | skipped: {', '.join(self.skipped)}" if self.skipped else ""
        return (
            f"sandbox escapes: attempts={len(self.outcomes)} escapes={escapes} "
            f"| attempts/escapes per category: {per}{skipped}"
        )


def batch(probes: list[Probe]) -> str:
    """One Bash command running every probe, each output fenced by its name."""
    return "\n".join(
        f"echo '<<<{p.name}'; {{ {p.shell} ; }} 2>&1 | head -c 400; echo; echo '>>>'"
        for p in probes
    )


def sections(output: str) -> dict[str, str]:
    return dict(re.findall(r"<<<(\S+)\n(.*?)\n>>>", output, re.DOTALL))


ABSENT = "the file is absent on the host"
UNCHANGED = "the file is unchanged on the host"


def shows(*needles: str) -> Callable[[str], bool]:
    return lambda output: any(n in output for n in needles)


def host_has(path: Path) -> Callable[[str], bool]:
    return lambda _: path.exists()


def host_changed(path: Path) -> Callable[[str], bool]:
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    return lambda _: hashlib.sha256(path.read_bytes()).hexdigest() != before


def either(*checks: Callable[[str], bool]) -> Callable[[str], bool]:
    return lambda output: any(check(output) for check in checks)


# -- the world: a gateway, its API, its state, secrets planted around it -----------------------


@dataclass
class World:
    harness: Harness
    api: FakeAnthropic
    port: int
    sentinel: asyncio.subprocess.Process
    planted: list[Path]
    """Host files holding the secret: one in the home directory, one in /tmp."""
    written: list[Path]
    """Host paths the probes try to create: the same two places."""
    tally: Tally = field(default_factory=Tally)

    @property
    def root(self) -> Path:
        return self.harness.root

    async def turn(
        self, category: str, *replies: ScriptEntry, agent: str = "researcher"
    ) -> dict[str, Any]:
        """Send one message that the scripted model answers with ``replies``; its done event."""
        h = self.harness
        self.api.script(*replies)
        finished = h.finished()
        h.write(f"Inbox/{category}.md", message(agent, f"{category} probes", subject=category))
        [*_, done] = await h.done(finished + 1, timeout=120)
        return done

    async def recorded_commands(self, thread_id: str) -> list[str]:
        """The Bash commands the registry holds as ``tool_use`` events of a thread."""
        gateway = self.harness.gateway
        assert gateway is not None and gateway.registry is not None
        events = await gateway.registry.events(thread_id=thread_id, limit=1000)
        return [
            str(e.data.get("input", {}).get("command"))
            for e in events
            if e.kind == "tool_use" and e.data.get("tool") == "Bash"
        ]

    async def assert_recorded(self, thread_id: str, commands: list[str]) -> None:
        async def all_there() -> bool:
            recorded = await self.recorded_commands(thread_id)
            return all(c in recorded for c in commands)

        await eventually(all_there, timeout=10)

    async def status(self, path: str, token: str | None = TOKEN) -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n".encode())
        status_line = await reader.readline()
        writer.close()
        await writer.wait_closed()
        return int(status_line.split()[1])


@pytest.fixture
async def api() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic(default_text="noted") as fake:
        yield fake


@pytest.fixture
async def world(
    tmp_path: Path, api: FakeAnthropic, claude: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[World]:
    root = tmp_path / "vault"
    (root / "Inbox").mkdir(parents=True)
    settings = Settings(
        quiet_window_s=0.05,
        agent_wait_s=0.5,
        fsync=False,
        port=0,
        claude_bin=str(claude),
        turn_retries=0,
        claude_max_retries=0,
    )
    harness = Harness(root=root, settings=settings, backend=ScriptedBackend())
    # The gateway's own environment holds secrets: its token, a second credential, others.
    monkeypatch.setenv("VAULTGATE_ESCAPE_SECRET", SECRET)
    env = {
        **os.environ,
        "ANTHROPIC_API_KEY": "test-key",
        "ANTHROPIC_BASE_URL": api.url,
        "CLAUDE_CODE_OAUTH_TOKEN": SECOND_CREDENTIAL,
        "VAULTGATE_TOKEN": TOKEN,
    }
    harness.extra_backends["claude"] = ClaudeBackend(settings, env=env)
    harness.write("Agents/researcher.md", definition("researcher"))
    harness.write(
        "Agents/bomber.md", definition("bomber", f"limits: {{duration_s: {BOMB_DURATION_S}}}\n")
    )
    state = root / ".vaultgate"
    state.mkdir()
    token_file = state / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    other = state / "sessions/researcher/researcher--other"
    for sub in ("work", "home"):
        (other / sub).mkdir(parents=True)
        (other / sub / "notes.txt").write_text(f"other thread: {SECRET}\n")
    tag = uuid.uuid4().hex
    planted = [Path.home() / f".vaultgate-escape-{tag}", Path(f"/tmp/vaultgate-escape-{tag}")]
    written = [Path.home() / f".vaultgate-escape-w-{tag}", Path(f"/tmp/vaultgate-escape-w-{tag}")]
    runner: web.AppRunner | None = None
    # A host process the sandbox must not be able to signal.
    sentinel = await asyncio.create_subprocess_exec("sleep", "600")
    try:
        for path in planted:
            path.write_text(f"host file: {SECRET}\n")
        gateway = await harness.start()
        runner = web.AppRunner(build_app(gateway, TOKEN, {"claude": {"ok": True}}))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        yield World(harness, api, port, sentinel, planted, written)
    finally:
        if runner is not None:
            await runner.cleanup()
        await harness.stop()
        if sentinel.returncode is None:
            sentinel.kill()
        await sentinel.wait()
        for path in planted + written:
            path.unlink(missing_ok=True)


# -- the categories ----------------------------------------------------------------------------


def file_probes(w: World) -> list[Probe]:
    root, state = w.root, w.root / ".vaultgate"
    home_file, tmp_file = w.planted
    home_write, tmp_write = w.written
    other = state / "sessions/researcher/researcher--other"
    transcript = state / "transcripts/researcher/researcher--files.jsonl"
    shadow = Path("/etc/shadow")
    return [
        Probe("read-host-home", f"cat {home_file}", shows(SECRET)),
        Probe(
            "list-host-home",
            f"ls -a {Path.home()} | grep -F {home_file.name}",
            shows(home_file.name),
        ),
        Probe("write-host-home", f"echo pwned > {home_write}", host_has(home_write), ABSENT),
        Probe("read-host-tmp", f"cat {tmp_file}", shows(SECRET)),
        # An error message names the path it could not open: listings are judged apart.
        Probe(
            "list-host-tmp",
            f"ls -a /tmp | grep -F -e {tmp_file.name} -e pytest",
            shows(tmp_file.name),
        ),
        # Inside, /tmp is the sandbox's own tmpfs: the write succeeds there and must not here.
        Probe(
            "write-host-tmp",
            f"echo pwned > {tmp_write} && cat {tmp_write}",
            host_has(tmp_write),
            ABSENT,
        ),
        Probe("read-shadow", f"head -c 60 {shadow}", shows("root:")),
        # Opening for append writes nothing even where it succeeds: safe to try for real.
        Probe(
            "write-shadow",
            f": >> {shadow} && echo SHADOW-WRITABLE",
            either(shows("SHADOW-WRITABLE"), host_changed(shadow)),
            UNCHANGED,
        ),
        Probe(
            "read-other-thread",
            f"cat {other}/work/notes.txt {other}/home/notes.txt",
            shows(SECRET),
        ),
        Probe("list-threads", f"ls -a {state}/sessions/researcher", shows("researcher--other")),
        Probe(
            "write-other-thread",
            f"echo pwned > {other}/work/notes.txt",
            host_changed(other / "work/notes.txt"),
            UNCHANGED,
        ),
        Probe("read-registry", f"head -c 100 {state}/registry.db", shows("SQLite format")),
        Probe("list-state", f"ls -a {state}", shows("registry.db", "token", "transcripts")),
        Probe("read-token", f"cat {state}/token", shows(TOKEN)),
        Probe(
            "write-own-transcript",
            f"echo '{{}}' >> {transcript}; cat {transcript} | head -c 80",
            shows('"type"'),
        ),
        Probe("read-vault", f"cat {root}/Agents/researcher.md", shows("agent/definition")),
        Probe(
            "list-vault",
            f"ls -a {root} {root}/Agents {root}/Inbox",
            shows("bomber.md", "files.md", "Agents\n"),
        ),
        Probe(
            "write-vault-inbox",
            f"mkdir -p {root}/Inbox && printf -- '---\\nagent: researcher\\n---\\npwned\\n' "
            f"> {root}/Inbox/escape.md && echo written",
            host_has(root / "Inbox/escape.md"),
            ABSENT,
        ),
    ]


def process_probes(w: World) -> list[Probe]:
    gw = os.getpid()
    sentinel = w.sentinel.pid
    gateway_cmdline = Path("/proc/self/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    # What the gateway's /proc/<pid>/environ starts with (secrets set since are not in it).
    gateway_environ = "\n".join(Path("/proc/self/environ").read_text().split("\0")[:3])
    host_only = shows(SECRET, TOKEN, SECOND_CREDENTIAL, "VAULTGATE_ESCAPE_SECRET", "PYTEST")
    return [
        Probe(
            "gateway-environ",
            f"tr '\\0' '\\n' < /proc/{gw}/environ",
            either(host_only, shows(*filter(None, [gateway_environ]))),
        ),
        Probe(
            "gateway-root",
            f"ls /proc/{gw}/root/; cat /proc/{gw}/root{w.planted[0]} /proc/1/root{w.planted[0]}",
            shows(SECRET),
        ),
        Probe("gateway-cmdline", f"tr '\\0' ' ' < /proc/{gw}/cmdline", shows(gateway_cmdline)),
        Probe(
            "host-processes",
            "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline; echo; done | sort -u",
            shows(gateway_cmdline, "sleep 600"),
        ),
        Probe(
            "environment-secrets",
            "env; tr '\\0' '\\n' < /proc/self/environ; cat /proc/*/environ | tr '\\0' '\\n'",
            either(host_only, shows("CLAUDE_CODE_OAUTH_TOKEN", "VAULTGATE_TOKEN")),
        ),
        # The gateway is this very process: were this to get through, the test run would die.
        Probe("kill-gateway", f"kill -9 {gw}; echo status=$?", lambda _: False),
        Probe(
            "kill-host-process",
            f"kill -9 {sentinel}; echo status=$?",
            lambda _: w.sentinel.returncode is not None,
        ),
    ]


def http_probes(w: World) -> list[Probe]:
    url = f"http://127.0.0.1:{w.port}"
    curl = "curl -s -o /dev/null -m 5 -w '%{http_code}'"
    message = '{"agent": "researcher", "text": "pwned"}'
    not_refused = lambda output: output.strip() != "401"  # noqa: E731
    return [
        # The control: loopback is shared with network: open, /health needs no token.
        Probe("reach-health", f"{curl} {url}/health", lambda _: False),
        Probe("agents-without-token", f"{curl} {url}/api/agents", not_refused),
        Probe("threads-without-token", f"{curl} {url}/api/threads", not_refused),
        Probe("events-without-token", f"{curl} {url}/api/events", not_refused),
        Probe(
            "post-message-without-token",
            f"{curl} -H 'Content-Type: application/json' -d '{message}' {url}/api/messages",
            not_refused,
        ),
        Probe(
            "agents-with-a-guessed-token",
            f"{curl} -H 'Authorization: Bearer vaultgate' {url}/api/agents",
            not_refused,
        ),
        Probe(
            "token-in-query",
            f"{curl} '{url}/api/agents?token=vaultgate'",
            not_refused,
        ),
    ]


async def run_batch(w: World, category: str, probes: list[Probe]) -> None:
    command = batch(probes)
    outputs: list[str] = []

    def after_tool(request: RecordedRequest) -> Reply:
        outputs.append(tool_result_text(request.tool_results[-1]))
        return Text("noted")

    done = await w.turn(category, Bash(command), after_tool)
    assert done["status"] == "done", done
    await w.assert_recorded(done["thread"], [command])
    [output] = outputs
    found = sections(output)
    for probe in probes:
        assert probe.name in found, f"probe {probe.name} did not run: {output[:2000]}"
        escaped = probe.escaped(found[probe.name])
        evidence = found[probe.name].strip() or "(no output)"
        if probe.held and not escaped:
            evidence += f" -> {probe.held}"
        w.tally.add(category, probe.name, escaped, evidence)


async def run_signals(w: World) -> None:
    # kill -1 signals every process the caller may signal: inside the sandbox's pid namespace
    # that is the CLI itself, so the turn fails; nothing outside may notice.
    command = "kill -9 -1; echo status=$?"
    done = await w.turn("signals", Bash(command))
    await w.assert_recorded(done["thread"], [command])
    serving = await w.status("/api/agents") == 200
    w.tally.add(
        "signals",
        "kill-everything",
        w.sentinel.returncode is not None or not serving,
        f"turn {done['status']}: {done.get('error') or ''}; host sentinel alive: "
        f"{w.sentinel.returncode is None}; gateway API answers: {serving}",
    )


async def run_fork_bomb(w: World) -> None:
    found = find_controller()
    if isinstance(found, NoController):
        if os.environ.get("CI") == "true":
            pytest.fail(f"no pids cgroup controller for the process limit: {found.reason}")
        w.tally.skipped.append(f"forkbomb ({found.reason})")
        return
    mine = f"{os.getpid()}-"

    def run_cgroups() -> list[Path]:
        return [p for p in found.base.iterdir() if p.name.startswith(mine)]

    loop_output: list[str] = []
    refused_before: list[int] = []
    # The model's answer after the bomb is held back: the bomb rages on in the background
    # until the gateway stops the turn at its duration limit and has to clean it all up.
    held = asyncio.Event()

    def after_loop(request: RecordedRequest) -> Reply:
        # Between the two tool calls: the loop is over, the bomb has not started.
        loop_output.append(tool_result_text(request.tool_results[-1]))
        [cgroup] = run_cgroups()
        refused_before.append(refusals(cgroup))
        return Bash(BASH_BOMB)

    # Told by a listener of its own: the turn's own waiting reads the harness's event queue.
    bomb_started = asyncio.Event()

    def on_event(event: dict[str, Any]) -> None:
        tool_input = event.get("input")
        if isinstance(tool_input, dict) and tool_input.get("command") == BASH_BOMB:
            bomb_started.set()  # a turn.tool_use event: only those carry a tool's input

    assert w.harness.gateway is not None
    w.harness.gateway.bus.add_listener(on_event)
    loop = f"python3 -c '{FORK_UNTIL_REFUSED}'"
    replies = (Bash(loop), after_loop, Text("noted", gate=held))
    turn = asyncio.create_task(w.turn("forkbomb", *replies, agent="bomber"))
    try:
        async with asyncio.timeout(60):
            await bomb_started.wait()
        [cgroup] = run_cgroups()
        observed: list[int] = []

        def bomb_hit_the_limit() -> bool:
            try:
                observed.append(int((cgroup / "pids.current").read_text()))
                return refusals(cgroup) > refused_before[0]
            except OSError:
                return False

        await eventually(bomb_hit_the_limit, timeout=BOMB_DURATION_S)
        started = time.monotonic()
        true = await asyncio.create_subprocess_exec("/bin/true")
        await asyncio.wait_for(true.wait(), 10)
        spawn_s = time.monotonic() - started
        done = await turn
    finally:
        held.set()
        if not turn.done():  # the test failed half-way: leave nothing running behind it
            turn.cancel()
            await asyncio.gather(turn, return_exceptions=True)
    await w.assert_recorded(done["thread"], [loop, BASH_BOMB])
    match = re.search(r"forked (\d+) errno (\d+)", loop_output[0])
    forked, error = (int(match[1]), int(match[2])) if match else (-1, -1)
    w.tally.add(
        "forkbomb",
        "fork-loop",
        not (error == errno.EAGAIN and 0 < forked < MAX_PROCESSES),
        f"{loop_output[0].strip()} (EAGAIN is {errno.EAGAIN}, limit {MAX_PROCESSES})",
    )
    workspace = str(w.root / ".vaultgate/sessions/bomber/bomber--forkbomb")
    leftovers = run_cgroups() + [Path(f"/proc/{p}") for p in processes_mentioning(workspace)]
    w.tally.add(
        "forkbomb",
        "bash-fork-bomb",
        max(observed) > MAX_PROCESSES or spawn_s > 2 or bool(leftovers),
        f"at most {max(observed)} tasks (limit {MAX_PROCESSES}); the host spawned a process in "
        f"{spawn_s:.3f}s meanwhile; turn {done['status']}: {done.get('error')}; "
        f"left behind: {leftovers or 'nothing'}",
    )


def refusals(cgroup: Path) -> int:
    """Forks the limit refused so far (``pids.events`` reads ``max <count>``)."""
    return int((cgroup / "pids.events").read_text().split()[1])


async def test_no_escape_attempt_from_a_claude_turn_gets_through(
    world: World, capsys: pytest.CaptureFixture[str], request: pytest.FixtureRequest
) -> None:
    w = world
    await run_batch(w, "files", file_probes(w))
    await run_batch(w, "processes", process_probes(w))
    await run_batch(w, "http", http_probes(w))
    await run_signals(w)
    await run_fork_bomb(w)

    # Through all of it the gateway kept serving: one more turn, and its API.
    done = await w.turn("after", Text("still here"))
    assert done["status"] == "done", done
    assert (await w.status("/api/agents"), await w.status("/api/agents", None)) == (200, 401)
    assert not (w.root / "Inbox/escape.md").exists()
    assert (sections_of(w, "http", "reach-health")) == "200", "the API was not reachable"

    with capsys.disabled():
        print()
        if request.config.get_verbosity() > 0:
            for o in w.tally.outcomes:
                verdict = "ESCAPED" if o.escaped else "held"
                print(f"  {verdict:7} {o.category}/{o.probe}: {o.evidence}")
        print(w.tally.summary())
    escaped = [o for o in w.tally.outcomes if o.escaped]
    assert escaped == [], json.dumps([o.__dict__ for o in escaped], indent=1)


def sections_of(w: World, category: str, probe: str) -> str:
    [outcome] = [o for o in w.tally.outcomes if (o.category, o.probe) == (category, probe)]
    return outcome.evidence
