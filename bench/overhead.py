"""Gateway overhead against the bare CLI: the same claude turn, with and without vaultgate.

    python bench/overhead.py [--turns 20]

Both sides use the real claude CLI and the fake Anthropic API on 127.0.0.1.
Through the gateway: ``POST /api/messages`` with ``wait`` (note written,
routed, sandboxed in bwrap, reply and thread notes written). Bare: the same
``claude -p`` argv run directly. The two alternate, turn by turn. The figure
is the ratio of the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
from common import ROOT, Result, print_table, start_gateway, write_agent
from latency import TOKEN, _serve

from gateway.backends import ClaudeBackend
from gateway.settings import Settings
from tests.fakes.fake_anthropic import FakeAnthropic


def claude_bin() -> Path:
    return Path(
        os.environ.get("VAULTGATE_CLAUDE_BIN")
        or ROOT / ".tools" / "node_modules" / ".bin" / "claude"
    ).resolve()


async def overhead(turns: int) -> Result:
    binary = claude_bin()
    async with FakeAnthropic(default_text="ok") as api:
        env = {
            "PATH": os.environ["PATH"],
            "ANTHROPIC_API_KEY": "bench",
            "ANTHROPIC_BASE_URL": api.url,
        }
        with tempfile.TemporaryDirectory(prefix="vg-bench-") as tmp:
            root = Path(tmp) / "vault"
            write_agent(root, "claude", backend="claude", extra="tools: [Bash]\n")
            settings = Settings(claude_bin=str(binary))
            gateway, _ = await start_gateway(
                root,
                claude_bin=str(binary),
                extra_backends={"claude": ClaudeBackend(settings, env=env)},
            )
            runner, url = await _serve(gateway)
            home = Path(tmp) / "bare"
            (home / "work").mkdir(parents=True)
            (home / "system-prompt.txt").write_text("You are the benchmark agent.\n")
            session_id = str(uuid.uuid4())

            async def bare_turn(i: int) -> float:
                argv = [
                    str(binary),
                    "-p",
                    "--output-format",
                    "stream-json",
                    "--verbose",
                    "--system-prompt-file",
                    str(home / "system-prompt.txt"),
                    "--mcp-config",
                    '{"mcpServers": {}}',
                    "--strict-mcp-config",
                    "--tools",
                    "Bash",
                    "--max-turns",
                    "20",
                    "--max-budget-usd",
                    "1",
                    "--resume" if i else "--session-id",
                    session_id,
                ]
                t0 = time.perf_counter()
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                    cwd=home / "work",
                    env={
                        **env,
                        "HOME": str(home),
                        "IS_SANDBOX": "1",
                        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
                    },
                )
                await proc.communicate(f"ping {i}".encode())
                return time.perf_counter() - t0

            through: list[float] = []
            bare: list[float] = []
            try:
                async with aiohttp.ClientSession() as session:
                    # Interleaved, so drift on the machine weighs on both sides alike.
                    for i in range(turns):
                        t0 = time.perf_counter()
                        async with session.post(
                            f"{url}/api/messages",
                            headers={"Authorization": f"Bearer {TOKEN}"},
                            json={
                                "agent": "claude",
                                "text": f"ping {i}",
                                "subject": "o",
                                "wait": True,
                                "timeout_s": 120,
                            },
                        ) as r:
                            body = await r.json()
                            assert r.status == 200 and body["status"] == "done", body
                        through.append(time.perf_counter() - t0)
                        bare.append(await bare_turn(i))
            finally:
                await runner.cleanup()
                await gateway.stop()
    ratio = statistics.median(through) / statistics.median(bare)
    return Result(
        "overhead vs bare CLI (median ratio)",
        ratio,
        "x",
        "<= 1.15",
        ratio <= 1.15,
        {
            "gateway_median_s": statistics.median(through),
            "bare_median_s": statistics.median(bare),
            "turns": turns,
        },
        floor=f"bare claude -p: {statistics.median(bare):.2f} s/turn",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=20)
    args = parser.parse_args()
    print_table([asyncio.run(overhead(args.turns))])


if __name__ == "__main__":
    main()
