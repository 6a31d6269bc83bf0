"""Errors of the vault layer; the tree is drawn in ``vaultgate_errors``.

Lower-level failures (yaml, UnicodeDecodeError, OSError) are translated here,
once, into errors that name the vault-relative path, so a caller can stamp the
note or tell the user which file to fix.
"""

from __future__ import annotations

from vaultgate_errors import VaultgateError


class VaultError(VaultgateError):
    """Root of the vault adapter's errors."""


class NoteParseError(VaultError):
    """A file that cannot be read as a note: broken YAML, bad bytes, too big."""

    def __init__(self, path: str, detail: str) -> None:
        super().__init__(f"{path}: {detail}")
        self.path = path
        self.detail = detail


class VaultPathError(VaultError):
    """A path that is not a safe vault-relative path (``..``, absolute, escaping symlink)."""

    def __init__(self, path: str, detail: str) -> None:
        super().__init__(f"{path!r}: {detail}")
        self.path = path
        self.detail = detail


class NoteNotFound(VaultError):
    """The note does not exist (or vanished while it was being read)."""

    def __init__(self, path: str) -> None:
        super().__init__(f"{path}: no such note")
        self.path = path


class WriteConflict(VaultError):
    """``update_fields`` could not find a quiet moment to write after several tries."""

    def __init__(self, path: str, attempts: int) -> None:
        super().__init__(f"{path}: changed on disk during each of {attempts} attempts")
        self.path = path
        self.attempts = attempts
