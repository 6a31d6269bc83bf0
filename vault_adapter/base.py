"""The interface the gateway programs against, met by every vault adapter.

The folder adapter is the embedded default; a remote adapter speaking a vault
server's REST API meets the same protocol, so the gateway never knows which
one it has.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any, Protocol

from vault_adapter.note import Note


class Vault(Protocol):
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

    async def delete(self, path: str) -> None: ...

    async def list_notes(self, folder: str = "", *, recursive: bool = True) -> list[str]: ...

    async def find_by_tag(self, tag: str) -> list[str]: ...

    async def find_by_field(self, key: str, value: Any) -> list[str]: ...

    def rescan(self) -> AsyncIterator[Any]: ...
