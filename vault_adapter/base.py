"""The interface the gateway programs against, met by every vault adapter.

The folder adapter is the embedded default; the remote adapter speaks a vault
server's REST API. Both meet this protocol (and one contract test suite), so
the gateway never knows which one it has.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from vault_adapter.note import Note
from vault_adapter.scan import Wanted
from vault_adapter.watch import VaultEvent


class HashIndex(Protocol):
    def hash_of(self, path: str) -> str | None:
        """The content hash the adapter last saw (read or wrote) for ``path``."""
        ...


class NoteWatcher(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def get(self) -> VaultEvent: ...

    def __aiter__(self) -> AsyncIterator[VaultEvent]: ...


class Vault(Protocol):
    @property
    def root(self) -> Path:
        """A local folder the gateway may keep its state under (the vault, for a folder)."""
        ...

    @property
    def index(self) -> HashIndex: ...

    async def read(self, path: str) -> Note: ...

    async def exists(self, path: str) -> bool: ...

    async def write(self, path: str, frontmatter: Mapping[str, Any], body: str) -> Note: ...

    async def create(self, path: str, frontmatter: Mapping[str, Any], body: str) -> Note: ...

    async def update_fields(
        self,
        path: str,
        fields: Mapping[str, Any],
        remove: Iterable[str] = (),
        *,
        append_once: tuple[str, str] | None = None,
    ) -> Note: ...

    async def rewrite(self, path: str, transform: Callable[[str], str]) -> Note | None: ...

    async def delete(self, path: str) -> None: ...

    async def list_notes(self, folder: str = "", *, recursive: bool = True) -> list[str]: ...

    async def find_by_tag(self, tag: str) -> list[str]: ...

    async def find_by_field(self, key: str, value: Any) -> list[str]: ...

    def rescan(self, wanted: Wanted | None = None) -> AsyncIterator[Any]:
        """Index every note; yield broken ones, and in full those ``wanted`` accepts
        (every note without it)."""
        ...

    def watch(self) -> NoteWatcher: ...
