"""What the CLI talks to: the running gateway over HTTP, or the vault and registry directly.

With a gateway running for the vault (found through ``.vaultgate/gateway.json``)
every command goes through its HTTP API with the token from the state dir.
Without one, reads come from the registry and the vault, ``send`` writes the
inbound note itself (the next ``serve`` picks it up), and interventions say
how to proceed, since only a running gateway can stop a turn.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from gateway.definitions import DEFINITION_TAG, parse_definition
from gateway.discovery import find_running, read_token
from gateway.errors import GatewayError
from gateway.http.models import agent_json, event_json, message_json, thread_json
from gateway.jobs import JOB_TAG, Job, parse_job
from gateway.registry import Registry
from gateway.send import write_inbound
from gateway.settings import Settings
from vault_adapter import FolderVault


class CliError(GatewayError):
    """A problem the CLI reports as one line and exit status 1."""


class Remote:
    """The HTTP API of a running gateway."""

    def __init__(self, url: str, token: str | None, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url
        self.http = httpx.Client(base_url=url, headers=headers, timeout=timeout)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise CliError(f"the gateway at {self.url} did not answer: {exc}") from exc
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                raise CliError(f"{error['message']} ({error['code']})")
            except (ValueError, KeyError, TypeError):
                raise CliError(f"HTTP {response.status_code}: {response.text[:200]}") from None
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.text


def remote_for(root: Path, settings: Settings) -> Remote | None:
    state_dir = root / settings.state_dir
    running = find_running(state_dir)
    if running is None:
        return None
    return Remote(running.url, read_token(state_dir, settings.token))


class Local:
    """Reads straight from the vault and the registry, for when no gateway runs."""

    def __init__(self, root: Path, settings: Settings) -> None:
        self.root = root
        self.settings = settings
        self.db = root / settings.state_dir / "registry.db"

    def _registry_call(self, fn: Any) -> Any:
        if not self.db.exists():
            raise CliError(
                f"no registry at {self.db}: the gateway has not run on this vault yet "
                "(start it with 'vaultgate serve')"
            )

        async def go() -> Any:
            registry = await Registry.open(self.db)
            try:
                return await fn(registry)
            finally:
                await registry.close()

        return asyncio.run(go())

    def threads(self, **filters: Any) -> list[dict[str, Any]]:
        return self._registry_call(  # type: ignore[no-any-return]
            lambda r: _threads(r, filters)
        )

    def thread(self, thread_id: str) -> dict[str, Any]:
        return self._registry_call(lambda r: _thread(r, thread_id))  # type: ignore[no-any-return]

    def messages(self, thread_id: str, limit: int) -> list[dict[str, Any]]:
        return self._registry_call(  # type: ignore[no-any-return]
            lambda r: _messages(r, thread_id, limit)
        )

    def events(self, thread_id: str, limit: int) -> list[dict[str, Any]]:
        return self._registry_call(  # type: ignore[no-any-return]
            lambda r: _events(r, thread_id, limit)
        )

    def agents(self) -> list[dict[str, Any]]:
        async def scan() -> list[dict[str, Any]]:
            vault = FolderVault(self.root, max_note_bytes=self.settings.max_note_bytes)
            out = []
            for path in await vault.find_by_tag(DEFINITION_TAG):
                entry = parse_definition(await vault.read(path))
                out.append(agent_json(entry, "stopped"))
            return sorted(out, key=lambda a: a["name"])

        return asyncio.run(scan())

    def jobs(self) -> list[dict[str, Any]]:
        async def scan() -> list[dict[str, Any]]:
            vault = FolderVault(self.root, max_note_bytes=self.settings.max_note_bytes)
            out: list[dict[str, Any]] = []
            for path in await vault.find_by_tag(JOB_TAG):
                entry = parse_job(await vault.read(path))
                if isinstance(entry, Job):
                    out.append(
                        {
                            "id": entry.id,
                            "agent": entry.agent,
                            "cron": entry.cron,
                            "tz": entry.tz,
                            "subject": entry.subject,
                            "status": "stopped" if entry.enabled else "disabled",
                            "next_run_at": None,
                            "last_status": None,
                            "path": entry.path,
                        }
                    )
                else:
                    out.append(
                        {
                            "id": entry.id,
                            "status": "error",
                            "error": entry.error,
                            "path": entry.path,
                        }
                    )
            return sorted(out, key=lambda j: str(j["id"]))

        return asyncio.run(scan())

    def send(self, **message: Any) -> dict[str, Any]:
        async def write() -> dict[str, Any]:
            vault = FolderVault(self.root, fsync=self.settings.fsync)
            note = await write_inbound(vault, self.settings, source="cli", **message)
            return {"id": note.get("id"), "note": note.path, "status": "queued"}

        return asyncio.run(write())


async def resolve_thread(registry: Registry, thread_id: str) -> str:
    """Accept ``channel:leaf`` or a bare leaf that names one thread."""
    if ":" in thread_id:
        return thread_id
    matches = [
        t.id
        for t in await registry.list_threads(limit=100_000)
        if t.id.split(":", 1)[1] == thread_id
    ]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise CliError(f"{thread_id!r} is ambiguous: {', '.join(matches)}")
    raise CliError(f"no thread {thread_id!r} (see 'vaultgate threads list')")


async def _threads(registry: Registry, filters: dict[str, Any]) -> list[dict[str, Any]]:
    return [thread_json(t) for t in await registry.list_threads(**filters)]


async def _thread(registry: Registry, thread_id: str) -> dict[str, Any]:
    thread = await registry.get_thread(await resolve_thread(registry, thread_id))
    if thread is None:
        raise CliError(f"no thread {thread_id!r} (see 'vaultgate threads list')")
    return thread_json(thread)


async def _messages(registry: Registry, thread_id: str, limit: int) -> list[dict[str, Any]]:
    resolved = await resolve_thread(registry, thread_id)
    if await registry.get_thread(resolved) is None:
        raise CliError(f"no thread {thread_id!r} (see 'vaultgate threads list')")
    return [message_json(t) for t in await registry.thread_turns(resolved, limit=limit)]


async def _events(registry: Registry, thread_id: str, limit: int) -> list[dict[str, Any]]:
    resolved = await resolve_thread(registry, thread_id)
    if await registry.get_thread(resolved) is None:
        raise CliError(f"no thread {thread_id!r} (see 'vaultgate threads list')")
    return [event_json(e) for e in await registry.events(thread_id=resolved, limit=limit)]
