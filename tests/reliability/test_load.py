"""10,000 queued messages: memory stays bounded and ``/health`` keeps answering.

The messages are written into ``Inbox/`` before ``vaultgate serve`` starts
(100 subjects of one multi-threaded agent on the ``scripted`` backend, which
answers at once), so the gateway meets the whole backlog in its start-up scan
and then drains it at full speed. Meanwhile the test calls ``GET /health``
back to back (each call waits for the last, 20 ms apart) and samples the
subprocess's ``VmRSS`` from ``/proc/<pid>/status``; the kernel's ``VmHWM``
gives the true peak. "Before" is the same gateway idle over the same vault
with an empty inbox (a first, short run).

Bounds, deliberately generous (the benchmark work owns tight targets):

- health p99 under 1 s: a health call is a dictionary of counters; a second
  means the event loop was blocked by something else (a synchronous scan, a
  long write) for a second while the queue drained.
- peak RSS no more than 300 MB above the idle gateway, i.e. 30 kB per queued
  message at the default size: a gateway that keeps each message's note in
  memory until its turn (frontmatter, body, index entry: a few kB each) fits
  easily, one that leaks the reply text, the thread note or the event history
  per turn grows past it at 10,000 messages, and a larger scale makes any
  per-message leak plainer.

Notes are written without fsync (``VAULTGATE_FSYNC=0``): what is measured here
is memory and responsiveness, not durability (the crash tests keep fsync on),
and it keeps the drain inside the CI budget on two cores.

``VAULTGATE_RELIABILITY_SCALE=N`` queues N times the messages (the memory
bound grows with N: it is per message).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from tests.helpers.harness import definition, message
from tests.helpers.serve import Serve
from tests.reliability.support import (
    audit,
    percentile,
    registry_rows,
    scale,
    summary,
    vm_kb,
)

MESSAGES = 10_000 * scale()
SUBJECTS = 100
HEALTH_P99_BOUND_S = 1.0
RSS_GROWTH_BOUND_KB = 30 * MESSAGES
ENV = {"VAULTGATE_FSYNC": "0", "VAULTGATE_MAX_CONCURRENT_TURNS": "4"}


def finalized(root: Path) -> int:
    return int(registry_rows(root, "SELECT COUNT(*) AS n FROM turns WHERE finalized = 1")[0]["n"])


@pytest.mark.timeout(900)  # draining 10,000 turns takes about two minutes on 2 cores
async def test_ten_thousand_queued_messages_keep_memory_bounded_and_health_fast(
    tmp_path: Path,
) -> None:
    root = tmp_path / "vault"
    (root / "Inbox").mkdir(parents=True)
    (root / "Agents").mkdir()
    (root / "Agents" / "load.md").write_text(definition("load", extra="script: {delay_s: 0}\n"))

    # Idle: the same gateway over the same vault, nothing to do.
    serve = Serve(root, env=ENV)
    await serve.start()
    assert serve.proc is not None
    idle_kb = vm_kb(serve.proc.pid)["VmRSS"]
    assert await serve.terminate() == 0

    for i in range(MESSAGES):
        (root / "Inbox" / f"q{i:06d}.md").write_text(
            message("load", f"queued message {i}", subject=f"s{i % SUBJECTS}")
        )

    started = time.monotonic()
    await serve.start()
    ready_s = time.monotonic() - started
    assert serve.proc is not None
    pid = serve.proc.pid
    at_start_kb = vm_kb(pid)["VmRSS"]
    latencies: list[float] = []
    statuses: set[int] = set()
    done = 0
    last_count = 0.0
    deadline = time.monotonic() + 600
    async with aiohttp.ClientSession() as session:
        while done < MESSAGES:
            sent = time.monotonic()
            async with session.get(
                f"{serve.url}/health", timeout=aiohttp.ClientTimeout(total=30)
            ) as response:
                await response.read()
                statuses.add(response.status)
            latencies.append(time.monotonic() - sent)
            if time.monotonic() - last_count > 0.5:
                done, last_count = await asyncio.to_thread(finalized, root), time.monotonic()
            assert time.monotonic() < deadline, f"only {done} of {MESSAGES} done in 600 s"
            await asyncio.sleep(0.02)  # the scenario: a monitor polling health
    drain_s = time.monotonic() - started
    memory = vm_kb(pid)
    assert await serve.terminate() == 0, "\n".join(serve.log[-20:])

    result = audit(root)
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    growth_kb = memory["VmHWM"] - idle_kb
    summary(
        "load",
        messages_sent=MESSAGES,
        lost=MESSAGES - len(result.replies),
        duplicated=result.duplicated_replies,
        rss_before_mb=round(idle_kb / 1024, 1),
        rss_at_start_mb=round(at_start_kb / 1024, 1),
        rss_peak_mb=round(memory["VmHWM"] / 1024, 1),
        rss_after_mb=round(memory["VmRSS"] / 1024, 1),
        kb_per_message=round(growth_kb / MESSAGES, 2),
        health_calls=len(latencies),
        health_p50_ms=round(p50 * 1000, 1),
        health_p99_ms=round(p99 * 1000, 1),
        health_max_ms=round(max(latencies) * 1000, 1),
        ready_s=round(ready_s, 1),
        drain_s=round(drain_s, 1),
        turns_per_s=round(MESSAGES / drain_s, 1),
    )
    assert statuses == {200}, statuses
    assert p99 < HEALTH_P99_BOUND_S, f"health p99 {p99:.3f} s"
    assert growth_kb < RSS_GROWTH_BOUND_KB, f"peak RSS grew {growth_kb} kB over idle"
    assert len(result.replies) == MESSAGES and result.duplicated_replies == 0
    assert not result.problems, "\n".join(result.problems[:30])
