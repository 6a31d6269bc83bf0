"""The ``vaultgate`` command line: one sub-command per noun, every listing with ``-o``.

Commands talk to the gateway running for the vault when there is one (found
through ``.vaultgate/gateway.json``) and otherwise read the vault and the
registry directly; see ``gateway.client``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gateway import __version__
from gateway.check import run_checks
from gateway.client import CliError, Local, Remote, remote_for
from gateway.control import VERBS
from gateway.errors import GatewayError
from gateway.output import FORMATS, Format, render, render_one
from gateway.serve import demo, serve
from gateway.settings import Settings, load_settings
from gateway.top import rows as thread_rows
from vaultgate_errors import VaultgateError

THREAD_COLUMNS = ("thread", "agent", "status", "turns", "tokens", "cost", "last")
AGENT_COLUMNS = ("name", "channels", "mode", "backend", "status")
MESSAGE_COLUMNS = ("id", "status", "sender", "text", "reply")
EVENT_COLUMNS = ("id", "ts", "kind", "turn_id", "data")
JOB_COLUMNS = ("id", "agent", "cron", "status", "next_run_at", "last_status")


def _vault_root(vault: str) -> Path:
    root = Path(vault).expanduser()
    if not root.is_dir():
        raise GatewayError(
            f"no vault at {root}: give an existing folder with --vault "
            "(or create one with 'vaultgate init DIR')"
        )
    return root.resolve()


class Context:
    """The vault a command works on, its settings, and the gateway if one runs."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.root = _vault_root(args.vault)
        self.settings: Settings = load_settings(self.root)
        self.output: Format = getattr(args, "output", "table")
        self.remote: Remote | None = remote_for(self.root, self.settings)
        self.local = Local(self.root, self.settings)

    def thread_id(self, given: str) -> str:
        if ":" in given or self.remote is None:
            return given
        threads = self.remote.call("GET", "/api/threads", params={"limit": 1000})["threads"]
        matches = [t["id"] for t in threads if t["id"].split(":", 1)[1] == given]
        if len(matches) == 1:
            return str(matches[0])
        if matches:
            raise CliError(f"{given!r} is ambiguous: {', '.join(matches)}")
        raise CliError(f"no thread {given!r} (see 'vaultgate threads list')")

    def print_rows(self, rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
        print(render(rows, columns, self.output))


# -- commands -----------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    """Watch the vault, run turns and serve the HTTP API, in the foreground.

    Example: vaultgate serve --vault ~/notes --port 1941
    """
    root = _vault_root(args.vault)
    settings = load_settings(root, host=args.host, port=args.port)
    return asyncio.run(serve(root, settings))


def cmd_demo(args: argparse.Namespace) -> int:
    """A full round trip on a temporary copy of the example vault, offline.

    Example: vaultgate demo
    """
    return asyncio.run(demo())


def cmd_init(args: argparse.Namespace) -> int:
    """Create a vault (or add what is missing to a folder): an example agent,
    the folders, and a commented vaultgate.toml. Nothing existing is overwritten.

    Example: vaultgate init ~/notes
    """
    from gateway.init import init_vault

    root = Path(args.dir).expanduser().resolve()
    for line in init_vault(root):
        print(line)
    print(f"\nNext: vaultgate serve --vault {root}")
    print(f"Then drop a note into {root / 'Inbox'} with 'agent: echo' in its frontmatter.")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Check the vault's definitions, dossiers and settings, and whether claude and the
    bubblewrap sandbox are usable on this machine. Exits 1 when something fails.

    Example: vaultgate check --vault ~/notes
    """
    root = _vault_root(args.vault)
    checks = asyncio.run(run_checks(root))
    rows = [{"level": c.level.upper(), "check": c.name, "detail": c.detail} for c in checks]
    if args.output == "table":
        for row in rows:
            print(f"{row['level']:<5} {row['check']:<22} {row['detail']}")
    else:
        print(render(rows, ("level", "check", "detail"), args.output))
    failed = [c for c in checks if c.level == "fail"]
    if args.output == "table":
        print(f"\n{len(failed)} problem(s)" if failed else "\nall good")
    return 1 if failed else 0


def cmd_send(args: argparse.Namespace) -> int:
    """Send a message to an agent: through the running gateway, or, with none running,
    by writing the inbound note (the next 'vaultgate serve' answers it).

    Example: vaultgate send researcher "What changed?" --subject acme-deal --wait
    """
    ctx = Context(args)
    message = {
        "agent": args.agent,
        "text": args.text,
        "subject": args.subject,
        "sender": args.sender or "cli",
    }
    if ctx.remote is None:
        if args.wait:
            raise CliError(
                "no gateway is running for this vault, so --wait cannot wait: "
                "start 'vaultgate serve', or send without --wait"
            )
        result = ctx.local.send(**message)
        print(render_one(result, ctx.output))
        if ctx.output == "table":
            print("No gateway is running: the message waits in the note until 'vaultgate serve'.")
        return 0
    body = {k: v for k, v in message.items() if v is not None}
    if args.wait:
        body |= {"wait": True, "timeout_s": args.timeout}
    result = ctx.remote.call(
        "POST", "/api/messages", json=body, timeout=args.timeout + 10 if args.wait else 30
    )
    if ctx.output == "table" and args.wait and result.get("reply") is not None:
        print(result["reply"])
        return 0 if result.get("status") == "done" else 1
    print(render_one(result, ctx.output))
    return 0


def cmd_agents(args: argparse.Namespace) -> int:
    """List the agents: name, channels, mode, backend, status.

    Example: vaultgate agents -o json
    """
    ctx = Context(args)
    if ctx.remote is not None:
        rows = ctx.remote.call("GET", "/api/agents")["agents"]
    else:
        rows = ctx.local.agents()
    ctx.print_rows(rows, AGENT_COLUMNS)
    return 0


def cmd_threads(args: argparse.Namespace) -> int:
    """List threads, or show one, its messages or its events.

    Examples: vaultgate threads list --agent researcher
              vaultgate threads show research:researcher--acme-deal
              vaultgate threads messages researcher--acme-deal -o jsonl
    """
    ctx = Context(args)
    action = args.action
    if action == "list":
        filters = {
            "agent": args.agent,
            "channel": args.channel,
            "status": args.status,
            "since": args.since,
            "limit": args.limit,
        }
        if ctx.remote is not None:
            params = {k: v for k, v in filters.items() if v is not None}
            rows = ctx.remote.call("GET", "/api/threads", params=params)["threads"]
        else:
            rows = ctx.local.threads(**filters)
        if ctx.output == "table":
            rows = [{**row, "thread": row["id"]} for row in thread_rows(rows)]
        ctx.print_rows(rows, THREAD_COLUMNS)
        return 0
    if not args.thread:
        raise CliError(f"'threads {action}' needs a THREAD (see 'vaultgate threads list')")
    thread_id = ctx.thread_id(args.thread)
    if action == "show":
        item = (
            ctx.remote.call("GET", f"/api/threads/{thread_id}")
            if ctx.remote
            else ctx.local.thread(thread_id)
        )
        print(render_one(item, ctx.output))
    elif action == "messages":
        rows = (
            ctx.remote.call(
                "GET", f"/api/threads/{thread_id}/messages", params={"limit": args.limit}
            )["messages"]
            if ctx.remote
            else ctx.local.messages(thread_id, args.limit)
        )
        ctx.print_rows(rows, MESSAGE_COLUMNS)
    else:
        rows = (
            ctx.remote.call(
                "GET", f"/api/threads/{thread_id}/events", params={"limit": args.limit}
            )["events"]
            if ctx.remote
            else ctx.local.events(thread_id, args.limit)
        )
        ctx.print_rows(rows, EVENT_COLUMNS)
    return 0


def _intervention(verb: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        ctx = Context(args)
        if ctx.remote is None:
            hint = " (or set 'control: paused' in the thread note)" if verb == "pause" else ""
            raise CliError(
                f"no gateway is running for this vault: {verb} needs one; "
                f"start it with 'vaultgate serve'{hint}"
            )
        thread_id = ctx.thread_id(args.thread)
        result = ctx.remote.call("POST", f"/api/threads/{thread_id}/{verb}")
        if ctx.output == "table":
            print(f"{result['id']}: {result['status']}")
        else:
            print(render_one(result, ctx.output))
        return 0

    run.__doc__ = {
        "pause": "Pause a thread: no new turn starts; its queue is kept.",
        "resume": "Resume a paused or terminated thread.",
        "terminate": "Stop the thread's running turn now and mark the thread terminated.",
        "reset": "Make the thread's next turn start a fresh session.",
    }[verb] + f"\n\n    Example: vaultgate {verb} research:researcher--acme-deal"
    return run


def cmd_jobs(args: argparse.Namespace) -> int:
    """List scheduled jobs, or run one now.

    Examples: vaultgate jobs list
              vaultgate jobs run daily-brief
    """
    ctx = Context(args)
    if args.action == "run":
        if not args.job:
            raise CliError("'jobs run' needs a job id (see 'vaultgate jobs list')")
        if ctx.remote is None:
            raise CliError(
                "no gateway is running for this vault: 'jobs run' needs one; "
                "start it with 'vaultgate serve'"
            )
        result = ctx.remote.call("POST", f"/api/jobs/{args.job}/run")
        print(render_one(result, ctx.output))
        return 0
    rows = (
        ctx.remote.call("GET", "/api/jobs")["jobs"] if ctx.remote is not None else ctx.local.jobs()
    )
    ctx.print_rows(rows, JOB_COLUMNS)
    return 0


def cmd_top(args: argparse.Namespace) -> int:
    """A live table of threads, refreshed in place (Ctrl-C to leave).

    Example: vaultgate top --interval 2
    """
    from gateway.top import run_top

    return run_top(Context(args), args.interval, args.iterations)


# -- the parser ---------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vaultgate",
        description="A notes vault as an agent inbox.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"vaultgate {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    default_vault = os.environ.get("VAULTGATE_VAULT", ".")

    def command(
        name: str,
        func: Callable[[argparse.Namespace], int],
        help_text: str,
        *,
        vault: bool = True,
        output: bool = False,
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            help=help_text,
            description=func.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if vault:
            p.add_argument(
                "--vault",
                default=default_vault,
                help="the vault folder (default: $VAULTGATE_VAULT or .)",
            )
        if output:
            p.add_argument(
                "-o",
                "--output",
                choices=FORMATS,
                default="table",
                help="table (default), json or jsonl",
            )
        p.set_defaults(func=func)
        return p

    p = command("init", cmd_init, "create a vault with an example agent", vault=False)
    p.add_argument("dir", nargs="?", default=".", help="the folder (default: .)")

    p = command("serve", cmd_serve, "run the gateway in the foreground")
    p.add_argument("--host", default=None, help="HTTP address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="HTTP port (default 1941)")

    command("demo", cmd_demo, "a round trip on a temporary example vault", vault=False)
    command("check", cmd_check, "check definitions, settings, claude and bwrap", output=True)

    p = command("send", cmd_send, "send a message to an agent", output=True)
    p.add_argument("agent", help="the agent's name")
    p.add_argument("text", help="the message")
    p.add_argument("--subject", help="the thread's subject (and dossier)")
    p.add_argument("--sender", help="who the message is from (default: cli)")
    p.add_argument("--wait", action="store_true", help="wait for the reply and print it")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds --wait waits")

    command("agents", cmd_agents, "list agents", output=True)

    p = command(
        "threads", cmd_threads, "list threads; show one, its messages or events", output=True
    )
    p.add_argument("action", choices=("list", "show", "messages", "events"))
    p.add_argument("thread", nargs="?", help="a thread id (channel:leaf, or the leaf)")
    p.add_argument("--agent")
    p.add_argument("--channel")
    p.add_argument("--status")
    p.add_argument("--since", help="ISO time: threads updated since then")
    p.add_argument("--limit", type=int, default=100)

    p = command("top", cmd_top, "live table of threads")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    p.add_argument("--iterations", type=int, default=0, help=argparse.SUPPRESS)

    p = command("jobs", cmd_jobs, "list scheduled jobs, or run one now", output=True)
    p.add_argument("action", choices=("list", "run"))
    p.add_argument("job", nargs="?", help="the job's id (its note's file name)")

    for verb in VERBS:
        p = command(verb, _intervention(verb), f"{verb} a thread", output=True)
        p.add_argument("thread", help="a thread id (channel:leaf, or the leaf)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        code: int = args.func(args)
    except CliError as exc:
        print(f"vaultgate: {exc}", file=sys.stderr)
        return 1
    except VaultgateError as exc:
        print(f"vaultgate: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
