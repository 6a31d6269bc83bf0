"""Choose the engine: from a spec and a command to the exact process to start.

Both engines give the command the same contract - the spec's environment and nothing else, the
spec's working directory - and differ only in confinement. The ``none`` engine runs the command
directly on the host: every file the gateway can read, the command can read. It exists for
machines without namespaces, and is used only when a spec asks for it by name; nothing here ever
falls back to it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sandbox.bwrap import bwrap_argv, find_bwrap
from sandbox.errors import SandboxSpecError
from sandbox.spec import SandboxSpec


@dataclass(frozen=True)
class Launch:
    """A process ready to start: argv, its complete environment, and its working directory."""

    argv: list[str]
    env: Mapping[str, str]
    cwd: Path


def plan_launch(
    spec: SandboxSpec, command: Sequence[str], *, search_path: str | None = None
) -> Launch:
    """How to start ``command`` under ``spec``; ``search_path`` is where to look for bwrap."""
    if not command:
        raise SandboxSpecError("command", "is empty")
    if not spec.workdir.is_dir():
        raise SandboxSpecError("cwd", f"{spec.workdir} is not a directory")
    if spec.engine == "none":
        return Launch(argv=list(command), env=dict(spec.env), cwd=spec.workdir)
    argv = bwrap_argv(spec, command, bwrap=find_bwrap(search_path))
    # bwrap itself gets the same minimal environment: --clearenv already empties the command's,
    # and this keeps the gateway's own variables out of bwrap's /proc/<pid>/environ as well.
    return Launch(argv=argv, env=dict(spec.env), cwd=spec.workspace)
