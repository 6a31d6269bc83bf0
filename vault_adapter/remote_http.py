"""The one door to a parachute-vault server: requests, retries and error translation.

Every call the remote adapter makes goes through :meth:`VaultHTTP.request`. It
adds the bearer token, bounds each request with timeouts, and retries what a
retry can fix (network errors, timeouts and 5xx answers) with exponential
backoff, a bounded number of times. A 4xx is never retried: the server meant
it. Whatever is not a success leaves this module as one of our errors, so no
``httpx`` exception, ``KeyError`` or ``JSONDecodeError`` reaches the gateway:

    404                       -> NoteNotFound(path)
    409 path_conflict         -> NoteExists(path)
    409 conflict              -> StaleWrite(path)   (a newer edit won; callers re-read)
    other 4xx, 5xx at the end -> RemoteHTTPError(status, error_type, detail)
    network/timeout at the end-> RemoteUnavailable
    unparseable JSON          -> VaultError naming the request

A caller that must look at a status itself (was a 409 perhaps our own earlier
attempt?) lists it in ``allow`` and gets the :class:`Reply` back instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from vault_adapter.errors import NoteNotFound, VaultError
from vault_adapter.folder import NoteExists

log = logging.getLogger(__name__)

_DETAIL_LIMIT = 300


class RemoteHTTPError(VaultError):
    """The vault server refused a request; carries what it said."""

    def __init__(self, method: str, target: str, status: int, error_type: str, detail: str):
        kind = f" {error_type}" if error_type else ""
        super().__init__(f"vault server: {method} {target} -> HTTP {status}{kind}: {detail}")
        self.method = method
        self.target = target
        self.status = status
        self.error_type = error_type
        self.detail = detail


class RemoteUnavailable(VaultError):
    """The vault server could not be reached (or kept timing out) after every retry."""

    def __init__(self, url: str, attempts: int, cause: str) -> None:
        super().__init__(f"vault server at {url} unreachable after {attempts} attempts: {cause}")
        self.url = url
        self.attempts = attempts
        self.cause = cause


class StaleWrite(VaultError):
    """An ``if_updated_at`` precondition failed: someone changed the note after we read it."""

    def __init__(self, path: str, current_updated_at: str | None) -> None:
        super().__init__(f"{path}: changed on the vault server since it was read")
        self.path = path
        self.current_updated_at = current_updated_at


@dataclass(frozen=True, slots=True)
class Reply:
    """A decoded answer: status, JSON body (None when empty) and how many tries it took."""

    status: int
    data: Any
    attempts: int

    @property
    def error_type(self) -> str:
        if isinstance(self.data, dict):
            kind = self.data.get("error_type") or self.data.get("error")
            return kind if isinstance(kind, str) else ""
        return ""


def note_target(server_path: str) -> str:
    """Request target of one note: its server path as a single, fully escaped segment."""
    return "notes/" + quote(server_path, safe="")


class VaultHTTP:
    """An ``httpx.AsyncClient`` bound to ``<url>/vault/<name>/api`` with retries."""

    def __init__(
        self,
        url: str,
        vault_name: str,
        token: str | None,
        *,
        timeout_s: float = 10.0,
        max_retries: int = 3,
        backoff_s: float = 0.25,
        max_backoff_s: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise VaultError(f"vault_url must start with http:// or https://, got {url!r}")
        self.api_url = f"{url.rstrip('/')}/vault/{quote(vault_name, safe='')}/api/"
        self.max_retries = max(0, max_retries)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._client = httpx.AsyncClient(
            base_url=self.api_url,
            headers=headers,
            timeout=httpx.Timeout(timeout_s),
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def request(
        self,
        method: str,
        target: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        note: str | None = None,
        allow: Collection[int] = (),
    ) -> Reply:
        """Send one request, retrying transient failures; raise or return a :class:`Reply`.

        ``note`` is the vault path the request is about, so a 404 or 409 can
        name it. Statuses in ``allow`` are returned rather than raised.
        """
        attempts = 1 + self.max_retries
        where = f"{method} {target}"
        for attempt in range(1, attempts + 1):
            try:
                response = await self._client.request(method, target, params=params, json=body)
            except httpx.TransportError as exc:  # timeouts are TransportErrors too
                cause = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                if attempt == attempts:
                    raise RemoteUnavailable(self.api_url, attempts, cause) from exc
                log.info("vault server %s failed (%s); retry %d", where, cause, attempt)
            else:
                if response.status_code < 500 or attempt == attempts:
                    return self._settle(response, where, attempt, note, allow)
                log.info("vault server %s -> %d; retry %d", where, response.status_code, attempt)
            await asyncio.sleep(min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _settle(
        self,
        response: httpx.Response,
        where: str,
        attempts: int,
        note: str | None,
        allow: Collection[int],
    ) -> Reply:
        status = response.status_code
        if 200 <= status < 300:
            return Reply(status, _decode(response, where), attempts)
        reply = Reply(status, _decode_error(response), attempts)
        if status in allow:
            return reply
        raise self.failure(reply, where, note)

    def failure(self, reply: Reply, where: str, note: str | None) -> VaultError:
        """The error for a non-success reply (for callers that allowed a status, then gave up)."""
        if note is not None and reply.status == 404:
            return NoteNotFound(note)
        if note is not None and reply.status == 409 and reply.error_type == "path_conflict":
            return NoteExists(note)
        if note is not None and reply.status == 409 and reply.error_type == "conflict":
            current = reply.data.get("current_updated_at") if isinstance(reply.data, dict) else None
            return StaleWrite(note, current if isinstance(current, str) else None)
        method, _, target = where.partition(" ")
        return RemoteHTTPError(method, target, reply.status, reply.error_type, _detail(reply))


def _decode(response: httpx.Response, where: str) -> Any:
    if not response.content:
        return None
    try:
        return json.loads(response.content)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        snippet = response.text[:80]
        raise VaultError(
            f"vault server sent malformed JSON for {where} (HTTP {response.status_code}): "
            f"{exc}; body starts {snippet!r}"
        ) from exc


def _decode_error(response: httpx.Response) -> Any:
    """An error body as JSON when it is JSON, else as (truncated) text: never raises."""
    try:
        return json.loads(response.content) if response.content else None
    except ValueError:
        return response.text[:_DETAIL_LIMIT]


def _detail(reply: Reply) -> str:
    data = reply.data
    if isinstance(data, dict):
        for key in ("message", "error", "hint"):
            value = data.get(key)
            if isinstance(value, str) and value:
                return value[:_DETAIL_LIMIT]
        return json.dumps(data)[:_DETAIL_LIMIT]
    if isinstance(data, str) and data:
        return data
    return "no details"
