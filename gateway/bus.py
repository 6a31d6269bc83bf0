"""A fan-out of gateway events to whoever listens (the SSE route, `vaultgate top`).

Publishing never waits: each subscriber has a bounded queue, and one that
falls behind is dropped (its queue gets ``None``, meaning "you missed
events, reconnect") rather than slowing the gateway down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from gateway.registry import now_iso


class EventBus:
    def __init__(self, buffer: int = 1000) -> None:
        self._buffer = buffer
        self._subscribers: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self._listeners: list[Callable[[dict[str, Any]], None]] = []

    def add_listener(self, listener: Callable[[dict[str, Any]], None]) -> None:
        """Call ``listener`` with every event, synchronously; for the gateway's own parts,
        which must see every event (a listener must be quick and must not raise)."""
        self._listeners.append(listener)

    def subscribe(self) -> asyncio.Queue[dict[str, Any] | None]:
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(self._buffer + 1)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any] | None]) -> None:
        self._subscribers.discard(queue)

    def publish(self, kind: str, **data: Any) -> None:
        event = {"type": kind, "ts": now_iso(), **data}
        for listener in self._listeners:
            listener(event)
        for queue in list(self._subscribers):
            if queue.qsize() >= self._buffer:
                self._subscribers.discard(queue)
                queue.put_nowait(None)
            else:
                queue.put_nowait(event)
