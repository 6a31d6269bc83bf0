"""Drain queues: turns with the same key one at a time, in arrival order.

Each drain key has a FIFO and at most one worker task. Workers of different
keys run concurrently. A turn's ``run`` takes one of ``max_concurrent_turns``
slots (:meth:`DrainQueues.slot`) only around its backend (a claude process):
what comes before (waiting out a pause, reading the note, composing the
prompt) and after (recording the outcome; ``finish``: reply, thread note,
stamps) happens outside it, still before the key's next turn starts. The
slots bound the processes, not the bookkeeping, and a paused thread holds its
own queue without holding a slot another thread could use. A turn that fails
(a full disk, a registry that cannot write) is never dropped: it keeps the
head of its queue and is retried with a growing delay until it goes through
or the gateway stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable

log = logging.getLogger(__name__)

Runner = Callable[[str], Awaitable[None]]
Gate = Callable[[], Awaitable[None]]

RETRY_FIRST_S = 0.5
RETRY_MAX_S = 5.0


class Stopping(Exception):
    """Raised by :meth:`DrainQueues.slot` once the queues stop: the turn does not start."""


class DrainQueues:
    def __init__(
        self,
        limit: int,
        run: Runner,
        finish: Runner | None = None,
        *,
        gate: Gate | None = None,
    ) -> None:
        """``gate`` is awaited before each turn starts (see :mod:`gateway.pressure`)."""
        self._run = run
        self._finish = finish
        self._gate = gate
        self._slots = asyncio.Semaphore(limit)
        self._queues: dict[str, deque[str]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._queued: set[str] = set()
        self.running: set[str] = set()
        """Turns holding a slot (their backend is running)."""
        self.finishing: set[str] = set()
        """Turns whose backend has run: their outcome is being recorded and written."""
        self.limit = limit
        self.peak = 0
        self._stopping = False
        self.interrupted: list[str] = []

    def put(self, key: str, turn_id: str) -> bool:
        """Queue a turn; False when it is already queued (recovery and events may overlap)."""
        if turn_id in self._queued:
            return False
        self._queued.add(turn_id)
        self._queues.setdefault(key, deque()).append(turn_id)
        if key not in self._workers:
            self._workers[key] = asyncio.create_task(self._drain(key), name=f"drain:{key}")
        return True

    def __contains__(self, turn_id: str) -> bool:
        return turn_id in self._queued

    def depth(self, key: str | None = None) -> int:
        if key is None:
            return len(self._queued)
        return len(self._queues.get(key, ()))

    def keys(self) -> list[str]:
        return list(self._queues)

    async def _drain(self, key: str) -> None:
        queue = self._queues[key]
        delay = RETRY_FIRST_S
        try:
            while queue and not self._stopping:
                turn_id = queue[0]
                if self._gate is not None:
                    await self._gate()
                    if self._stopping:
                        break
                try:
                    failed = not await self._step(self._run, turn_id, "failed")
                    if not failed and self._finish is not None:
                        self.finishing.add(turn_id)
                        failed = not await self._step(
                            self._finish, turn_id, "could not be finished"
                        )
                except Stopping:
                    break
                finally:
                    self.finishing.discard(turn_id)
                if failed:
                    # A full disk, a registry that cannot write: nothing is dropped.
                    # The turn stays at the head of its queue (order is kept) and is
                    # tried again, without holding a slot while it waits.
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX_S)
                    continue
                delay = RETRY_FIRST_S
                queue.popleft()
                self._queued.discard(turn_id)
        finally:
            if not queue:
                self._queues.pop(key, None)
            self._workers.pop(key, None)

    async def _step(self, step: Runner, turn_id: str, failure: str) -> bool:
        """Run one half of a turn; False when it failed (it is retried, never dropped)."""
        try:
            await step(turn_id)
        except asyncio.CancelledError:
            if turn_id in self.running or turn_id in self.finishing:
                self.interrupted.append(turn_id)  # not when it was still waiting to start
            raise
        except Stopping:
            raise
        except Exception:
            log.exception("turn %s %s; it keeps its place and is retried", turn_id, failure)
            return False
        return True

    @contextlib.asynccontextmanager
    async def slot(self, turn_id: str) -> AsyncIterator[None]:
        """Hold one of the ``limit`` slots while a turn's backend runs; raises
        :class:`Stopping` instead once the queues stop."""
        async with self._slots:
            if self._stopping:
                raise Stopping
            self.running.add(turn_id)
            self.peak = max(self.peak, len(self.running))
            try:
                yield
            finally:
                self.running.discard(turn_id)
                self.finishing.add(turn_id)  # until the queue has written what it produced

    async def stop(self, grace_s: float) -> list[str]:
        """Start nothing new; let running turns finish for ``grace_s``, then cancel.

        Returns the ids of turns cancelled while running (interrupted).
        """
        self._stopping = True
        busy = {t for t in self._workers.values() if self._head_running(t)}
        for task in self._workers.values():
            if task not in busy:
                task.cancel()
        if busy:
            await asyncio.wait(busy, timeout=grace_s)
        self.hurry()
        workers = list(self._workers.values())
        if workers:
            await asyncio.gather(*workers, return_exceptions=True)
        return list(self.interrupted)

    def hurry(self) -> None:
        """Cancel every worker now, running turns included."""
        for task in self._workers.values():
            task.cancel()

    def _head_running(self, task: asyncio.Task[None]) -> bool:
        for key, worker in self._workers.items():
            if worker is task:
                queue = self._queues.get(key)
                return (
                    queue is not None
                    and bool(queue)
                    and (queue[0] in self.running or queue[0] in self.finishing)
                )
        return False
