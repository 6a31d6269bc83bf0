"""The one exception root every vaultgate package raises from.

It lives in its own top-level module because the three packages are layered
(``vault_adapter`` and ``sandbox`` know nothing of each other or of the
gateway) and still share a root, so a caller can catch everything vaultgate
raises with one ``except VaultgateError``. Every error carries the data a
caller needs to act on it, not only a message.

    VaultgateError
    ├── vault_adapter.errors.VaultError
    │   ├── NoteParseError(path, detail)      a note that cannot be read as a note
    │   ├── VaultPathError(path, detail)      a path that would leave the vault
    │   ├── NoteNotFound(path)
    │   ├── WriteConflict(path, attempts)     a note kept changing under update_fields
    │   ├── NoteExists(path)                  create() found a note already there
    │   ├── RemoteHTTPError(status, ...)      a remote vault refused a request
    │   ├── RemoteUnavailable(...)            a remote vault did not answer, after retries
    │   └── StaleWrite(path)                  a remote note changed under a write
    ├── sandbox.errors.SandboxError
    │   ├── SandboxUnavailable(engine, reason, fix)   bwrap missing or refused
    │   ├── SandboxSpecError(field, detail)           a spec that cannot be run
    │   ├── SandboxStartFailed(program, detail)
    │   ├── SandboxTimeout(seconds, returncode)
    │   └── OutputLineTooLong(limit)
    └── gateway.errors.GatewayError           (the tree is in gateway/errors.py)
"""

from __future__ import annotations


class VaultgateError(Exception):
    """Root of every error vaultgate raises on purpose."""
