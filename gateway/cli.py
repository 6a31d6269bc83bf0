"""The ``vaultgate`` command line: one sub-command per noun."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from gateway import __version__
from gateway.check import run_checks
from gateway.errors import GatewayError
from gateway.serve import demo, serve
from gateway.settings import load_settings
from vaultgate_errors import VaultgateError


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


def cmd_check(args: argparse.Namespace) -> int:
    """Check the vault's definitions, dossiers and settings, and whether claude and the
    bubblewrap sandbox are usable on this machine. Exits 1 when something fails.

    Example: vaultgate check --vault ~/notes
    """
    root = _vault_root(args.vault)
    checks = asyncio.run(run_checks(root))
    if args.output == "json":
        print(json.dumps([asdict(c) for c in checks], indent=2))
    else:
        for check in checks:
            print(f"{check.level.upper():<5} {check.name:<22} {check.detail}")
    failed = [c for c in checks if c.level == "fail"]
    if args.output != "json":
        print(f"\n{len(failed)} problem(s)" if failed else "\nall good")
    return 1 if failed else 0


def _vault_root(vault: str) -> Path:
    root = Path(vault).expanduser()
    if not root.is_dir():
        raise GatewayError(f"no vault at {root}: give an existing folder with --vault")
    return root.resolve()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vaultgate",
        description="A notes vault as an agent inbox.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"vaultgate {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve_p = sub.add_parser(
        "serve",
        help="run the gateway in the foreground",
        description=cmd_serve.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve_p.add_argument("--vault", default=".", help="the vault folder (default: .)")
    serve_p.add_argument("--host", default=None, help="HTTP address (default 127.0.0.1)")
    serve_p.add_argument("--port", type=int, default=None, help="HTTP port (default 1941)")
    serve_p.set_defaults(func=cmd_serve)

    demo_p = sub.add_parser(
        "demo",
        help="a round trip on a temporary example vault",
        description=cmd_demo.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo_p.set_defaults(func=cmd_demo)

    check_p = sub.add_parser(
        "check",
        help="check definitions, settings, claude and bwrap",
        description=cmd_check.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check_p.add_argument("--vault", default=".", help="the vault folder (default: .)")
    check_p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    check_p.set_defaults(func=cmd_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    try:
        code: int = args.func(args)
    except VaultgateError as exc:
        print(f"vaultgate: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
