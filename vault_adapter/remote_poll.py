"""Change events for a remote vault, found by polling its REST API.

parachute-vault bumps a note's ``updatedAt`` on every real edit and can filter
on it (``meta[updated_at][gte]=<iso>``), so each poll asks only for notes
updated since the newest ``updatedAt`` seen so far (minus a small overlap, to
survive clock adjustments on the server). Everything a poll returns is compared
with the index by content hash, exactly like the folder watcher: same hash
means nothing new (our own write, a scan that read it, a note seen in the
overlap window again), so nothing is emitted. Our own writes are recognised
that way too: the adapter indexes the hash of what the server stored before
the poller may look at that path again (:meth:`SyncState.settled`).

The API keeps no tombstones, so deletions show up only in a full listing.
Every ``full_scan_every``-th poll lists every note's path and ``updatedAt``
(no content); paths we knew that are gone become ``deleted`` events, and notes
whose ``updatedAt`` moved are fetched.

A poll sees whole notes (the server never stores half a note), so there is no
quiet window: several edits between two polls give one event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Protocol

from vault_adapter.errors import NoteParseError
from vault_adapter.index import NoteIndex
from vault_adapter.note import Note, content_hash
from vault_adapter.remote_map import ApiNote, format_time, note_text, parse_time, vault_path
from vault_adapter.watch import VaultEvent

log = logging.getLogger(__name__)


class SyncState:
    """What this process knows of the remote vault between requests.

    ``seen`` maps a path to the ``updatedAt`` of the newest version observed
    (baseline listing, scan, poll or our own write); ``watermark`` is the
    newest ``updatedAt`` of all, the poller's cursor. Own writes run one at a
    time per path (our writes to one note never race each other) and are
    counted, so the poller can wait for them to land in the index.
    """

    def __init__(self) -> None:
        self.seen: dict[str, str | None] = {}
        self.watermark: datetime | None = None
        self._inflight: dict[str, int] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._idle: dict[str, asyncio.Event] = {}
        self._written: dict[str, float] = {}

    def observe(self, rel: str, updated_at: str | None) -> None:
        self.seen[rel] = updated_at
        moment = parse_time(updated_at)
        if moment is not None and (self.watermark is None or moment > self.watermark):
            self.watermark = moment

    def forget(self, rel: str) -> None:
        self.seen.pop(rel, None)

    def is_older(self, rel: str, updated_at: str | None) -> bool:
        """True when ``updated_at`` is older than the version of ``rel`` already seen."""
        known, other = parse_time(self.seen.get(rel)), parse_time(updated_at)
        return known is not None and other is not None and other < known

    @asynccontextmanager
    async def writing(self, rel: str) -> AsyncIterator[None]:
        """Hold while writing ``rel``: serialises our writes to it and marks it in flight."""
        self._inflight[rel] = self._inflight.get(rel, 0) + 1
        lock = self._locks.setdefault(rel, asyncio.Lock())
        try:
            async with lock:
                yield
        finally:
            self._written[rel] = time.monotonic()
            left = self._inflight[rel] - 1
            if left:
                self._inflight[rel] = left
            else:
                del self._inflight[rel]
                self._locks.pop(rel, None)
                idle = self._idle.pop(rel, None)
                if idle is not None:
                    idle.set()

    async def settled(self, rel: str) -> None:
        """Wait until no write of ours to ``rel`` is in flight."""
        while rel in self._inflight:
            await self._idle.setdefault(rel, asyncio.Event()).wait()

    def written_since(self, rel: str, moment: float) -> bool:
        return rel in self._inflight or self._written.get(rel, -math.inf) >= moment


class PollSource(Protocol):
    """What the poller needs from the adapter (met by ``RemoteVault``)."""

    index: NoteIndex
    state: SyncState
    poll_overlap_s: float

    async def changed_since(self, since: str | None) -> list[ApiNote]: ...

    async def listing(self) -> list[ApiNote]: ...

    async def fetch(self, rel: str) -> ApiNote | None: ...

    def note_of(self, api: ApiNote, rel: str) -> Note: ...


class RemotePoller:
    """Polls a remote vault; an async iterator of :class:`VaultEvent` like the folder watcher."""

    def __init__(
        self,
        source: PollSource,
        *,
        interval_s: float = 2.0,
        full_scan_every: int = 30,
        max_backoff_s: float = 60.0,
    ) -> None:
        self.source = source
        self.interval_s = interval_s
        self.full_scan_every = full_scan_every
        self.max_backoff_s = max_backoff_s
        self.failures = 0
        """Polls in a row that failed; the wait between polls doubles with each."""
        self._polls = 0
        self._queue: asyncio.Queue[VaultEvent] = asyncio.Queue()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Take the baseline, then poll in the background."""
        if self._task is not None:
            return
        await self.baseline()
        self._task = asyncio.create_task(self._run(), name="remote-vault-poller")

    async def baseline(self) -> None:
        """Note every path and its ``updatedAt``: what is there now is not a change."""
        for api in await self.source.listing():
            rel = vault_path(api)
            if rel is not None:
                self.source.state.observe(rel, api.updated_at)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> RemotePoller:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def __aiter__(self) -> AsyncIterator[VaultEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[VaultEvent]:
        while True:
            yield await self._queue.get()

    async def get(self) -> VaultEvent:
        return await self._queue.get()

    def pending(self) -> int:
        """Changes seen but not yet read: none, a poll reads whole notes at once."""
        return 0

    def poke(self) -> None:
        """Poll now instead of at the next interval (a webhook said something changed)."""
        self._wake.set()

    async def poll(self) -> list[VaultEvent]:
        """One poll; its events are queued as they are found, and also returned."""
        self._polls += 1
        if self.full_scan_every > 0 and self._polls % self.full_scan_every == 0:
            return await self._full_scan()
        mark = self.source.state.watermark
        since = format_time(mark, self.source.poll_overlap_s) if mark is not None else None
        events: list[VaultEvent] = []
        for api in await self.source.changed_since(since):
            self._emit(events, await self._consider(api))
        return events

    async def _full_scan(self) -> list[VaultEvent]:
        state, index = self.source.state, self.source.index
        started = time.monotonic()
        present: dict[str, str | None] = {}
        for api in await self.source.listing():
            rel = vault_path(api)
            if rel is not None:
                present[rel] = api.updated_at
        events: list[VaultEvent] = []
        for rel in sorted(set(index.paths()) | set(state.seen)):
            if rel in present or state.written_since(rel, started):
                continue
            index.remove(rel)
            state.forget(rel)
            self._emit(events, VaultEvent("deleted", rel))
        for rel, updated_at in present.items():
            if rel in state.seen and state.seen[rel] == updated_at:
                continue
            fresh = await self.source.fetch(rel)
            if fresh is not None:
                self._emit(events, await self._consider(fresh))
        return events

    async def _consider(self, api: ApiNote) -> VaultEvent | None:
        """The event for one fetched note, or None when it holds nothing new."""
        rel = vault_path(api)
        if rel is None:
            return None
        state, index = self.source.state, self.source.index
        await state.settled(rel)
        if state.is_older(rel, api.updated_at):
            return None  # fetched before a newer version we have already seen (our write)
        known = rel in index or rel in state.seen
        listed_unchanged = rel not in index and state.seen.get(rel, "") == api.updated_at
        state.observe(rel, api.updated_at)
        try:
            note = self.source.note_of(api, rel)
        except NoteParseError as exc:
            digest = content_hash(note_text(api).encode("utf-8"))
            if index.hash_of(rel) == digest:
                return None
            index.put_broken(rel, digest)
            if listed_unchanged:
                return None
            return VaultEvent("modified" if known else "created", rel, None, exc)
        if index.hash_of(rel) == note.content_hash:
            return None
        index.put(note)
        if listed_unchanged:
            return None  # in the baseline listing already, and not edited since
        return VaultEvent("modified" if known else "created", rel, note)

    def _emit(self, events: list[VaultEvent], event: VaultEvent | None) -> None:
        if event is not None:
            events.append(event)
            self._queue.put_nowait(event)

    async def _run(self) -> None:
        while True:
            delay = self.interval_s
            try:
                await self.poll()
                self.failures = 0
            except Exception as exc:  # keep polling whatever happened; say so in the log
                self.failures += 1
                delay = min(self.interval_s * 2**self.failures, self.max_backoff_s)
                log.warning("polling the vault server failed (%s); next poll in %.1fs", exc, delay)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            self._wake.clear()
