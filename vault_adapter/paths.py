"""Vault-relative paths: validation, resolution inside the root, and ``slug``.

Every path that reaches the file system goes through :func:`resolve_in`, which
refuses ``..``, absolute paths, NUL bytes and symlinks that lead outside the
vault. Paths are POSIX strings relative to the vault root everywhere above
this module; :class:`pathlib.Path` objects never leave the adapter.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path, PurePosixPath

from vault_adapter.errors import VaultPathError

_SLUG_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
# Components of anything but '/', '\\' and NUL, none empty or '.', not starting
# with a drive letter: a path normalize() would hand back unchanged, if no '..'.
_CANONICAL = re.compile(r"(?![A-Za-z]:)(?!\.(?:/|\Z))[^/\\\x00]+(?:/(?!\.(?:/|\Z))[^/\\\x00]+)*\Z")


def slug(text: str) -> str:
    """Map every character outside ``[A-Za-z0-9_-]`` to ``-`` (SPEC 3).

    The result can never contain a path separator or a dot, so it is safe as a
    single path component. An empty input gives ``-`` rather than an empty
    component.

    >>> slug("../../etc/passwd")
    '------etc-passwd'
    """
    return _SLUG_UNSAFE.sub("-", text) or "-"


def normalize(rel: str) -> str:
    """Check a vault-relative path and return it in canonical POSIX form.

    Raises :class:`VaultPathError` for empty, absolute, ``..``-bearing or
    NUL-bearing paths. ``.`` components and doubled slashes are dropped.
    """
    if isinstance(rel, str) and _CANONICAL.match(rel) and ".." not in rel.split("/"):
        return rel  # already canonical: the common case, decided without PurePosixPath
    if not isinstance(rel, str) or not rel:
        raise VaultPathError(str(rel), "empty path")
    if "\x00" in rel:
        raise VaultPathError(rel, "NUL byte in path")
    if "\\" in rel:
        raise VaultPathError(rel, "backslash in path; use '/' separators")
    if rel.startswith("/") or re.match(r"^[A-Za-z]:", rel):
        raise VaultPathError(rel, "absolute path; give a path relative to the vault")
    parts = [p for p in PurePosixPath(rel).parts if p not in ("", ".")]
    if ".." in parts:
        raise VaultPathError(rel, "'..' is not allowed in a vault path")
    if not parts:
        raise VaultPathError(rel, "path names the vault root, not a note")
    clean = "/".join(parts)
    if re.match(r"^[A-Za-z]:", clean):
        # Checked again once './' is gone, so the canonical form is stable.
        raise VaultPathError(rel, "absolute path; give a path relative to the vault")
    return clean


def resolve_in(root: Path, rel: str) -> Path:
    """Absolute path of ``rel`` inside ``root`` (already resolved), following symlinks.

    The deepest existing ancestor is resolved, so a symlinked folder or file
    that points outside the vault is refused even when the note itself does
    not exist yet.
    """
    clean = normalize(rel)
    base = str(root)
    if plain_below(root, clean):
        return root / clean
    # A symlink on the way: realpath follows every one that exists and leaves
    # the missing tail as it is, which is what a write to a new note needs.
    real = os.path.realpath(os.path.join(base, clean))
    if real != base and not real.startswith(base + os.sep):
        raise VaultPathError(rel, "resolves outside the vault (symlink?)")
    return root / clean


def plain_below(root: Path | str, clean: str) -> bool:
    """True when no existing component of ``clean`` (normalized) under ``root`` is a
    symlink.

    Such a path (``..`` is already refused) can only name something inside the
    vault, so the costlier realpath walk is skipped for the common case."""
    current = str(root)
    for part in clean.split("/"):
        current = f"{current}/{part}"
        try:
            mode = os.lstat(current).st_mode
        except (FileNotFoundError, NotADirectoryError):
            return True  # the rest does not exist yet: nothing further to follow
        except OSError:
            return False  # let realpath decide
        if stat.S_ISLNK(mode):
            return False
    return True


def relative_to_root(root: Path, path: Path) -> str:
    """Vault-relative POSIX form of an absolute path under ``root``."""
    return path.relative_to(root).as_posix()


def is_hidden(rel: str) -> bool:
    """True when any component starts with a dot (``.obsidian/``, ``.vaultgate/``, temp files)."""
    return any(part.startswith(".") for part in rel.split("/"))
