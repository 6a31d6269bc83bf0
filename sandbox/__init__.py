"""Run a command confined: one writable workspace, read-only system, a cleared environment.

This package knows how to confine and bound a process and nothing about what runs inside it.
A ``SandboxSpec`` describes the sandbox; ``start`` runs a command in it and hands back a
``SandboxedProcess`` to stream, wait on or kill; ``run`` is the one-shot form; ``preflight``
says whether the engine works on this machine and, if not, how to fix it. Each command is held
to the spec's ``max_processes`` by a pids cgroup of its own (``pids.py``).
"""

from sandbox.errors import (
    OutputLineTooLong,
    SandboxError,
    SandboxSpecError,
    SandboxStartFailed,
    SandboxTimeout,
    SandboxUnavailable,
)
from sandbox.launch import Launch, plan_launch
from sandbox.preflight import PreflightResult, preflight
from sandbox.process import Completed, SandboxedProcess, run, start
from sandbox.spec import Engine, Network, SandboxSpec, env_from_allowlist

__all__ = [
    "Completed",
    "Engine",
    "Launch",
    "Network",
    "OutputLineTooLong",
    "PreflightResult",
    "SandboxError",
    "SandboxSpec",
    "SandboxSpecError",
    "SandboxStartFailed",
    "SandboxTimeout",
    "SandboxUnavailable",
    "SandboxedProcess",
    "env_from_allowlist",
    "plan_launch",
    "preflight",
    "run",
    "start",
]
