"""Accepting a message goes before starting a turn.

Someone waits on every ``POST /api/messages`` until its note is on disk; nobody
waits on a turn's first millisecond. The two share one event loop and one
interpreter lock, and a turn's bookkeeping (reading its note and dossier,
stamping, writing the reply and the thread note) costs several times an
accept. Under a burst of posts, with every queued turn starting as soon as it
could, the accepts waited behind the turns they had just queued: measured
with 100 clients on 2 cores, 600 to 900 accepts a second, p99 175 to 255 ms,
where the same note writes alone took 35 to 57 ms.

So while accepts are in flight, turns start one at a time, each once the
accepts pause or :data:`HOLD_S` has passed, whichever comes first. Nothing is
dropped and nothing reorders: a thread's turns keep their order, running
turns are not touched, and once the burst is over the queues drain at full
speed. Notes that arrive any other way (the watcher, the CLI, jobs) do not
hold turns back: nobody is waiting on their answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

HOLD_S = 0.1
"""The longest a turn start waits for a pause in the accepts (so a steady stream
of posts slows turns down, never stops them: at least ten starts a second)."""


class AcceptPressure:
    def __init__(self, hold_s: float = HOLD_S) -> None:
        self.hold_s = hold_s
        self.accepting = 0
        """Accepts in flight: from the request's arrival to its note on disk."""
        self.held = 0
        """Turn starts that waited for the accepts (for ``status`` and benchmarks)."""
        self._quiet = asyncio.Event()
        self._quiet.set()
        self._one_at_a_time = asyncio.Lock()

    @contextlib.contextmanager
    def accept(self) -> Iterator[None]:
        """Around the part of an accept someone waits on (not a ``wait`` for the reply:
        that would hold back the very turn it waits for)."""
        self.accepting += 1
        self._quiet.clear()
        try:
            yield
        finally:
            self.accepting -= 1
            if not self.accepting:
                self._quiet.set()

    async def before_turn(self) -> None:
        """Return at once when no accept is in flight; otherwise take the one turn
        start allowed and wait for a pause in the accepts, at most ``hold_s``."""
        if not self.accepting:
            return
        async with self._one_at_a_time:
            if not self.accepting:
                return
            self.held += 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.hold_s):
                    await self._quiet.wait()
