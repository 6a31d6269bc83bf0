"""Errors the gateway raises; the whole tree is drawn in ``vaultgate_errors``.

GatewayError
├── SettingsError(source, detail)          vaultgate.toml or a VAULTGATE_* variable is wrong
├── DefinitionError(path, detail)          an agent definition note that cannot be used
├── RoutingError(reason)                   an inbound message with no agent to go to
├── TurnFailed(exit_code, subtype, stderr_tail)   a backend run that ended badly
├── UnknownThread(thread_id)
└── RegistryError(detail)                  the SQLite registry failed (sqlite3 errors, translated)
"""

from __future__ import annotations

from vaultgate_errors import VaultgateError


class GatewayError(VaultgateError):
    """Root of the gateway's own errors."""


class SettingsError(GatewayError):
    def __init__(self, source: str, detail: str) -> None:
        super().__init__(f"{source}: {detail}")
        self.source = source
        self.detail = detail


class DefinitionError(GatewayError):
    def __init__(self, path: str, detail: str) -> None:
        super().__init__(f"{path}: {detail}")
        self.path = path
        self.detail = detail


class RoutingError(GatewayError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TurnFailed(GatewayError):
    def __init__(self, exit_code: int | None, subtype: str, stderr_tail: str = "") -> None:
        super().__init__(f"turn failed ({subtype}, exit code {exit_code})")
        self.exit_code = exit_code
        self.subtype = subtype
        self.stderr_tail = stderr_tail


class UnknownThread(GatewayError):
    def __init__(self, thread_id: str) -> None:
        super().__init__(f"no thread {thread_id!r}")
        self.thread_id = thread_id


class RegistryError(GatewayError):
    def __init__(self, detail: str) -> None:
        super().__init__(f"registry: {detail}")
        self.detail = detail
