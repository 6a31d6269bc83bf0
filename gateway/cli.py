"""The ``vaultgate`` command line: one sub-command per noun."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway import __version__
from gateway.errors import GatewayError
from gateway.serve import demo, serve
from gateway.settings import load_settings
from vaultgate_errors import VaultgateError


def cmd_serve(args: argparse.Namespace) -> int:
    """Watch the vault, run turns and serve the HTTP API, in the foreground.

    Example: vaultgate serve --vault ~/notes --port 1941
    """
    root = Path(args.vault).expanduser()
    if not root.is_dir():
        raise GatewayError(f"no vault at {root}: give an existing folder with --vault")
    settings = load_settings(root, host=args.host, port=args.port)
    return asyncio.run(serve(root.resolve(), settings))


def cmd_demo(args: argparse.Namespace) -> int:
    """A full round trip on a temporary copy of the example vault, offline.

    Example: vaultgate demo
    """
    return asyncio.run(demo())


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
