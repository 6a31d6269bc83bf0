"""The ``vaultgate`` command line."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from vault_adapter import FolderVault

FIXTURE_VAULT = Path(__file__).resolve().parent.parent / "fixtures" / "vault"


async def _load(root: Path) -> None:
    vault = FolderVault(root)
    notes = broken = 0
    async for item in vault.rescan():
        notes += 1
        if item.error is not None:
            broken += 1
            print(f"  ! {item.error}")
    print(f"Loaded {notes} notes from {root} ({broken} unreadable)")
    for tag, label in [("agent/definition", "agents")]:
        print(f"  {label}: {', '.join(await vault.find_by_tag(tag)) or '(none)'}")
    print(f"  inbox: {', '.join(await vault.list_notes('Inbox')) or '(empty)'}")


def cmd_demo(args: argparse.Namespace) -> int:
    """Load a temporary copy of the example vault and show what it holds."""
    with tempfile.TemporaryDirectory(prefix="vaultgate-demo-") as tmp:
        root = Path(tmp) / "vault"
        shutil.copytree(FIXTURE_VAULT, root)
        asyncio.run(_load(root))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vaultgate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help=cmd_demo.__doc__)
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
