"""The exceptions of the sandbox package, all under one root.

    VaultgateError (vaultgate_errors)
    └── SandboxError
        ├── SandboxUnavailable(engine, reason, fix)   the engine cannot run here; says how to fix it
        ├── SandboxSpecError(field, detail)           a spec that cannot be honoured as written
        ├── SandboxStartFailed(program, detail)       the program could not be started at all
        ├── SandboxTimeout(seconds, returncode)       the command outlived its time; killed
        └── OutputLineTooLong(limit)                  a stdout line exceeded the framing cap

Errors from below (OSError when a process cannot start) are translated once, at the boundary
in process.py, with ``raise ... from``: callers never catch subprocess or OS errors themselves.
"""

from __future__ import annotations

from vaultgate_errors import VaultgateError


class SandboxError(VaultgateError):
    """Root of every error raised by the sandbox package."""


class SandboxUnavailable(SandboxError):
    """The requested engine cannot confine anything on this machine."""

    def __init__(self, engine: str, reason: str, fix: str) -> None:
        super().__init__(f"sandbox engine {engine!r} is unavailable: {reason} (fix: {fix})")
        self.engine = engine
        self.reason = reason
        self.fix = fix


class SandboxSpecError(SandboxError):
    """A ``SandboxSpec`` field holds a value the sandbox cannot honour."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"invalid sandbox spec: {field}: {detail}")
        self.field = field
        self.detail = detail


class SandboxStartFailed(SandboxError):
    """The process could not be started at all (not found, not executable, ...)."""

    def __init__(self, program: str, detail: str) -> None:
        super().__init__(f"could not start {program}: {detail}")
        self.program = program
        self.detail = detail


class SandboxTimeout(SandboxError):
    """The confined command ran past its time limit; it has been killed and reaped."""

    def __init__(self, seconds: float, returncode: int | None) -> None:
        super().__init__(f"command still running after {seconds:g}s; killed")
        self.seconds = seconds
        self.returncode = returncode


class OutputLineTooLong(SandboxError):
    """A line on stdout grew past the cap, so it cannot be framed safely."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"a stdout line exceeded {limit} bytes")
        self.limit = limit
