"""The worker threads that run the vault's and the registry's blocking calls."""

from __future__ import annotations

import asyncio
import threading

import pytest

from vault_adapter.workers import URGENT, Workers


async def test_results_and_exceptions_come_back_to_their_callers() -> None:
    workers = Workers(3, "test")
    try:

        def fail() -> None:
            raise ValueError("broken")

        results = await asyncio.gather(*(workers.run(lambda i=i: i * i) for i in range(200)))
        assert results == [i * i for i in range(200)]
        with pytest.raises(ValueError, match="broken"):
            await workers.run(fail)
        names = await asyncio.gather(
            *(workers.run(lambda: threading.current_thread().name) for _ in range(50))
        )
        assert {n.rsplit("_", 1)[0] for n in names} == {"test"}
        assert threading.current_thread().name not in names
    finally:
        workers.close()


async def test_a_cancelled_call_still_runs_and_its_result_is_dropped() -> None:
    workers = Workers(1, "test")
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def slow() -> str:
        started.set()
        release.wait(10)
        finished.set()
        return "late"

    try:
        task = asyncio.create_task(workers.run(slow))
        assert await asyncio.to_thread(started.wait, 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
        assert await asyncio.to_thread(finished.wait, 10)
        # The worker goes on with the next call; the dropped result disturbs nothing.
        assert await workers.run(lambda: "next") == "next"
    finally:
        workers.close()


def test_one_pool_serves_calls_from_one_loop_after_another() -> None:
    workers = Workers(2, "test")
    try:
        for n in range(3):
            assert asyncio.run(workers.run(lambda n=n: n + 1)) == n + 1
    finally:
        workers.close()


async def test_closed_workers_refuse_new_calls_after_finishing_queued_ones() -> None:
    workers = Workers(2, "test")
    assert await workers.run(lambda: 1) == 1
    workers.close()
    with pytest.raises(RuntimeError, match="closed"):
        await workers.run(lambda: 2)


async def test_urgent_calls_go_before_the_calls_already_waiting() -> None:
    workers = Workers(1, "test")
    release = threading.Event()
    order: list[str] = []

    async def urgent(name: str) -> None:
        URGENT.set(True)  # this task's context only
        await workers.run(lambda: order.append(name))

    try:
        busy = asyncio.create_task(workers.run(lambda: release.wait(10)))
        queued = [asyncio.create_task(workers.run(lambda n=n: order.append(n))) for n in "ab"]
        await asyncio.sleep(0)  # both are queued behind the busy call
        first = asyncio.create_task(urgent("U"))
        await asyncio.sleep(0)
        release.set()
        await asyncio.gather(busy, *queued, first)
        assert order == ["U", "a", "b"]
        assert not URGENT.get()
    finally:
        workers.close()
