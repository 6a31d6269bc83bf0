"""Indexing a big folder vault at start-up in worker processes.

The start-up scan must put every note in the index (content hash, tags, the
indexed fields) before the gateway is ready, yet the gateway needs only a few
notes in full: definitions, open inbound messages, jobs, thread notes. Most of
the scan's time is YAML, which holds the GIL, so threads cannot share it out.
From :data:`PARALLEL_FROM` notes on, the walk's paths are cut into chunks and
handed to worker processes (fresh interpreters of the same Python started
with ``python -c``; never ``fork``, the gateway has threads). Each opens the
vault as this process does and answers a chunk with
:meth:`FolderVault.summarize`: only what the index keeps of each note, or why
it is not a note. A thread of this process takes chunks too while the workers
start, and redoes any chunk whose worker failed, so a scan never depends on
its workers. Chunks come back in walk order, whichever process read them.

A frame on the pipes is a 4-byte length and a pickle, both ways, capped at
:data:`FRAME_LIMIT`. A worker ends at EOF on its stdin; one that does not is
terminated, then killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import site
import struct
import sys
from collections import deque
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from vault_adapter.note import Note

log = logging.getLogger(__name__)

PARALLEL_FROM = 20_000
"""Vaults with fewer notes are scanned in a thread: a worker costs ~0.2 s of CPU to
start, which a thread's ~35 us a note only makes up for on a vault about this big."""
CHUNK = 500
"""Notes per chunk: enough to make a pipe round trip cheap, few enough to share out evenly."""
FRAME_LIMIT = 64 * 1024 * 1024
"""Largest frame accepted from a worker (indexed fields of a chunk, pickled)."""
ANSWER_TIMEOUT_S = 120.0
"""A worker that has not answered a chunk by then is ended; its chunks are done here."""
_IN_FLIGHT = 2
"""Chunks sent to a worker ahead of its answers, so it never waits for the next one."""
_EXIT_GRACE_S = 5.0
"""How long a worker gets to end after EOF (and again after SIGTERM) before the next step."""
_HEADER = struct.Struct(">I")

Scanned = tuple[str, str, tuple[str, ...], tuple[tuple[str, Any], ...], str | None]
"""One note as a scan saw it: ``(path, content hash, tags, indexed fields, why it is not
a note or None)``. The hash is empty when the file could not be read at all."""


@dataclass(frozen=True, slots=True)
class NoteSummary:
    """What a scan knows of a note without building it: what the index keeps."""

    path: str
    content_hash: str
    tags: tuple[str, ...]
    fields: Mapping[str, Any]
    """The note's indexed fields (the vault's ``index_fields`` it has), not all of them."""

    @classmethod
    def of(cls, note: Note, fields: Sequence[str]) -> NoteSummary:
        """The summary of a note already built, as a scan of its file would give it."""
        wanted = {k: note.frontmatter[k] for k in fields if k in note.frontmatter}
        return cls(note.path, note.content_hash, note.tags, wanted)

    def has_tag(self, tag: str) -> bool:
        wanted = tag.strip().lstrip("#").strip().casefold()
        return any(t.casefold() == wanted for t in self.tags)

    def index_note(self) -> Note:
        """The note as :meth:`NoteIndex.put` sees it (no body, no other fields), so a
        summary is indexed exactly as the full note would be."""
        return Note(
            path=self.path,
            frontmatter=dict(self.fields),
            body="",
            tags=self.tags,
            mtime=0.0,
            content_hash=self.content_hash,
        )


Wanted = Callable[[NoteSummary], bool]
"""Picks, during a scan, the notes its caller needs in full."""


@dataclass(frozen=True, slots=True)
class ScanSetup:
    """What a worker needs to read the vault as this process does."""

    root: str
    max_note_bytes: int
    index_fields: tuple[str, ...]


def default_processes() -> int:
    """Worker processes for a big scan: one per usable CPU, none on a single CPU."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return cpus if cpus > 1 else 0


def chunked(paths: Iterable[str]) -> list[list[str]]:
    """``paths`` in chunks of :data:`CHUNK`, the unit :func:`scan_chunks` shares out."""
    chunks: list[list[str]] = []
    for path in paths:
        if not chunks or len(chunks[-1]) >= CHUNK:
            chunks.append([])
        chunks[-1].append(path)
    return chunks


async def scan_chunks(
    chunks: list[list[str]],
    summarize: Callable[[list[str]], list[Scanned]],
    setup: ScanSetup,
    *,
    processes: int,
    parallel_from: int = PARALLEL_FROM,
    command: Sequence[str] = (),
    thread_helps: bool = True,
    answer_timeout_s: float = ANSWER_TIMEOUT_S,
) -> AsyncGenerator[list[Scanned], None]:
    """``summarize`` of each of ``chunks`` (taken over: emptied as they are done), in order.

    From ``parallel_from`` paths on, ``processes`` workers opened with ``setup`` share the
    chunks, with a thread running ``summarize`` while they start (unless not
    ``thread_helps``). A worker that fails, or has not answered a chunk after
    ``answer_timeout_s``, is ended and its chunks are done here. ``command`` replaces
    the worker's command line.
    """
    notes = sum(len(chunk) for chunk in chunks)
    if processes < 1 or notes < parallel_from:
        for i, chunk in enumerate(chunks):
            chunks[i] = []
            yield await asyncio.to_thread(summarize, chunk)
        return
    scan = _Parallel(chunks, summarize, setup, list(command or _worker_command()), answer_timeout_s)
    async with contextlib.aclosing(scan.run(processes, thread_helps=thread_helps)) as answers:
        async for done in answers:
            yield done
    log.info(
        "indexed %d notes: %d of %d chunks in %d worker processes",
        notes,
        scan.by_workers,
        len(chunks),
        processes,
    )


class _WorkerFailed(Exception):
    """A worker process broke its side of the protocol; its chunks are redone here."""


class _Parallel:
    """Chunks shared out between worker processes and a thread, answered in order."""

    def __init__(
        self,
        chunks: list[list[str]],
        summarize: Callable[[list[str]], list[Scanned]],
        setup: ScanSetup,
        command: list[str],
        answer_timeout_s: float,
    ) -> None:
        self._chunks = chunks
        self._summarize = summarize
        self._setup = setup
        self._command = command
        self._answer_timeout_s = answer_timeout_s
        self._next = 0
        self._results: list[asyncio.Future[list[Scanned]] | None] = []
        self._starting = 0
        self.by_workers = 0

    async def run(
        self, processes: int, *, thread_helps: bool
    ) -> AsyncGenerator[list[Scanned], None]:
        loop = asyncio.get_running_loop()
        self._results = [loop.create_future() for _ in self._chunks]
        self._starting = processes
        tasks = [asyncio.create_task(self._guard(self._in_worker())) for _ in range(processes)]
        if thread_helps:
            tasks.append(asyncio.create_task(self._guard(self._in_thread(while_starting=True))))
        finished = False
        try:
            for i, result in enumerate(self._results):
                assert result is not None
                found = await result
                self._results[i] = None  # what has been handed on is not kept here
                yield found
            finished = True
        finally:
            if not finished:
                for task in tasks:
                    task.cancel()
            await asyncio.gather(*tasks, return_exceptions=not finished)

    def _take(self) -> int | None:
        """The next chunk nobody has taken yet (no await: one taker at a time)."""
        if self._next >= len(self._chunks):
            return None
        self._next += 1
        return self._next - 1

    async def _guard(self, consumer: Coroutine[Any, Any, None]) -> None:
        try:
            await consumer
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            # A bug, not a worker failure: fail the scan rather than wait for ever.
            for result in self._results:
                if result is not None and not result.done():
                    result.set_exception(exc)
            raise

    async def _index_here(self, index: int) -> None:
        found = await asyncio.to_thread(self._summarize, self._chunks[index])
        self._answer(index, found)

    def _answer(self, index: int, found: list[Scanned]) -> None:
        self._chunks[index] = []
        result = self._results[index]
        assert result is not None
        result.set_result(found)

    async def _in_thread(self, *, while_starting: bool = False) -> None:
        # Workers take ~0.3 s to start; until they all answer, this thread reads too.
        # Then it stops, leaving the CPUs to them and this process to the results.
        while not (while_starting and self._starting == 0):
            index = self._take()
            if index is None:
                return
            await self._index_here(index)

    async def _in_worker(self) -> None:
        sent: deque[int] = deque()
        worker: _Worker | None = None
        starting = True
        try:
            worker = await _Worker.start(self._command)
            await worker.send(self._setup)
            while True:
                while len(sent) < _IN_FLIGHT and (index := self._take()) is not None:
                    sent.append(index)
                    await worker.send(self._chunks[index])
                if not sent:
                    return
                async with asyncio.timeout(self._answer_timeout_s):
                    found = await worker.receive()
                if starting:
                    starting = False
                    self._starting -= 1
                self._answer(sent.popleft(), found)
                self.by_workers += 1
        except (OSError, TimeoutError, _WorkerFailed) as exc:
            log.warning("a scan worker failed, indexing its notes in this process: %r", exc)
            if starting:
                self._starting -= 1
            for index in sent:
                await self._index_here(index)
            await self._in_thread()
        finally:
            if worker is not None:
                await worker.close()


def _worker_command() -> list[str]:
    return [sys.executable, "-c", "from vault_adapter.scan import serve_worker; serve_worker()"]


def _worker_env() -> dict[str, str]:
    # The worker imports this package from wherever this process found it: a
    # checkout that the benchmarks and tests put on sys.path by hand, or an
    # editable install, goes first. An installed package is found anyway (and
    # site-packages put first would shadow the standard library).
    here = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    if here not in _site_folders():
        env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    return env


def _site_folders() -> set[str]:
    folders = [*site.getsitepackages(), site.getusersitepackages()]
    return {str(Path(folder).resolve()) for folder in folders}


class _Worker:
    """One worker process seen from the scan: send chunks, receive their summaries."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc
        assert proc.stdin is not None and proc.stdout is not None
        self._stdin = proc.stdin
        self._stdout = proc.stdout

    @classmethod
    async def start(cls, command: list[str]) -> _Worker:
        proc = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=_worker_env(),
        )
        return cls(proc)

    async def send(self, payload: object) -> None:
        data = pickle.dumps(payload, pickle.HIGHEST_PROTOCOL)
        self._stdin.write(_HEADER.pack(len(data)) + data)
        await self._stdin.drain()

    async def receive(self) -> list[Scanned]:
        try:
            (size,) = _HEADER.unpack(await self._stdout.readexactly(_HEADER.size))
            if size > FRAME_LIMIT:
                raise _WorkerFailed(f"an answer of {size} bytes, over the {FRAME_LIMIT} limit")
            data = await self._stdout.readexactly(size)
        except asyncio.IncompleteReadError as exc:
            raise _WorkerFailed("it ended before answering") from exc
        try:
            found: list[Scanned] = pickle.loads(data)
        except Exception as exc:  # whatever a garbled pickle raises
            raise _WorkerFailed(f"an unreadable answer: {exc!r}") from exc
        return found

    async def close(self) -> None:
        """End the worker and reap it, even when cancelled meanwhile (then at once)."""
        ending = asyncio.ensure_future(self._end())
        cancelled = False
        while not ending.done():
            try:
                await asyncio.shield(ending)
            except asyncio.CancelledError:
                cancelled = True
                with contextlib.suppress(ProcessLookupError):
                    self._proc.kill()
        if cancelled:
            raise asyncio.CancelledError
        ending.result()

    async def _end(self) -> None:
        # EOF on stdin is the worker's signal to end. Its stdout is read to the end so
        # the pipes close too; one that does not end is terminated, then killed.
        with contextlib.suppress(OSError):
            self._stdin.close()
        for stop in (self._proc.terminate, self._proc.kill):
            if await self._ended():
                return
            with contextlib.suppress(ProcessLookupError):
                stop()
        if not await self._ended():
            log.error("scan worker %d did not end after SIGKILL", self._proc.pid)

    async def _ended(self) -> bool:
        try:
            async with asyncio.timeout(_EXIT_GRACE_S):
                while await self._stdout.read(1 << 16):
                    pass
                await self._proc.wait()
        except TimeoutError:
            return False
        return True


def _read_frame(src: BinaryIO) -> Any:
    header = src.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    data = src.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)


def serve_worker() -> None:
    """A worker process's main loop: answer each chunk on stdout until stdin ends."""
    # Imported here: the vault imports this module to run scans.
    from vault_adapter.folder import FolderVault

    # Ctrl-C reaches the whole process group; the gateway decides when workers end.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    src, out = sys.stdin.buffer, sys.stdout.buffer
    setup = _read_frame(src)
    if not isinstance(setup, ScanSetup):
        return
    vault = FolderVault(
        setup.root, max_note_bytes=setup.max_note_bytes, index_fields=setup.index_fields
    )
    while (paths := _read_frame(src)) is not None:
        data = pickle.dumps(vault.summarize(paths), pickle.HIGHEST_PROTOCOL)
        out.write(_HEADER.pack(len(data)) + data)
        out.flush()
