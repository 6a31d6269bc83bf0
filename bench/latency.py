"""Latency to turn start (watcher and HTTP) and HTTP accept throughput.

    python bench/latency.py [--samples 50] [--requests 2000] [--clients 100]

Watcher: a note is written into Inbox/ and the clock stops at the gateway's
``turn.started`` event. HTTP: ``POST /api/messages`` (no wait) until
``turn.started``. Accept: ``clients`` concurrent clients, in a process of
their own, post ``requests`` messages in all; each answer is a 202 only once
the note is on disk. The accept floor, measured after each load, is the same
load on a bare aiohttp route that only writes the note (see ``accept_floor``);
five rounds of both, each on a fresh gateway, and the figures are medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from common import Result, percentile, print_table, run_dir, start_gateway, write_agent

from gateway.http.app import build_app
from vault_adapter import FolderVault

TOKEN = "bench-token-0123456789"


async def _serve(gateway: Any) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(build_app(gateway, TOKEN, {}), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


def _started_waiter(gateway: Any) -> tuple[dict[str, float], asyncio.Event]:
    started: dict[str, float] = {}
    changed = asyncio.Event()

    def listener(event: dict[str, Any]) -> None:
        if event["type"] == "turn.started":
            started[str(event["turn"])] = time.perf_counter()
            changed.set()

    gateway.bus.add_listener(listener)
    return started, changed


async def _wait_for(started: dict[str, float], changed: asyncio.Event, turn: str) -> float:
    async with asyncio.timeout(30):
        while turn not in started:
            changed.clear()
            await changed.wait()
    return started[turn]


@dataclass(frozen=True)
class Load:
    """One accept load as the clients saw it."""

    answered: int
    rate: float
    """Answers a second, from the first request sent to the last answer."""
    p50_ms: float
    p99_ms: float


async def _accept_run(requests: int, clients: int) -> Load:
    """One load on a freshly started gateway (the last load's turns are not in its way)."""
    with run_dir("gateway-") as tmp:
        root = Path(tmp)
        write_agent(root)
        gateway, _ = await start_gateway(root, max_concurrent_turns=8)
        runner, url = await _serve(gateway)
        try:
            return await _wrk(url, requests, clients)
        finally:
            await runner.cleanup()
            await gateway.stop()


async def latency(samples: int, requests: int, clients: int, rounds: int = 5) -> list[Result]:
    with run_dir("gateway-") as tmp:
        root = Path(tmp)
        write_agent(root)
        gateway, _ = await start_gateway(root, max_concurrent_turns=8)
        quiet = gateway.settings.quiet_window_s
        started, changed = _started_waiter(gateway)
        runner, url = await _serve(gateway)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        watcher_ms: list[float] = []
        http_ms: list[float] = []
        try:
            for i in range(samples):
                t0 = time.perf_counter()
                (root / "Inbox" / f"w{i}.md").write_text(
                    f"---\nagent: bench\nsubject: w{i}\nid: lat-w{i}\n---\nhello {i}\n"
                )
                watcher_ms.append((await _wait_for(started, changed, f"lat-w{i}") - t0) * 1000)
            async with aiohttp.ClientSession() as session:
                for i in range(samples):
                    t0 = time.perf_counter()
                    async with session.post(
                        f"{url}/api/messages",
                        headers=headers,
                        json={"agent": "bench", "text": f"hi {i}", "subject": f"h{i}"},
                    ) as r:
                        turn = (await r.json())["id"]
                    http_ms.append((await _wait_for(started, changed, turn) - t0) * 1000)
        finally:
            await runner.cleanup()
            await gateway.stop()
    # Rounds, each the gateway then its floor; the figures are medians over rounds
    # (this machine's speed drifts from minute to minute).
    rates, p99s, p50s, floor_rates, floor_p99s, floor_p50s = [], [], [], [], [], []
    for _ in range(rounds):
        load = await _accept_run(requests, clients)
        rates.append(load.rate)
        p99s.append(load.p99_ms)
        p50s.append(load.p50_ms)
        floor = await accept_floor(requests, clients)
        floor_rates.append(floor.rate)
        floor_p99s.append(floor.p99_ms)
        floor_p50s.append(floor.p50_ms)
    median = statistics.median
    rate, floor_rate = median(rates), median(floor_rates)
    p99, floor_p99 = median(p99s), median(floor_p99s)
    w50, h50 = percentile(watcher_ms, 50), percentile(http_ms, 50)
    return [
        Result(
            "turn start via watcher, p50",
            w50,
            "ms",
            f"<= {quiet * 1000 + 50:.0f}",
            w50 <= quiet * 1000 + 50,
            {"p99": percentile(watcher_ms, 99), "samples": samples},
        ),
        Result(
            "turn start via HTTP, p50",
            h50,
            "ms",
            "<= 10",
            h50 <= 10,
            {"p99": percentile(http_ms, 99), "samples": samples},
        ),
        Result(
            "HTTP accept throughput",
            rate,
            "req/s",
            ">= 500",
            rate >= 500,
            {
                "clients": clients,
                "requests": requests,
                "rounds": rounds,
                "req_per_s": rates,
                "floor_req_per_s": floor_rates,
            },
            floor=f"{floor_rate:.0f} req/s (HTTP and note write alone)",
        ),
        Result(
            "HTTP accept p99",
            p99,
            "ms",
            "<= 50",
            p99 <= 50,
            {"p50": p50s, "p99": p99s, "floor_p50": floor_p50s, "floor_p99": floor_p99s},
            floor=f"{floor_p99:.0f} ms (HTTP and note write alone)",
        ),
    ]


async def accept_floor(requests: int, clients: int) -> Load:
    """The accept figures' floor: the same clients posting to a bare aiohttp route that
    does only what makes a message durable (parse the JSON, write the note through the
    vault adapter with fsync) and answers 202; no gateway, no token, no routing."""
    with run_dir("floor-") as tmp:
        root = Path(tmp)
        vault = FolderVault(root, scratch=root / ".vaultgate" / "scratch")
        count = 0

        async def accept(request: web.Request) -> web.Response:
            nonlocal count
            body = json.loads(await request.read())
            count += 1
            fields = {"agent": body["agent"], "subject": body["subject"], "id": f"m{count}"}
            note = await vault.create(f"Inbox/http/m{count}.md", fields, body["text"] + "\n")
            return web.json_response({"id": count, "note": note.path}, status=202)

        app = web.Application()
        app.router.add_post("/api/messages", accept)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            return await _wrk(f"http://127.0.0.1:{port}", requests, clients)
        finally:
            await runner.cleanup()


WRK_MISSING = (
    "the HTTP accept benchmark needs wrk (an HTTP load generator): "
    "'apt-get install wrk', or run 'make bench', which installs it"
)


async def _wrk(url: str, requests: int, clients: int) -> Load:
    """``clients`` connections posting ``requests`` messages in all, from wrk.

    wrk is a C load generator: about 20 µs of CPU a request, against 260 µs
    for an aiohttp client, which on 2 cores took a quarter of the machine the
    gateway was being measured on. One wrk thread drives every connection;
    ``load.lua`` builds the requests, checks each answer is a 202 and reports."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError(WRK_MISSING)
    proc = await asyncio.create_subprocess_exec(
        wrk,
        "-t1",
        f"-c{clients}",
        "-d600s",  # a cap: the run ends once the answers are in
        "--timeout",
        "30s",
        "-s",
        str(Path(__file__).with_name("load.lua")),
        url,
        "--",
        str(requests),
        TOKEN,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    report: dict[str, Any] = {}
    async for line in proc.stdout:
        if line.startswith(b"share answered"):
            proc.send_signal(signal.SIGINT)  # wrk stops, and reports
        elif line.startswith(b"{"):
            report = json.loads(line)
    if await proc.wait() != 0 or not report:
        raise RuntimeError(f"wrk failed (exit {proc.returncode})")
    errors = {k: report[k] for k in ("not_202", "connect", "read", "write", "timeout")}
    if any(errors.values()):
        raise RuntimeError(f"the accept load had errors: {errors}")
    return Load(
        answered=report["answered"],
        rate=report["answered"] / (report["span_ns"] / 1e9),
        p50_ms=report["p50_us"] / 1000,
        p99_ms=report["p99_us"] / 1000,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=100)
    args = parser.parse_args()
    print_table(asyncio.run(latency(args.samples, args.requests, args.clients)))


if __name__ == "__main__":
    main()
