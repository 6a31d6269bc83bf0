"""Notes and folders: reading, writing, watching and indexing a Markdown vault.

This package knows nothing about agents. The gateway asks it for notes by
path, tag or field, writes notes atomically, stamps frontmatter fields
without disturbing anything else, and listens to its settled change events.
"""

from vault_adapter.base import Vault
from vault_adapter.errors import (
    NoteNotFound,
    NoteParseError,
    VaultError,
    VaultPathError,
    WriteConflict,
)
from vault_adapter.folder import FolderVault, NoteExists, ScanItem
from vault_adapter.index import IndexEntry, NoteIndex
from vault_adapter.note import Note, normalize_tags, parse_note, render_note
from vault_adapter.paths import normalize, slug
from vault_adapter.remote import RemoteVault, parse_webhook
from vault_adapter.watch import VaultEvent, Watcher

__all__ = [
    "FolderVault",
    "IndexEntry",
    "Note",
    "NoteExists",
    "NoteIndex",
    "NoteNotFound",
    "NoteParseError",
    "RemoteVault",
    "ScanItem",
    "Vault",
    "VaultError",
    "VaultEvent",
    "VaultPathError",
    "Watcher",
    "WriteConflict",
    "normalize",
    "normalize_tags",
    "parse_note",
    "parse_webhook",
    "render_note",
    "slug",
]
