"""A gateway harness: an in-process gateway over a real temp vault and a real SQLite file."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.backends import Backend, EchoBackend, ScriptedBackend
from gateway.engine import Gateway
from gateway.jobs import Clock
from gateway.serve import open_vault
from gateway.settings import Settings
from vault_adapter import Note, parse_note

TIMEOUT = 15.0
FINAL = ("turn.done", "turn.rejected")

ECHO = """---
tags: [agent/definition]
name: echo
mode: multi-threaded
backend: echo
---
You are the echo agent.
"""


def definition(name: str, *, mode: str = "multi-threaded", extra: str = "") -> str:
    return (
        f"---\ntags: [agent/definition]\nname: {name}\nmode: {mode}\nbackend: scripted\n"
        f"{extra}---\nYou are {name}, a test agent.\n"
    )


def message(agent: str, text: str, *, subject: str | None = None, sender: str = "alice") -> str:
    lines = [f"agent: {agent}", f"sender: {sender}"]
    if subject is not None:
        lines.append(f"subject: {subject}")
    return "---\n" + "\n".join(lines) + f"\n---\n{text}\n"


@dataclass
class Harness:
    root: Path
    settings: Settings
    backend: ScriptedBackend
    gateway: Gateway | None = None
    extra_backends: dict[str, Backend] = field(default_factory=dict)
    clock: Clock | None = None
    events: asyncio.Queue[dict[str, Any] | None] | None = None
    seen: list[dict[str, Any]] = field(default_factory=list)

    def write(self, rel: str, text: str) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    def note(self, rel: str) -> Note:
        return parse_note(rel, (self.root / rel).read_bytes(), 0.0)

    async def start(self, **overrides: Any) -> Gateway:
        if overrides:
            self.settings = self.settings.model_copy(update=overrides)
        self.gateway = Gateway(
            open_vault(self.root, self.settings),
            self.settings,
            backends={"scripted": self.backend, "echo": EchoBackend(), **self.extra_backends},
            clock=self.clock,
        )
        self.events = self.gateway.bus.subscribe()
        await self.gateway.start()
        return self.gateway

    async def stop(self) -> None:
        if self.gateway is not None:
            await self.gateway.stop()
            self.gateway = None

    async def restart(self) -> Gateway:
        await self.stop()
        return await self.start()

    async def wait_event(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = TIMEOUT
    ) -> dict[str, Any]:
        for event in self.seen:
            if predicate(event):
                return event
        assert self.events is not None

        async def scan() -> dict[str, Any]:
            assert self.events is not None
            while True:
                event = await self.events.get()
                assert event is not None, "event subscriber was dropped"
                self.seen.append(event)
                if predicate(event):
                    return event

        return await asyncio.wait_for(scan(), timeout)

    async def wait_count(
        self, kinds: tuple[str, ...], count: int, timeout: float = TIMEOUT
    ) -> None:
        """Wait until ``count`` events of the given types have been seen, in all."""

        async def collect() -> None:
            assert self.events is not None
            while self.count(kinds) < count:
                event = await self.events.get()
                assert event is not None, "event subscriber was dropped"
                self.seen.append(event)

        try:
            await asyncio.wait_for(collect(), timeout)
        except TimeoutError:
            raise TimeoutError(f"saw {self.count(kinds)} of {count} {kinds} events") from None

    async def done(self, count: int = 1, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
        """Wait until ``count`` turns have finished or been rejected, in all."""
        await self.wait_count(FINAL, count, timeout)
        return [e for e in self.seen if e["type"] in FINAL]

    async def wait_for_file(
        self, rel: str, check: Callable[[dict[str, Any]], bool], timeout: float = TIMEOUT
    ) -> Note:
        """Wait until a note someone else writes (the gateway) satisfies ``check``."""
        found: list[Note] = []

        def ok() -> bool:
            try:
                note = self.note(rel)
            except Exception:
                return False
            found[:] = [note]
            return check(note.frontmatter)

        await eventually(ok, timeout)
        return found[0]

    def count(self, kinds: tuple[str, ...]) -> int:
        return sum(1 for e in self.seen if e["type"] in kinds)

    def finished(self) -> int:
        return sum(1 for e in self.seen if e["type"] in FINAL)


async def eventually(check: Callable[[], Awaitable[bool] | bool], timeout: float = TIMEOUT) -> None:
    """Poll a condition that has no event to wait on (a file someone else writes)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.02)


class FakeClock:
    """A clock tests move by hand: nothing waits for real minutes."""

    def __init__(self, start: datetime) -> None:
        self.t = start
        self._moved = asyncio.Event()

    def now(self) -> datetime:
        return self.t

    async def sleep_until(self, when: datetime, wake: asyncio.Event) -> None:
        while self.t < when and not wake.is_set():
            moved = asyncio.ensure_future(self._moved.wait())
            woken = asyncio.ensure_future(wake.wait())
            try:
                await asyncio.wait({moved, woken}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                moved.cancel()
                woken.cancel()

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)
        self._moved.set()
        self._moved = asyncio.Event()
