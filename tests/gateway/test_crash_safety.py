"""A real ``vaultgate serve`` process, SIGKILLed at random moments while messages arrive.

Whatever moment the kill lands on (mid-scan, mid-turn, between the registry
commit and the note writes, halfway through stamping), after the restarts
every message has exactly one reply, every inbound note is stamped done, and
the threads' turn counts add up to the number of messages.
"""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import time
from pathlib import Path

from tests.helpers.harness import definition, message
from tests.helpers.serve import Serve
from vault_adapter import parse_note

MESSAGES = 200
SUBJECTS = 10
KILLS = 5


def inbound_statuses(root: Path) -> dict[str, str | None]:
    out = {}
    for path in (root / "Inbox").glob("*.md"):
        note = parse_note(path.name, path.read_bytes(), 0.0)
        out[path.name] = note.frontmatter.get("status")
    return out


async def test_sigkill_at_random_moments_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    seed = int(os.environ.get("VAULTGATE_CRASH_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    root = tmp_path / "vault"
    (root / "Inbox").mkdir(parents=True)
    (root / "Agents").mkdir()
    (root / "Agents" / "crash.md").write_text(
        definition("crash", extra="script: {delay_s: 0.01}\n")
    )
    kill_after = sorted(rng.sample(range(10, MESSAGES + 40), KILLS))
    serve = Serve(root, env={"VAULTGATE_MAX_CONCURRENT_TURNS": "4"})
    await serve.start()
    restarts = 0
    for i in range(MESSAGES + 40):
        if i < MESSAGES:
            text = message("crash", f"message {i}", subject=f"subject-{i % SUBJECTS}")
            (root / "Inbox" / f"m{i:03d}.md").write_text(text)
        if i in kill_after:
            await asyncio.sleep(rng.uniform(0, 0.05))  # the scenario: a kill at a random moment
            await serve.kill()
            restarts += 1
            await serve.start()
        await asyncio.sleep(0.02)  # the scenario: messages arriving over time

    deadline = time.monotonic() + 120
    while True:
        statuses = inbound_statuses(root)
        if len(statuses) == MESSAGES and all(s == "done" for s in statuses.values()):
            break
        if time.monotonic() > deadline:
            pending = {k: v for k, v in statuses.items() if v != "done"}
            raise AssertionError(f"seed {seed}: not done: {sorted(pending.items())[:10]}")
        await asyncio.sleep(0.1)
    assert await serve.terminate() == 0, "\n".join(serve.log[-20:])
    assert restarts == KILLS

    replies = [parse_note("r", p.read_bytes(), 0.0) for p in (root / "Messages").rglob("*.md")]
    assert len(replies) == MESSAGES, f"seed {seed}: {len(replies)} replies"
    answered = {r.frontmatter["in_reply_to"] for r in replies}
    assert len(answered) == MESSAGES, f"seed {seed}: some message got two replies"
    for path in (root / "Inbox").glob("*.md"):
        fm = parse_note(path.name, path.read_bytes(), 0.0).frontmatter
        assert (root / (fm["reply"][2:-2] + ".md")).exists()

    threads = [parse_note("t", p.read_bytes(), 0.0) for p in (root / "Threads").rglob("*.md")]
    assert len(threads) == SUBJECTS
    assert sum(t.frontmatter["turn_count"] for t in threads) == MESSAGES
    for thread in threads:
        assert thread.body.count("<!-- vaultgate:turn ") == thread.frontmatter["turn_count"]

    db = sqlite3.connect(root / ".vaultgate" / "registry.db")
    rows = db.execute("SELECT status, finalized, COUNT(*) FROM turns GROUP BY 1, 2").fetchall()
    interrupted = db.execute("SELECT COUNT(*) FROM events WHERE kind = 'interrupted'").fetchone()
    db.close()
    print(f"seed {seed}: {interrupted[0]} turns interrupted by the kills and resumed")
    assert rows == [("done", 1, MESSAGES)], f"seed {seed}: {rows}"
