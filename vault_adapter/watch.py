"""File-system events turned into one settled event per changed note.

On Linux the raw events come from inotify, read on the event loop
(:mod:`vault_adapter.inotify`); with polling (synced and network folders) or
elsewhere, watchdog calls us on its own thread for each one (a polling
snapshot diff, FSEvents...). Each raw event only (re)arms a per-note timer on
the event loop; when a note has been quiet for
``quiet_window_s`` it is read once, in a worker thread, and compared with the
index by content hash. Same hash: nothing changed that we have not already
seen (our own write, a scan that read it, a ``touch``), so nothing is emitted.
Otherwise the index is updated and one :class:`VaultEvent` is queued. A note
written in several chunks therefore yields one event, and the adapter's own
writes none, without relying on how quickly anything happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from vault_adapter import inotify
from vault_adapter.errors import NoteParseError, VaultError
from vault_adapter.note import Note
from vault_adapter.paths import is_hidden
from vault_adapter.workers import file_workers

EventKind = Literal["created", "modified", "deleted", "moved", "rescan"]

log = logging.getLogger(__name__)

_IGNORED_TYPES = {"opened", "closed_no_write"}
_STRUCTURE: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
]
# watchdog serves polling and the systems without our inotify reader (FSEvents,
# kqueue, Windows), none of which report a file being closed: a change in content
# is a modification. (On Linux, vault_adapter.inotify counts a close after writing.)
_CHANGES = [*_STRUCTURE, FileModifiedEvent]
_BATCH = 64


@dataclass(frozen=True, slots=True)
class VaultEvent:
    """A settled change to one note. ``note`` or ``error`` is set unless deleted."""

    kind: EventKind
    path: str
    note: Note | None = None
    error: NoteParseError | None = None
    src_path: str | None = None
    """For ``moved``: where the note was before (a ``deleted`` event is sent for it too)."""


RESCAN = VaultEvent("rescan", "")
"""Changes may have been missed (the watcher had to be restarted): scan everything again."""


Settle = Callable[[str, str | None, int], VaultEvent | None]
"""Reads one note after it settled: ``(path, moved_from, raw events seen) -> event or None``.
Runs in a thread."""


class _Relay(FileSystemEventHandler):
    """Runs on watchdog's thread: filter, make paths vault-relative, hand to the loop."""

    def __init__(self, root: Path, loop: asyncio.AbstractEventLoop, touch: Callable[..., None]):
        self._root = str(root)
        self._loop = loop
        self._touch = touch

    def _rel(self, raw: str | bytes) -> str | None:
        path = os.fsdecode(raw)
        if not path.startswith(self._root + os.sep):
            return None
        rel = path[len(self._root) + 1 :].replace(os.sep, "/")
        if not rel.endswith(".md") or is_hidden(rel):
            return None
        return rel

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory or event.event_type in _IGNORED_TYPES:
            return
        src = self._rel(event.src_path)
        dest = self._rel(event.dest_path) if event.event_type == "moved" else None
        if event.event_type == "moved":
            if dest is not None:
                self._post(dest, src)
            if src is not None:
                self._post(src, None)
        elif src is not None:
            self._post(src, None)

    def _post(self, rel: str, moved_from: str | None) -> None:
        # The loop may already be closing at shutdown; a lost event then is
        # harmless because the next start-up scan sees the file as it is.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._touch, rel, moved_from)


class Watcher:
    """Debounced, de-duplicated note events for one vault, as an async iterator."""

    def __init__(
        self,
        root: Path,
        settle: Settle,
        *,
        quiet_window_s: float = 0.5,
        polling: bool = False,
        poll_interval_s: float = 1.0,
        known_under: Callable[[str], Iterable[str]] = lambda folder: (),
    ) -> None:
        self._root = root
        self._settle = settle
        self._known_under = known_under
        self._io = file_workers()
        """The notes known under a folder (reported when the folder moves away)."""
        self._quiet = quiet_window_s
        self._polling = polling
        self._poll_interval = poll_interval_s
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._moved_from: dict[str, str] = {}
        self._seen: dict[str, int] = {}
        """Raw events per note since it was last settled."""
        self._ready: deque[str] = deque()
        self._wake = asyncio.Event()
        self._queue: asyncio.Queue[VaultEvent] = asyncio.Queue()
        self._observer: BaseObserver | inotify.InotifyTree | None = None
        self._reader: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self.restarts = 0

    async def start(self) -> None:
        self._observer = await self._start_observer()
        self._reader = asyncio.create_task(self._read_settled(), name="vault-watcher")
        self._supervisor = asyncio.create_task(self._supervise(), name="vault-watcher-check")

    async def _start_observer(self) -> BaseObserver | inotify.InotifyTree:
        loop = asyncio.get_running_loop()
        if not self._polling and inotify.available():
            tree = inotify.InotifyTree(
                self._root, self._touch, lambda: self._queue.put_nowait(RESCAN), self._known_under
            )
            tree.start()
            return tree
        observer: BaseObserver = (
            PollingObserver(timeout=self._poll_interval) if self._polling else Observer()
        )
        observer.schedule(
            _Relay(self._root, loop, self._touch),
            str(self._root),
            recursive=True,
            # Only changes: without a filter inotify also reports every open and
            # close, so each note the gateway reads (100,000 at start) costs events.
            event_filter=_CHANGES,
        )
        try:
            await asyncio.to_thread(observer.start)
        except OSError as exc:
            raise VaultError(
                f"cannot watch {self._root}: {exc}. If inotify watches ran out, raise "
                "fs.inotify.max_user_watches or set watch_polling = true"
            ) from exc
        return observer

    async def _supervise(self, every_s: float = 1.0) -> None:
        # watchdog's thread can die (an exception in its emitter); events would then
        # stop without a word. Start a new observer and ask for a full rescan, since
        # whatever changed in between was not seen.
        while True:
            await asyncio.sleep(every_s)
            observer = self._observer
            if observer is None or observer.is_alive():
                continue
            log.error("the vault watcher stopped; restarting it and rescanning the vault")
            try:
                self._observer = await self._start_observer()
            except VaultError as exc:
                log.error("%s", exc)
                continue
            self.restarts += 1
            self._queue.put_nowait(RESCAN)

    async def stop(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._observer is not None:
            observer = self._observer
            self._observer = None
            observer.stop()
            if isinstance(observer, BaseObserver):
                await asyncio.to_thread(observer.join, 5)

    async def __aenter__(self) -> Watcher:
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
        """Notes changed but not yet settled or not yet read."""
        return len(self._timers) + len(self._ready)

    def _touch(self, rel: str, moved_from: str | None) -> None:
        self._seen[rel] = self._seen.get(rel, 0) + 1
        old = self._timers.pop(rel, None)
        if old is not None:
            old.cancel()
        if moved_from is not None:
            self._moved_from[rel] = moved_from
        loop = asyncio.get_running_loop()
        self._timers[rel] = loop.call_later(self._quiet, self._due, rel)

    def _due(self, rel: str) -> None:
        self._timers.pop(rel, None)
        self._ready.append(rel)
        self._wake.set()

    async def _read_settled(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._ready:
                batch = [self._ready.popleft() for _ in range(min(_BATCH, len(self._ready)))]
                moves = [self._moved_from.pop(rel, None) for rel in batch]
                counts = [self._seen.pop(rel, 0) for rel in batch]
                events = await self._io.run(
                    functools.partial(self._settle_all, batch, moves, counts)
                )
                for event in events:
                    self._queue.put_nowait(event)

    def _settle_all(
        self, batch: list[str], moves: list[str | None], counts: list[int]
    ) -> list[VaultEvent]:
        events = []
        for rel, moved_from, count in zip(batch, moves, counts, strict=True):
            event = self._settle(rel, moved_from, count)
            if event is not None:
                events.append(event)
        return events
