"""A vault on a parachute-vault server, behind the same interface as the folder vault.

The gateway cannot tell the two apart: the same async methods, the same
:class:`Note` (a remote note renders to the text a folder note would hold, so
content hashes agree), the same :class:`NoteIndex`, a watcher that yields the
same :class:`VaultEvent` s. Routes, shapes and errors live in ``remote_http``
and ``remote_map``; change events in ``remote_poll``; this module is the
vault's behaviour on top of them.

Concurrency follows the folder adapter's rule, never overwrite a newer edit,
with the server's own token: every update reads the note, computes the change
and sends it with ``if_updated_at`` set to the ``updatedAt`` it read. The
server applies it in one conditional UPDATE or answers 409, and we re-read and
re-apply (bounded, then :class:`WriteConflict`). Only named fields are sent
(a shallow merge-patch), so even a lost race never costs a field someone
else set. Our own writes to one path run one at a time, so they do not
conflict with each other.

``root`` is a local folder the caller gives (``state_root``): the gateway
keeps its registry, workspaces and transcripts under ``root / state_dir``, and
a remote vault has no folder of its own for that.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from vault_adapter.base import Vault
from vault_adapter.errors import NoteNotFound, NoteParseError, VaultError, WriteConflict
from vault_adapter.folder import ScanItem
from vault_adapter.index import NoteIndex
from vault_adapter.note import (
    DEFAULT_MAX_NOTE_BYTES,
    Note,
    content_hash,
    normalize_tag,
    normalize_tags,
)
from vault_adapter.paths import normalize
from vault_adapter.remote_http import StaleWrite, VaultHTTP, note_target
from vault_adapter.remote_map import (
    ApiNote,
    addresses,
    api_note,
    api_notes,
    appended,
    create_body,
    frontmatter_of,
    jsonable,
    note_text,
    parse_fields,
    patch_body,
    same,
    server_path,
    to_note,
    vault_path,
)
from vault_adapter.remote_poll import RemotePoller, SyncState
from vault_adapter.remote_webhook import parse_webhook
from vault_adapter.scan import NoteSummary, Wanted

__all__ = ["RemotePoller", "RemoteVault", "parse_webhook"]

_WRITE_ATTEMPTS = 8
_LEAN = {"include_content": "false", "include_metadata": "false"}


class RemoteVault:
    """Notes on a parachute-vault server (``<url>/vault/<name>/api``), indexed and polled."""

    def __init__(
        self,
        url: str,
        name: str = "default",
        *,
        token: str | None,
        state_root: str | os.PathLike[str],
        poll_interval_s: float = 2.0,
        poll_overlap_s: float = 1.0,
        full_scan_every: int = 30,
        timeout_s: float = 10.0,
        max_retries: int = 3,
        backoff_s: float = 0.25,
        page_size: int = 200,
        max_note_bytes: int = DEFAULT_MAX_NOTE_BYTES,
        index_fields: Iterable[str] = (),
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """``state_root`` is created when missing; ``transport`` is a seam for tests."""
        root = Path(state_root)
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise VaultError(f"state_root {root}: cannot create: {exc.strerror or exc}") from exc
        self.root = root.resolve()
        self.url = url
        self.name = name
        self.index = NoteIndex(index_fields)
        self.state = SyncState()
        self.max_note_bytes = max_note_bytes
        self.poll_interval_s = poll_interval_s
        self.poll_overlap_s = poll_overlap_s
        self.full_scan_every = full_scan_every
        self.page_size = max(1, page_size)
        self._http = VaultHTTP(
            url,
            name,
            token,
            timeout_s=timeout_s,
            max_retries=max_retries,
            backoff_s=backoff_s,
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> RemoteVault:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- reading ------------------------------------------------------------

    async def read(self, path: str) -> Note:
        rel = normalize(path)
        return self.note_of(await self._get(rel), rel)

    async def exists(self, path: str) -> bool:
        try:
            await self._get(normalize(path), content=False)
        except NoteNotFound:
            return False
        return True

    async def list_notes(self, folder: str = "", *, recursive: bool = True) -> list[str]:
        """Vault paths of the Markdown notes under ``folder`` (dot-folders skipped)."""
        prefix = normalize(folder) + "/" if folder else ""
        params = dict(_LEAN, path_prefix=prefix) if prefix else dict(_LEAN)
        found: set[str] = set()
        for api in await self._list(params):
            rel = vault_path(api)
            # The server matches the prefix with LIKE (case-insensitive, '_' a wildcard).
            inside = rel is not None and rel.startswith(prefix)
            if rel is not None and inside and (recursive or "/" not in rel[len(prefix) :]):
                found.add(rel)
        return sorted(found)

    async def find_by_tag(self, tag: str) -> list[str]:
        wanted = normalize_tag(tag)
        params = dict(_LEAN)
        if wanted and "," not in wanted:  # the server splits ?tag= on commas
            params["tag"] = wanted
        return sorted(
            rel
            for api in await self._list(params)
            if (rel := vault_path(api)) is not None
            and any(t.casefold() == wanted.casefold() for t in normalize_tags(api.tags))
        )

    async def find_by_field(self, key: str, value: Any) -> list[str]:
        """Paths of notes whose frontmatter ``key`` equals ``value``.

        The server filters string values (``meta[key]=value``); other values
        are compared here, after listing. Any key works, indexed or not.
        """
        wanted = jsonable(value, f"find_by_field({key!r})")
        params = {"include_content": "false"}
        if isinstance(wanted, str) and key != "tags" and not {"[", "]"} & set(key):
            params[f"meta[{key}]"] = wanted
        found = []
        for api in await self._list(params):
            rel = vault_path(api)
            fields = frontmatter_of(api)
            if rel is not None and key in fields and fields[key] == wanted:
                found.append(rel)
        return sorted(found)

    async def rescan(self, wanted: Wanted | None = None) -> AsyncIterator[ScanItem]:
        """Every note in the vault, each read once; fills the index as it goes.

        With ``wanted``, only the notes it accepts (and broken ones) are yielded, as
        :meth:`FolderVault.rescan` does; the server sends every note whole anyway."""
        async for page in self._pages({"include_content": "true"}):
            for api in page:
                rel = vault_path(api)
                if rel is None:
                    continue
                self.state.observe(rel, api.updated_at)
                try:
                    note = self.note_of(api, rel)
                except NoteParseError as exc:
                    self.index.put_broken(rel, content_hash(note_text(api).encode("utf-8")))
                    yield ScanItem(rel, None, exc)
                    continue
                self.index.put(note)
                if wanted is None or wanted(NoteSummary.of(note, self.index.fields)):
                    yield ScanItem(rel, note, None)
        self.index.ready = True

    def watch(self) -> RemotePoller:
        """A poller (start it, or use ``async with``) yielding :class:`VaultEvent` s."""
        return RemotePoller(
            self, interval_s=self.poll_interval_s, full_scan_every=self.full_scan_every
        )

    # -- writing ------------------------------------------------------------

    async def create(self, path: str, frontmatter: Mapping[str, Any], body: str) -> Note:
        """Create a note that must not exist yet; :class:`NoteExists` if it does.

        The server's unique path index decides, so two writers can never both
        create it. A 409 after a retried request may be our own first attempt
        that landed while its answer was lost: when the note there is exactly
        ours, that is success, not a conflict.
        """
        rel = normalize(path)
        payload = create_body(rel, frontmatter, body)
        async with self.state.writing(rel):
            reply = await self._http.request("POST", "notes", body=payload, note=rel, allow=(409,))
            if reply.status != 409:
                return self._stored(api_note(reply.data, f"POST {rel}"), rel)
            mine = await self._holds(rel, payload) if reply.attempts > 1 else None
            if mine is None:
                raise self._http.failure(reply, "POST notes", rel)
            return self._stored(mine, rel)

    async def write(self, path: str, frontmatter: Mapping[str, Any], body: str) -> Note:
        """Create or replace a whole note (tags, every field, body)."""
        rel = normalize(path)
        payload = create_body(rel, frontmatter, body)
        async with self.state.writing(rel):
            for _ in range(_WRITE_ATTEMPTS):
                current = await self.fetch(rel)
                if current is None:
                    reply = await self._http.request(
                        "POST", "notes", body=payload, note=rel, allow=(409,)
                    )
                    if reply.status != 409:
                        return self._stored(api_note(reply.data, f"POST {rel}"), rel)
                    if reply.error_type != "path_conflict":
                        raise self._http.failure(reply, "POST notes", rel)
                    continue  # someone created it meanwhile: replace theirs next round
                change = patch_body(rel, current, frontmatter, body)
                stored = await self._patch(rel, current, change) if change else current
                if stored is not None:
                    return self._stored(stored, rel)
        raise WriteConflict(rel, _WRITE_ATTEMPTS)

    async def update_fields(
        self,
        path: str,
        fields: Mapping[str, Any],
        remove: Iterable[str] = (),
        *,
        append_once: tuple[str, str] | None = None,
    ) -> Note:
        """Set ``fields`` (and drop ``remove``) in a note's frontmatter; nothing else changes.

        ``append_once=(marker, text)`` also appends ``text`` to the body unless
        the body already contains ``marker``. A field set to None is removed
        (the server deletes keys patched to null).
        """
        rel = normalize(path)
        wanted = dict(fields)
        dropping = {key for key in remove if key not in wanted}
        async with self.state.writing(rel):
            for _ in range(_WRITE_ATTEMPTS):
                current = await self._get(rel)
                note = self.note_of(current, rel)
                frontmatter = {k: v for k, v in note.frontmatter.items() if k not in dropping}
                frontmatter.update(wanted)
                change = patch_body(rel, current, frontmatter, note.body)
                if append_once is not None and append_once[0] not in note.body:
                    change["append"] = appended(note.body, append_once[1])
                if not change:
                    return note
                stored = await self._patch(rel, current, change)
                if stored is not None:
                    return self._stored(stored, rel)
        raise WriteConflict(rel, _WRITE_ATTEMPTS)

    async def rewrite(self, path: str, transform: Callable[[str], str]) -> Note | None:
        """Replace a note's whole text with ``transform(text)``, never over a newer edit.

        A remote note's fields are JSON, so it can hardly hold broken YAML;
        this exists for parity. A result that does not parse is not written
        (the server cannot store broken frontmatter) and None is returned.
        """
        rel = normalize(path)
        async with self.state.writing(rel):
            for _ in range(_WRITE_ATTEMPTS):
                current = await self._get(rel)
                try:
                    frontmatter, body = parse_fields(rel, transform(note_text(current)))
                except NoteParseError:
                    return None
                change = patch_body(rel, current, frontmatter, body)
                stored = await self._patch(rel, current, change) if change else current
                if stored is not None:
                    try:
                        return self._stored(stored, rel)
                    except NoteParseError:
                        return None
        raise WriteConflict(rel, _WRITE_ATTEMPTS)

    async def delete(self, path: str) -> None:
        rel = normalize(path)
        async with self.state.writing(rel):
            # Look the note up first and delete it by id: the server resolves a
            # bare name as an id before a path, and a delete must never miss.
            current = await self._get(rel, content=False)
            self.index.remove(rel)
            self.state.forget(rel)
            reply = await self._http.request(
                "DELETE", note_target(current.id), note=rel, allow=(404,)
            )
            if reply.status == 404 and reply.attempts == 1:
                raise NoteNotFound(rel)  # gone between our look-up and the delete

    # -- what the poller uses -------------------------------------------------

    async def changed_since(self, since: str | None) -> list[ApiNote]:
        params = {"include_content": "true"}
        if since is not None:
            params["meta[updated_at][gte]"] = since
        return await self._list(params)

    async def listing(self) -> list[ApiNote]:
        return await self._list(dict(_LEAN))

    async def fetch(self, rel: str) -> ApiNote | None:
        try:
            return await self._get(rel)
        except NoteNotFound:
            return None

    def note_of(self, api: ApiNote, rel: str) -> Note:
        return to_note(api, rel, self.max_note_bytes)

    # -- helpers --------------------------------------------------------------

    async def _get(self, rel: str, *, content: bool = True) -> ApiNote:
        params = None if content else {"include_content": "false"}
        target = note_target(server_path(rel))
        reply = await self._http.request("GET", target, params=params, note=rel)
        api = api_note(reply.data, f"GET {rel}")
        if not addresses(api, rel):
            raise NoteNotFound(rel)  # matched by id, or a non-Markdown note of that name
        return api

    async def _patch(self, rel: str, current: ApiNote, change: dict[str, Any]) -> ApiNote | None:
        """Apply ``change`` if ``current`` is still the latest version; None when it is not."""
        token = current.updated_at or current.created_at
        if token is None:
            raise VaultError(f"{rel}: the vault server gives no updatedAt to update it safely")
        try:
            reply = await self._http.request(
                "PATCH", note_target(current.id), body={**change, "if_updated_at": token}, note=rel
            )
        except StaleWrite:
            return None
        return api_note(reply.data, f"PATCH {rel}")

    def _stored(self, api: ApiNote, rel: str) -> Note:
        """Index what the server now holds for ``rel`` (our own write) and return it."""
        self.state.observe(rel, api.updated_at)
        try:
            note = self.note_of(api, rel)
        except NoteParseError:
            self.index.put_broken(rel, content_hash(note_text(api).encode("utf-8")))
            raise
        self.index.put(note)
        return note

    async def _holds(self, rel: str, payload: Mapping[str, Any]) -> ApiNote | None:
        """The note at ``rel`` when it is exactly what ``payload`` would have created."""
        current = await self.fetch(rel)
        if current is None:
            return None
        metadata = {k: v for k, v in current.metadata.items() if k != "tags"}
        if (
            current.content == payload["content"]
            and same(metadata, payload.get("metadata", {}))
            and sorted(current.tags) == sorted(payload.get("tags", []))
        ):
            return current
        return None

    async def _pages(self, params: Mapping[str, str]) -> AsyncIterator[list[ApiNote]]:
        offset = 0
        first_ids: set[str] = set()
        while True:
            query = {**params, "limit": str(self.page_size), "offset": str(offset)}
            reply = await self._http.request("GET", "notes", params=query)
            page = api_notes(reply.data, "GET notes")
            if page and page[0].id in first_ids:
                raise VaultError("vault server ignores ?offset= (the same page came back twice)")
            yield page
            if len(page) < self.page_size or len(page) > self.page_size:
                return  # a short page is the last; a long one means ?limit= was ignored
            first_ids.add(page[0].id)
            offset += len(page)

    async def _list(self, params: Mapping[str, str]) -> list[ApiNote]:
        return [api async for page in self._pages(params) for api in page]


if TYPE_CHECKING:

    def _meets_the_vault_protocol(vault: RemoteVault) -> Vault:
        return vault  # mypy refuses this if RemoteVault drifts from the protocol
