"""Accepts in flight hold turn starts back, never for long (gateway/pressure.py)."""

from __future__ import annotations

import asyncio

from gateway.pressure import AcceptPressure
from gateway.queues import DrainQueues


async def _still_waiting(task: asyncio.Task[None], turns: int = 5) -> bool:
    for _ in range(turns):
        await asyncio.sleep(0)
    return not task.done()


async def test_with_no_accept_in_flight_a_turn_starts_at_once() -> None:
    pressure = AcceptPressure(hold_s=60)
    async with asyncio.timeout(1):
        await pressure.before_turn()
    assert pressure.held == 0


async def test_a_turn_waits_for_the_accept_in_flight_to_end() -> None:
    pressure = AcceptPressure(hold_s=60)
    with pressure.accept():
        start = asyncio.create_task(pressure.before_turn())
        assert await _still_waiting(start)
    async with asyncio.timeout(5):
        await start
    assert pressure.held == 1 and pressure.accepting == 0


async def test_a_steady_stream_of_accepts_slows_turns_but_never_stops_them() -> None:
    pressure = AcceptPressure(hold_s=0.05)
    with pressure.accept():
        async with asyncio.timeout(5):
            await pressure.before_turn()  # after hold_s, though the accept is still going
        assert pressure.accepting == 1


async def test_turns_wait_out_the_accepts_one_at_a_time() -> None:
    pressure = AcceptPressure(hold_s=60)
    with pressure.accept():
        starts = [asyncio.create_task(pressure.before_turn()) for _ in range(3)]
        assert await _still_waiting(starts[0])
        assert pressure.held == 1  # one is holding; the others queue behind it
    async with asyncio.timeout(5):
        await asyncio.gather(*starts)
    assert pressure.held == 1  # once the accepts paused, the rest went straight on


async def test_the_drain_queues_ask_the_gate_before_every_turn() -> None:
    opened = asyncio.Event()
    asked: list[str] = []
    ran: list[str] = []

    async def gate() -> None:
        asked.append("gate")
        await opened.wait()

    all_ran = asyncio.Event()

    async def run(turn_id: str) -> None:
        ran.append(turn_id)
        if len(ran) == 3:
            all_ran.set()

    queues = DrainQueues(4, run, gate=gate)
    queues.put("thread-a", "t1")
    queues.put("thread-a", "t2")
    queues.put("thread-b", "t3")
    for _ in range(5):
        await asyncio.sleep(0)
    assert ran == [] and len(asked) == 2  # one turn of each thread, both at the gate
    opened.set()
    async with asyncio.timeout(5):
        await all_ran.wait()
    assert sorted(ran) == ["t1", "t2", "t3"] and ran.index("t1") < ran.index("t2")
    assert len(asked) == 3
