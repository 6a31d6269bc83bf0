"""Threads that run blocking calls for the event loop, with less ceremony than ``to_thread``.

``asyncio.to_thread`` goes through ``concurrent.futures``: a future with its
own condition variable, chained to an asyncio future, and one wake-up of the
loop (a write to its self-pipe) per call. A turn makes about fifteen such
calls (note reads and writes, registry transactions); at a few hundred turns
a second that machinery cost a third of the event loop's time. Here a call
is a tuple on a queue; its result is set straight on the asyncio future, and
results that finish while the loop is busy are handed over in one wake-up.

A call whose awaiting task is cancelled still runs to the end (a thread
cannot be interrupted, exactly as with ``to_thread``); its result is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_Job = tuple[Callable[[], Any], asyncio.Future[Any]]

URGENT: contextvars.ContextVar[bool] = contextvars.ContextVar("vaultgate_urgent", default=False)
"""Set in a task whose calls should go before everything queued (someone waits on
the answer: an HTTP request being accepted)."""
_Done = tuple[asyncio.Future[Any], bool, Any]


class Workers:
    """``count`` daemon threads, started on first use, ended by :meth:`close`."""

    def __init__(self, count: int, name: str) -> None:
        if count < 1:
            raise ValueError("at least one worker")
        self._count = count
        self._name = name
        self._ready: queue.SimpleQueue[bool] = queue.SimpleQueue()
        """One token per queued call (False: stop), so a worker takes urgent calls first."""
        self._urgent: deque[_Job] = deque()
        self._jobs: deque[_Job] = deque()
        self._threads: list[threading.Thread] = []
        self._done: deque[_Done] = deque()
        self._wake_pending = False
        self._lock = threading.Lock()
        self._closed = False

    async def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` on a worker thread; its result (or exception) here."""
        if self._closed:
            raise RuntimeError(f"{self._name} workers are closed")
        if len(self._threads) < self._count:
            self._start_one()
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        (self._urgent if URGENT.get() else self._jobs).append((fn, future))
        self._ready.put(True)
        return await future

    def _start_one(self) -> None:
        with self._lock:
            if len(self._threads) >= self._count:
                return
            thread = threading.Thread(
                target=self._work, name=f"{self._name}_{len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
        thread.start()

    def _work(self) -> None:
        while self._ready.get():
            fn, future = self._urgent.popleft() if self._urgent else self._jobs.popleft()
            try:
                item: _Done = (future, True, fn())
            except BaseException as exc:  # handed to the awaiting task, as to_thread does
                item = (future, False, exc)
            del fn
            self._done.append(item)
            del item
            if not self._wake_pending:
                self._wake_pending = True
                try:
                    future.get_loop().call_soon_threadsafe(self._hand_over)
                except RuntimeError:
                    # That loop is closed (nobody waits there): each result goes to its
                    # own loop instead.
                    self._wake_pending = False
                    self._scatter()

    def _scatter(self) -> None:
        while True:
            try:
                future, ok, value = self._done.popleft()
            except IndexError:
                return
            with contextlib.suppress(RuntimeError):
                future.get_loop().call_soon_threadsafe(_settle, future, ok, value)

    def _hand_over(self) -> None:
        """On the loop: set the results of every call finished since the last wake-up."""
        self._wake_pending = False
        loop = asyncio.get_running_loop()
        while self._done:
            future, ok, value = self._done.popleft()
            if future.get_loop() is not loop:
                # Another loop's call (a vault used from two loops in turn): its own loop sets it.
                future.get_loop().call_soon_threadsafe(_settle, future, ok, value)
                continue
            _settle(future, ok, value)

    def close(self, *, wait: bool = True) -> None:
        """Finish the calls queued so far, then end the threads."""
        self._closed = True
        threads, self._threads = self._threads, []
        for _ in threads:
            self._ready.put(False)
        if wait:
            for thread in threads:
                if thread is not threading.current_thread():
                    thread.join()


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.cancelled():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


_FILES: Workers | None = None
_FILES_LOCK = threading.Lock()


def file_workers() -> Workers:
    """The process's threads for file work (every folder vault shares them), as many
    as asyncio's default executor would have."""
    global _FILES
    with _FILES_LOCK:
        if _FILES is None:
            _FILES = Workers(min(32, (os.cpu_count() or 1) + 4), "vault-io")
        return _FILES
