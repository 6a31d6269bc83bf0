"""The ``claude`` backend: one real ``claude -p`` run per turn, confined to the thread.

The command line is the one SPEC 4 gives, each flag checked against the CLI
(2.1.x). The prompt goes in on stdin, which is then closed. stdout is read as
stream-json through a framed line reader; every raw line is appended to the
thread's transcript, interim events go to the gateway, and the final
``result`` event decides the outcome (``is_error``, not ``subtype``). A run
that ends without a result is a failure carrying the exit status and the end
of stderr.

Sessions: the gateway owns the uuid. A thread's first turn passes
``--session-id``, later ones ``--resume``. Whether the session exists is
checked in the thread's home, not assumed: a turn killed mid-run has already
created it (so the retry resumes), and a workspace that lost it gets
``session_lost`` back so the gateway can start afresh with the thread's
history. Transient API failures (429, 5xx, overloaded) that outlast the
CLI's own retries are retried here a bounded number of times with backoff.

Only this environment enters the sandbox: HOME and CLAUDE_CONFIG_DIR in the
workspace, a fixed PATH, a private TMPDIR, exactly one credential
(``ANTHROPIC_API_KEY``, else ``CLAUDE_CODE_OAUTH_TOKEN``), ``ANTHROPIC_BASE_URL``
when set, ``IS_SANDBOX=1``, ``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1`` and
the CLI's retry count.

``network: restricted`` runs each attempt with an egress proxy of its own (gateway/egress.py):
the sandbox's only way out, letting through the model API and the ``egress`` hosts the
definition lists (``request.options["egress"]``). Each connection it refuses is reported as an
``egress_refused`` interim event with the host and port.

Every run is held to ``MAX_PROCESSES`` tasks (a pids cgroup: see sandbox/pids.py), so a fork
bomb a tool starts ends in EAGAIN instead of an exhausted machine. Where no pids controller is
usable the turn still runs, and says so with a ``warning`` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path

from gateway.backends.base import EventSink, InterimEvent, TurnRequest, TurnResult, Usage
from gateway.backends.stream import (
    ApiRetry,
    AssistantText,
    Init,
    Result,
    ToolResult,
    ToolUse,
    parse_line,
)
from gateway.egress import EgressPolicy, EgressProxy, EgressRuleError, Refusal
from gateway.settings import Settings
from gateway.workspace import Workspace
from sandbox import (
    OutputLineTooLong,
    SandboxError,
    SandboxSpec,
    preflight,
    start,
)

CREDENTIALS = ("ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN")
PASSED_THROUGH = ("ANTHROPIC_BASE_URL", "LANG", "LC_ALL", "TZ")
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
_TRANSIENT = re.compile(
    r"\b(429|500|502|503|504|529)\b|overloaded|rate.?limit|timed? ?out|connection error",
    re.IGNORECASE,
)
_SESSION_MISSING = "No conversation found"
_SESSION_TAKEN = "is already in use"
_TEXT_CAP = 200_000
MAX_PROCESSES = 512
"""Tasks a turn may have at once: the CLI's threads, bwrap's two, tools, MCP servers, ..."""


def find_claude(settings: Settings, env: Mapping[str, str] | None = None) -> Path | None:
    """The CLI from the ``claude_bin`` setting, else from ``PATH``; resolved, or None."""
    environ = os.environ if env is None else env
    if settings.claude_bin:
        candidate = Path(settings.claude_bin).expanduser()
        return candidate.resolve() if candidate.is_file() else None
    found = shutil.which("claude", path=environ.get("PATH"))
    return Path(found).resolve() if found else None


def install_root(binary: Path) -> Path:
    """The folder to mount read-only for the CLI: its npm package, or its own folder."""
    for parent in binary.parents:
        if (parent / "package.json").is_file():
            return parent
    return binary.parent


class ClaudeBackend:
    name = "claude"
    uses_workspace = True

    def __init__(self, settings: Settings, env: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.env = dict(os.environ if env is None else env)
        self._preflight_ok: dict[str, str | None] = {}

    # -- the turn -------------------------------------------------------------

    async def run(self, request: TurnRequest, on_event: EventSink) -> TurnResult:
        problem = self._setup_problem() or await self._sandbox_problem(request.engine)
        if problem:
            return _failure(request, problem)
        workspace = request.workspace
        assert workspace is not None, "the claude backend needs a workspace"
        exists = workspace.session_exists(request.session_id)
        if request.resume and not exists:
            return TurnResult(
                text="",
                is_error=True,
                error="the thread's session was not found in its workspace",
                session_id=request.session_id,
                session_lost=True,
            )
        resume = exists
        delays = [self.settings.retry_backoff_s * 2**i for i in range(self.settings.turn_retries)]
        while True:
            result, taken = await self._once(request, workspace, resume, on_event)
            if taken and not resume:
                resume = True  # created by an earlier, interrupted run: continue it
                continue
            if not result.is_error or result.session_lost or not delays:
                return result
            if not _TRANSIENT.search(result.error or ""):
                return result
            delay = delays.pop(0)
            on_event(InterimEvent("retry", {"error": result.error, "delay_s": delay}))
            await asyncio.sleep(delay)
            resume = workspace.session_exists(request.session_id)

    async def _once(
        self, request: TurnRequest, workspace: Workspace, resume: bool, on_event: EventSink
    ) -> tuple[TurnResult, bool]:
        async with contextlib.AsyncExitStack() as stack:
            egress_socket = None
            if request.network == "restricted" and request.engine == "bwrap":
                try:
                    proxy = await stack.enter_async_context(self._egress_proxy(request, on_event))
                except (EgressRuleError, OSError) as exc:  # OSError: the socket could not be made
                    return _failure(request, f"cannot restrict the network: {exc}"), False
                egress_socket = proxy.socket_path
            return await self._run_cli(request, workspace, resume, on_event, egress_socket)

    def _egress_proxy(self, request: TurnRequest, on_event: EventSink) -> EgressProxy:
        """The proxy a restricted turn reaches the model API (and its ``egress`` hosts) through."""
        egress = request.options.get("egress") or ()
        if not isinstance(egress, list | tuple) or not all(isinstance(e, str) for e in egress):
            raise EgressRuleError(str(egress), "egress must be a list of host[:port] strings")
        policy = EgressPolicy.for_turn(self.env.get("ANTHROPIC_BASE_URL"), egress)

        def refused(refusal: Refusal) -> None:
            on_event(InterimEvent("egress_refused", refusal.as_data()))

        return EgressProxy(policy, refused)

    async def _run_cli(
        self,
        request: TurnRequest,
        workspace: Workspace,
        resume: bool,
        on_event: EventSink,
        egress_socket: Path | None,
    ) -> tuple[TurnResult, bool]:
        binary = find_claude(self.settings, self.env)
        assert binary is not None
        argv = self.argv(binary, request, workspace, resume)
        result: Result | None = None
        texts: list[str] = []
        tokens = 0
        over_tokens = False
        try:
            spec = SandboxSpec(
                workspace=workspace.root,
                cwd=workspace.work,
                ro_binds=(install_root(binary),),
                env=self.sandbox_env(workspace, binary),
                network=request.network,
                engine=request.engine,
                egress_socket=egress_socket,
                max_processes=MAX_PROCESSES,
            )
            # stdout goes straight into the transcript (a file: the CLI truncates large
            # output written to a pipe when it exits), and is followed from there.
            proc = await start(
                spec,
                argv,
                stdin=request.message.encode("utf-8"),
                stdout_file=workspace.transcript,
            )
        except SandboxError as exc:
            return _failure(request, f"could not start claude: {exc}"), False
        async with proc:
            if proc.process_limit_error is not None:
                on_event(InterimEvent("warning", {"process_limit": proc.process_limit_error}))
            try:
                async for line in proc.lines():
                    for event in parse_line(line):
                        if isinstance(event, Result):
                            result = event
                            continue
                        if isinstance(event, AssistantText):
                            texts.append(event.text)
                            tokens += event.usage.total
                        _interim(event, on_event)
                    if tokens > request.limits.tokens:
                        over_tokens = True
                        break
            except OutputLineTooLong as exc:
                on_event(InterimEvent("warning", {"error": str(exc)}))
            code = await proc.wait() if not over_tokens else await proc.kill()
            stderr = proc.stderr_tail()
        if over_tokens:
            return (
                _failure(
                    request,
                    f"stopped: the turn used more than its token limit of "
                    f"{request.limits.tokens} (limits.tokens)",
                ),
                False,
            )
        if result is None:
            tail = stderr.strip()[-600:]
            taken = _SESSION_TAKEN in stderr
            if _SESSION_MISSING in stderr:
                return (
                    TurnResult(
                        text="",
                        is_error=True,
                        error=tail,
                        session_lost=True,
                        session_id=request.session_id,
                    ),
                    False,
                )
            return (
                _failure(request, f"claude exited with status {code} without a result: {tail}"),
                taken,
            )
        return self._result(request, result, texts), False

    def _result(self, request: TurnRequest, result: Result, texts: list[str]) -> TurnResult:
        usage = Usage(
            input_tokens=result.usage.input_tokens
            + result.usage.cache_read_tokens
            + result.usage.cache_creation_tokens,
            output_tokens=result.usage.output_tokens,
        )
        text = result.text or "\n\n".join(t for t in texts if t)
        error = None
        if result.is_error:
            error = _limit_message(result.subtype, request) or (
                result.text or "; ".join(result.errors) or f"claude: {result.subtype}"
            )
        lost = result.is_error and _SESSION_MISSING in (error or "")
        return TurnResult(
            text=text[:_TEXT_CAP] if not result.is_error else "",
            usage=usage,
            cost_usd=result.cost_usd,
            session_id=result.session_id or request.session_id,
            is_error=result.is_error,
            error=error[:2000] if error else None,
            num_turns=result.num_turns,
            session_lost=lost,
        )

    # -- the command ----------------------------------------------------------

    def argv(
        self, binary: Path, request: TurnRequest, workspace: Workspace, resume: bool
    ) -> list[str]:
        argv = [
            str(binary),
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--system-prompt-file",
            str(workspace.system_prompt_file),
            "--mcp-config",
            str(workspace.mcp_file),
            "--strict-mcp-config",
        ]
        if request.model:
            argv += ["--model", request.model]
        if request.tools is not None:
            argv += ["--tools", ",".join(request.tools)]
        if request.permission_mode:
            argv += ["--permission-mode", request.permission_mode]
        argv += ["--max-turns", str(request.limits.turns)]
        argv += ["--max-budget-usd", f"{request.limits.spend_usd:.4f}"]
        argv += ["--resume" if resume else "--session-id", request.session_id]
        return argv

    def sandbox_env(self, workspace: Workspace, binary: Path) -> dict[str, str]:
        env = {name: self.env[name] for name in PASSED_THROUGH if self.env.get(name)}
        credential = next((name for name in CREDENTIALS if self.env.get(name)), None)
        if credential is not None:
            env[credential] = self.env[credential]
        env.update(
            {
                "HOME": str(workspace.home),
                "CLAUDE_CONFIG_DIR": str(workspace.config_dir),
                "PATH": f"{binary.parent}:{SANDBOX_PATH}",
                "TMPDIR": str(workspace.tmp),
                "IS_SANDBOX": "1",
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
                "DISABLE_AUTOUPDATER": "1",
                "CLAUDE_CODE_MAX_RETRIES": str(self.settings.claude_max_retries),
            }
        )
        return env

    # -- preconditions --------------------------------------------------------

    def _setup_problem(self) -> str | None:
        if find_claude(self.settings, self.env) is None:
            where = self.settings.claude_bin or "PATH"
            return (
                f"the claude CLI was not found ({where}): install it with "
                "'npm install -g @anthropic-ai/claude-code' or set claude_bin"
            )
        if not any(self.env.get(name) for name in CREDENTIALS):
            return "no credential: set ANTHROPIC_API_KEY or CLAUDE_CODE_OAUTH_TOKEN for the gateway"
        return None

    async def _sandbox_problem(self, engine: str) -> str | None:
        if engine == "none":
            return None
        if engine not in self._preflight_ok:
            check = await preflight("bwrap")
            self._preflight_ok[engine] = (
                None
                if check.ok
                else f"the sandbox is not usable: {check.detail}. Fix: {check.fix} "
                "(or set sandbox: {engine: none} on the definition to run unconfined)"
            )
        return self._preflight_ok[engine]


def _interim(event: object, on_event: EventSink) -> None:
    if isinstance(event, Init):
        on_event(InterimEvent("init", {"session_id": event.session_id, "model": event.model}))
    elif isinstance(event, AssistantText):
        on_event(InterimEvent("text", {"text": event.text[:4000]}))
    elif isinstance(event, ToolUse):
        on_event(InterimEvent("tool_use", {"tool": event.name, "input": event.input}))
    elif isinstance(event, ToolResult):
        on_event(
            InterimEvent(
                "tool_result",
                {
                    "tool_use_id": event.tool_use_id,
                    "is_error": event.is_error,
                    "content": event.content[:2000],
                },
            )
        )
    elif isinstance(event, ApiRetry):
        on_event(InterimEvent("retry", {"attempt": event.attempt, "error": event.error}))


def _limit_message(subtype: str, request: TurnRequest) -> str | None:
    """A limit the CLI enforced, said the way the definition spells it."""
    if subtype == "error_max_turns":
        return (
            f"stopped: the turn reached its limit of {request.limits.turns} model turns "
            "(limits.turns)"
        )
    if subtype == "error_max_budget_usd":
        return (
            f"stopped: the turn reached its spend limit of ${request.limits.spend_usd:.2f} "
            "(limits.spend_usd)"
        )
    return None


def _failure(request: TurnRequest, error: str) -> TurnResult:
    return TurnResult(text="", is_error=True, error=error, session_id=request.session_id)
