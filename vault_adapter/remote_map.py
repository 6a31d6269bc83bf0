"""How a parachute-vault note maps onto a vaultgate note, in both directions.

parachute-vault keeps a note as ``path`` (no ``.md``, unique per vault),
``content`` (the Markdown body, no frontmatter), ``metadata`` (a JSON object)
and ``tags`` (a set, returned sorted). Its own Obsidian importer splits a file
the same way: frontmatter minus ``tags`` becomes metadata, ``tags`` goes to the
tag table. So a vaultgate note is read back as ``tags`` first (when there are
any), then the metadata keys in the server's order, then the body; and it is
rendered through :func:`parse_note` so a remote note has exactly the
frontmatter, tags and content hash a folder note with the same text would.

Writes send only what changed: a shallow JSON merge-patch of the metadata
(changed keys whole, removed keys as ``null``, which the server treats as
"delete"), tag additions and removals, and the body when it differs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from vault_adapter.errors import VaultError, VaultPathError
from vault_adapter.note import Note, normalize_tags, parse_note, render_note
from vault_adapter.paths import is_hidden, normalize

MARKDOWN = "md"


class ApiNote(BaseModel):
    """A note as the server sends it; unknown fields are ignored, missing ones defaulted.

    ``content`` is None in the lean list shape (``include_content=false``).
    """

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    id: str
    path: str | None = None
    extension: str = MARKDOWN
    content: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    created_at: str | None = Field(default=None, alias="createdAt")
    updated_at: str | None = Field(default=None, alias="updatedAt")

    @field_validator("metadata", "tags", "extension", mode="before")
    @classmethod
    def _null_is_default(cls, value: Any, info: ValidationInfo) -> Any:
        # The server omits or nulls empty metadata and tags; older ones have no extension.
        if value is None:
            return {"metadata": {}, "tags": [], "extension": MARKDOWN}.get(info.field_name or "")
        return value


def api_note(data: Any, where: str) -> ApiNote:
    try:
        return ApiNote.model_validate(data)
    except ValidationError as exc:
        problem = f"vault server sent an unexpected note shape for {where}: {_why(exc)}"
        raise VaultError(problem) from exc


def api_notes(data: Any, where: str) -> list[ApiNote]:
    """A list answer: a bare array, or the ``{notes, next_cursor}`` envelope of cursor mode."""
    if isinstance(data, dict) and isinstance(data.get("notes"), list):
        data = data["notes"]
    if not isinstance(data, list):
        kind = type(data).__name__
        raise VaultError(f"vault server sent a {kind} for {where}; expected a list of notes")
    return [api_note(item, where) for item in data]


def _why(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "note"
    return f"{where}: {first['msg']} ({exc.error_count()} problem(s))"


# -- paths ------------------------------------------------------------------


def server_path(rel: str) -> str:
    """The server's path for a (normalized) vault path: ``Inbox/q.md`` -> ``Inbox/q``."""
    if not rel.endswith(".md") or rel.endswith("/.md") or rel == ".md":
        raise VaultPathError(rel, "a remote vault holds Markdown notes: the path must end in .md")
    return rel[:-3]


def addresses(api: ApiNote, rel: str) -> bool:
    """True when ``api`` is the Markdown note at ``rel`` (paths match case-insensitively there)."""
    if not api.path or api.extension.lower() != MARKDOWN:
        return False
    try:
        return normalize(api.path + ".md").casefold() == rel.casefold()
    except VaultPathError:
        return False


def vault_path(api: ApiNote) -> str | None:
    """The vault path of a server note, or None when the gateway cannot address it
    (no path, not Markdown, unsafe, or inside a dot-folder)."""
    if not api.path or api.extension.lower() != MARKDOWN:
        return None
    try:
        rel = normalize(api.path + ".md")
    except VaultPathError:
        return None
    return None if is_hidden(rel) else rel


# -- reading ----------------------------------------------------------------


def frontmatter_of(api: ApiNote) -> dict[str, Any]:
    tags = list(api.tags)
    fm: dict[str, Any] = {"tags": tags} if tags else {}
    for key, value in api.metadata.items():
        if key == "tags" and tags:
            continue  # the tag table wins over a stray metadata key of the same name
        fm[key] = value
    return fm


def to_note(api: ApiNote, rel: str, max_bytes: int) -> Note:
    """The :class:`Note` for a full server note (raises NoteParseError like a folder read)."""
    if api.content is None:
        raise VaultError(f"{rel}: vault server sent the note without its content")
    text = render_note(frontmatter_of(api), api.content)
    return parse_note(rel, text.encode("utf-8"), timestamp(api.updated_at), max_bytes=max_bytes)


def note_text(api: ApiNote) -> str:
    return render_note(frontmatter_of(api), api.content or "")


def timestamp(iso: str | None) -> float:
    moment = parse_time(iso)
    return moment.timestamp() if moment is not None else 0.0


def parse_time(iso: str | None) -> datetime | None:
    if not iso:
        return None
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def format_time(moment: datetime, minus_s: float = 0.0) -> str:
    """ISO-8601 UTC with milliseconds and ``Z``, the form the server writes and compares."""
    shifted = (moment - timedelta(seconds=minus_s)).astimezone(UTC)
    return shifted.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- writing ----------------------------------------------------------------


def jsonable(value: Any, where: str) -> Any:
    """A frontmatter value as JSON: YAML dates become ISO strings, tuples and sets lists."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, where) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v, where) for v in value]
    raise VaultError(f"{where}: a {type(value).__name__} cannot be stored in a remote note")


def split_fields(rel: str, frontmatter: Mapping[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """``(tags, metadata)`` of a frontmatter mapping."""
    tags = list(normalize_tags(frontmatter.get("tags")))
    metadata = {
        key: jsonable(value, f"{rel}: field {key!r}")
        for key, value in frontmatter.items()
        if key != "tags"
    }
    return tags, metadata


def create_body(rel: str, frontmatter: Mapping[str, Any], body: str) -> dict[str, Any]:
    tags, metadata = split_fields(rel, frontmatter)
    payload: dict[str, Any] = {"path": server_path(rel), "content": body}
    if tags:
        payload["tags"] = tags
    if metadata:
        payload["metadata"] = metadata
    return payload


def patch_body(
    rel: str, current: ApiNote, frontmatter: Mapping[str, Any], body: str
) -> dict[str, Any]:
    """What a PATCH must send to turn ``current`` into ``frontmatter`` + ``body``; {} if nothing.

    The server merges metadata shallowly and deletes keys sent as ``null``, so a
    changed key is sent whole and a dropped key as ``null``. A metadata key
    named ``tags`` is never touched (the view hides it behind the tag table).
    """
    tags, metadata = split_fields(rel, frontmatter)
    old = {k: v for k, v in current.metadata.items() if k != "tags"}
    patch: dict[str, Any] = {key: None for key in old if key not in metadata}
    for key, value in metadata.items():
        if key in old and same(old[key], value):
            continue
        if key not in old and value is None:
            continue  # null means "absent" here; patching it would only bump updatedAt
        patch[key] = value
    payload: dict[str, Any] = {}
    if patch:
        payload["metadata"] = patch
    added = [t for t in tags if t not in current.tags]
    dropped = [t for t in current.tags if t not in tags]
    if added or dropped:
        payload["tags"] = {"add": added, "remove": dropped}
    if body != (current.content or ""):
        payload["content"] = body
    return payload


def same(a: Any, b: Any) -> bool:
    """Equal as JSON (so ``1`` and ``True`` differ, as they do on the server)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def appended(body: str, addition: str) -> str:
    """What ``append_once`` adds to ``body``: a newline first when the body lacks one."""
    return ("\n" if body and not body.endswith("\n") else "") + addition


def parse_fields(rel: str, text: str) -> tuple[dict[str, Any], str]:
    """``(frontmatter, body)`` of a whole note text; NoteParseError when it does not parse."""
    raw = text.encode("utf-8")
    note = parse_note(rel, raw, 0.0, max_bytes=len(raw) + 1)
    return dict(note.frontmatter), note.body
