"""An in-memory parachute-vault notes API, served to httpx through respx.

It behaves like the real server where the remote adapter relies on it (the
routes and rules of parachute-vault's ``src/routes.ts`` and
``core/src/notes.ts``): paths stored without ``.md`` and unique regardless of
case, a note looked up by id first and then by path, tags kept as a sorted
set, metadata PATCHed as a shallow merge where ``null`` deletes a key,
``if_updated_at`` checked atomically (409 ``conflict``), a PATCH without a
precondition refused (428), ``updatedAt`` strictly increasing, lean list
entries without content, and ``meta[updated_at][gte]`` / ``meta[field]=``
filters. Its clock is a counter, so tests are deterministic.

Tests reach into it as "another client": :meth:`put`, :meth:`edit` and
:meth:`remove` change notes the way a person in another app would;
:meth:`fail_next` queues faults (a status, a response, an httpx exception, or
:class:`Lost`, a request that lands but whose answer is lost);
``before_update`` runs just before a PATCH is applied, where a concurrent edit
would land; ``on_applied`` is awaited after a request was applied and before
its answer goes back, where another reader could already see the new state.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

import httpx
import respx

from vault_adapter.remote import RemoteVault

BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)
_EXT = re.compile(r"^(.*)\.([a-z0-9]{1,16})$", re.IGNORECASE)


@dataclass(frozen=True)
class Lost:
    """A fault: the request is applied, but the client gets ``status`` instead of the answer."""

    status: int = 502


Fault = int | httpx.Response | BaseException | type[httpx.TransportError] | Lost


def _json(status: int, data: Any) -> httpx.Response:
    return httpx.Response(status, json=data)


def _error(status: int, error: str, message: str, **extra: Any) -> httpx.Response:
    return _json(status, {"error": error, "message": message, **extra})


def _server_path(path: str | None) -> str | None:
    """The server's ``normalizePath``: no ``.md``, no doubled, leading or trailing slashes."""
    if path is None:
        return None
    clean = re.sub(r"/+", "/", path.strip().replace("\\", "/"))
    clean = re.sub(r"\.md$", "", clean, flags=re.IGNORECASE).strip("/")
    return clean or None


def _tags(values: Any) -> set[str]:
    return {str(t).strip().lstrip("#") for t in values or () if str(t).strip().lstrip("#")}


class FakeParachuteVault:
    """One parachute-vault server holding one vault, in memory."""

    def __init__(
        self, *, url: str = "http://vault.test", name: str = "default", token: str = "t0ken"
    ) -> None:
        self.url = url
        self.name = name
        self.token = token
        self.notes: dict[str, dict[str, Any]] = {}
        self.requests: list[httpx.Request] = []
        self.faults: deque[Fault] = deque()
        self.before_update: Callable[[dict[str, Any]], None] | None = None
        self.on_applied: Callable[[httpx.Request], Awaitable[None]] | None = None
        self._ms = 0
        self._ids = 0

    @contextmanager
    def mocked(self) -> Iterator[respx.MockRouter]:
        with respx.mock(assert_all_called=False) as router:
            router.route(url__startswith=self.url).mock(side_effect=self.handle)
            yield router

    def fail_next(self, *faults: Fault) -> None:
        self.faults.extend(faults)

    def advance(self, seconds: float) -> None:
        """Move the server clock on (time passing between edits)."""
        self._ms += int(seconds * 1000)

    def calls(self, method: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method]

    # -- another client's view --------------------------------------------------

    def put(
        self,
        path: str,
        content: str = "",
        *,
        metadata: dict[str, Any] | None = None,
        tags: tuple[str, ...] | list[str] = (),
        extension: str = "md",
    ) -> dict[str, Any]:
        record = self.find(path)
        if record is None:
            return self._create(_server_path(path), content, metadata, tags, extension)
        record.update(content=content, metadata=dict(metadata or {}), tags=_tags(tags))
        record["updatedAt"] = self._now()
        return record

    def edit(
        self,
        path: str,
        *,
        content: str | None = None,
        metadata: dict[str, Any] | None = None,
        tags: list[str] | None = None,
    ) -> dict[str, Any]:
        record = self.find(path)
        assert record is not None, f"no note at {path}"
        if content is not None:
            record["content"] = content
        if metadata is not None:
            record["metadata"] = _merge(record["metadata"], metadata)
        if tags is not None:
            record["tags"] = _tags(tags)
        record["updatedAt"] = self._now()
        return record

    def remove(self, path: str) -> None:
        record = self.find(path)
        assert record is not None, f"no note at {path}"
        del self.notes[record["id"]]

    def find(self, path: str) -> dict[str, Any] | None:
        wanted = (_server_path(path) or "").casefold()
        for record in self.notes.values():
            if (record["path"] or "").casefold() == wanted and record["extension"] == "md":
                return record
        return None

    # -- the HTTP side ------------------------------------------------------------

    async def handle(self, request: httpx.Request) -> httpx.Response:
        response = self._handle(request)
        if self.on_applied is not None:
            await self.on_applied(request)
        return response

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        lost: Lost | None = None
        if self.faults:
            fault = self.faults.popleft()
            if isinstance(fault, Lost):
                lost = fault
            elif isinstance(fault, int):
                return _error(fault, "injected", f"injected HTTP {fault}")
            elif isinstance(fault, httpx.Response):
                return fault
            elif isinstance(fault, type):
                raise fault("injected", request=request)
            else:
                raise fault
        response = self._route(request)
        return _error(lost.status, "injected", "answer lost") if lost else response

    def _route(self, request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return _error(401, "Unauthorized", "Missing or invalid API key")
        raw = request.url.raw_path.decode("ascii")
        path, _, query = raw.partition("?")
        if not path.startswith(f"/vault/{self.name}/"):
            return _error(404, "Vault not found", "no such vault")
        base = f"/vault/{self.name}/api/notes"
        params = dict(parse_qsl(query, keep_blank_values=True))
        try:
            body = json.loads(request.content) if request.content else None
        except ValueError:
            return _error(400, "invalid_json", "body is not JSON")
        if path == base:
            if request.method == "GET":
                return self._query(params)
            if request.method == "POST":
                return self._post(body)
            return _error(405, "Method not allowed", "")
        if path.startswith(base + "/") and "/" not in path[len(base) + 1 :]:
            key = unquote(path[len(base) + 1 :])
            if request.method == "GET":
                return self._get(key, params)
            if request.method == "PATCH":
                return self._patch(key, body)
            if request.method == "DELETE":
                return self._delete(key)
            return _error(405, "Method not allowed", "")
        return _error(404, "Not found", "")

    def _query(self, params: dict[str, str]) -> httpx.Response:
        found = sorted(self.notes.values(), key=lambda r: (r["createdAt"], r["id"]))
        if "tag" in params:
            wanted = [t for t in params["tag"].split(",") if t]
            found = [r for r in found if all(t in r["tags"] for t in wanted)]
        if "path_prefix" in params:
            prefix = params["path_prefix"].casefold()
            found = [r for r in found if (r["path"] or "").casefold().startswith(prefix)]
        for key, value in params.items():
            if key == "meta[updated_at][gte]":
                if not re.match(r"^\d{4}-\d\d-\d\dT", value):
                    return _error(400, "invalid_query", f"unparseable date {value!r}")
                found = [r for r in found if r["updatedAt"] >= value]
            elif key.startswith("meta[") and key.endswith("]") and "][" not in key:
                field = key[5:-1]
                # json_extract compares a string with the stored value: only strings match
                found = [r for r in found if r["metadata"].get(field) == value]
        offset = int(params.get("offset", "0"))
        limit = int(params.get("limit", "50"))
        page = found[offset : offset + limit]
        full = params.get("include_content") in ("true", "1")
        with_meta = params.get("include_metadata") not in ("false", "0")
        return _json(200, [self._view(r, full=full, metadata=with_meta) for r in page])

    def _post(self, body: Any) -> httpx.Response:
        if not isinstance(body, dict):
            return _error(400, "invalid_request", "body must be an object")
        path = _server_path(body.get("path"))
        if path is not None and self.find(path) is not None:
            return _json(
                409,
                {
                    "error_type": "path_conflict",
                    "error": "path_conflict",
                    "path": path,
                    "message": f'path_conflict: another note already uses path "{path}"',
                },
            )
        record = self._create(
            path, body.get("content") or "", body.get("metadata"), body.get("tags") or (), "md"
        )
        return _json(201, self._view(record))

    def _get(self, key: str, params: dict[str, str]) -> httpx.Response:
        record = self._resolve(key)
        if record is None:
            return _error(404, "Not found", "")
        full = params.get("include_content", "true") in ("true", "1")
        return _json(200, self._view(record, full=full))

    def _patch(self, key: str, body: Any) -> httpx.Response:
        if not isinstance(body, dict):
            return _error(400, "invalid_request", "body must be an object")
        record = self._resolve(key)
        if record is None:
            if body.get("if_missing") == "create":
                path = _server_path(body.get("path") or key)
                tags = body.get("tags") if isinstance(body.get("tags"), list) else ()
                record = self._create(path, body.get("content") or "", body.get("metadata"), tags)
                return _json(200, {**self._view(record), "created": True})
            return _error(404, f'Note not found: "{key}"', f'Note not found: "{key}"')
        if self.before_update is not None:
            self.before_update(record)
        modes = sum(
            [
                "content" in body,
                "append" in body or "prepend" in body,
                "content_edit" in body,
            ]
        )
        if modes > 1:
            return _error(400, "mutually_exclusive", "pick one content mode")
        changes = {"content", "path", "metadata", "tags", "links", "created_at", "createdAt"}
        append_only = ("append" in body or "prepend" in body) and not changes & set(body)
        token = body.get("if_updated_at")
        if not append_only and token is None and body.get("force") is not True:
            return _json(
                428,
                {
                    "error_type": "precondition_required",
                    "error": "precondition_required",
                    "message": "update requires `if_updated_at` or `force: true`.",
                },
            )
        if token is not None and token != record["updatedAt"]:
            return _json(
                409,
                {
                    "error_type": "conflict",
                    "error": "conflict",
                    "current_updated_at": record["updatedAt"],
                    "your_updated_at": token,
                    "note_id": record["id"],
                    "path": record["path"],
                    "message": f'conflict: note "{record["id"]}" has been modified',
                },
            )
        if "content" in body:
            record["content"] = body["content"]
        if "append" in body or "prepend" in body:
            record["content"] = body.get("prepend", "") + record["content"] + body.get("append", "")
        if isinstance(body.get("metadata"), dict):
            record["metadata"] = _merge(record["metadata"], body["metadata"])
        if isinstance(body.get("tags"), dict):
            record["tags"] = (record["tags"] | _tags(body["tags"].get("add"))) - _tags(
                body["tags"].get("remove")
            )
        now = self._now()
        record["updatedAt"] = max(now, token or now)
        if token is not None and record["updatedAt"] == token:
            record["updatedAt"] = self._now()
        return _json(200, {**self._view(record), "created": False})

    def _delete(self, key: str) -> httpx.Response:
        record = self._resolve(key)
        if record is None:
            return _error(404, "Not found", "")
        del self.notes[record["id"]]
        return _json(200, {"deleted": True, "id": record["id"]})

    # -- helpers --------------------------------------------------------------------

    def _resolve(self, key: str) -> dict[str, Any] | None:
        if key in self.notes:
            return self.notes[key]
        match = _EXT.match(key)
        if match and match.group(2).lower() == "md":
            found = self.find(match.group(1))
            if found is not None:
                return found
        return self.find(key)

    def _create(
        self,
        path: str | None,
        content: str,
        metadata: dict[str, Any] | None,
        tags: Any,
        extension: str = "md",
    ) -> dict[str, Any]:
        self._ids += 1
        now = self._now()
        record = {
            "id": f"01FAKE{self._ids:020d}",
            "path": path,
            "extension": extension,
            "content": content,
            "metadata": dict(metadata or {}),
            "tags": _tags(tags),
            "createdAt": now,
            "updatedAt": now,
        }
        self.notes[record["id"]] = record
        return record

    def _view(
        self, record: dict[str, Any], *, full: bool = True, metadata: bool = True
    ) -> dict[str, Any]:
        view: dict[str, Any] = {"id": record["id"]}
        if record["path"] is not None:
            view["path"] = record["path"]
        view["extension"] = record["extension"]
        if full:
            view["content"] = record["content"]
        if metadata and record["metadata"]:
            view["metadata"] = dict(record["metadata"])
        view["createdAt"] = record["createdAt"]
        view["updatedAt"] = record["updatedAt"]
        view["tags"] = sorted(record["tags"])
        if not full:
            view["byteSize"] = len(record["content"].encode())
            view["preview"] = " ".join(record["content"].split())[:120]
        return view

    def _now(self) -> str:
        self._ms += 1
        moment = BASE_TIME + timedelta(milliseconds=self._ms)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _merge(existing: dict[str, Any], incoming: dict[str, Any]) -> dict[str, Any]:
    """The server's ``mergeMetadata``: shallow, and ``null`` deletes the key."""
    result = dict(existing)
    for key, value in incoming.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    return result


@asynccontextmanager
async def remote_vault(
    fake: FakeParachuteVault, state_root: Path, **options: Any
) -> AsyncIterator[RemoteVault]:
    """A RemoteVault on ``fake`` with test-friendly timing (no backoff sleeps, fast polls)."""
    settings: dict[str, Any] = {
        "token": fake.token,
        "state_root": state_root,
        "backoff_s": 0.0,
        "max_retries": 2,
        "poll_interval_s": 0.05,
        "page_size": 50,
        "index_fields": ("status", "agent"),
    }
    settings.update(options)
    vault = RemoteVault(fake.url, fake.name, **settings)
    try:
        yield vault
    finally:
        await vault.aclose()
