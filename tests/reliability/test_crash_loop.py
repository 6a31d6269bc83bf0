"""A real ``vaultgate serve`` SIGKILLed at random moments while 500 messages arrive.

Half the messages are notes dropped into ``Inbox/`` (saved the way editors and
sync tools save: a hidden temp file renamed into place), half are posted to
``POST /api/messages`` with the bearer token; they spread over 20 subjects of
one multi-threaded agent on the ``scripted`` backend, which takes a few
milliseconds per turn. The gateway is SIGKILLed at five seeded random moments
(the seed is printed; ``VAULTGATE_RELIABILITY_SEED`` replays the schedule,
though not the exact interleaving) and started again each time. Afterwards:
one inbound note per message, each stamped done, exactly one reply note per
message, each thread's counters equal to the sums over its turns in the
registry, and registry and vault agree on every turn.

**Posting across a kill.** A ``202`` means the message's note is on disk
(SPEC 7), so the client is done. A connection error (refused, reset, the
server gone mid-answer, a timeout) means the message *may or may not* be
durable: the kill may have landed before the note was written, or after it
was written but before the answer left. Posting again blindly could send it
twice; giving up could lose it. The API has no idempotency key, so the client
here makes each message recognisable by its own unique ``text`` and, after a
connection error, first waits until the server it was talking to is certainly
dead (the next generation is serving: the killed process was reaped, so no
write of it can still land), then looks in the vault for an inbound note
whose body is that text. Found: the message was durable and is not sent
again. Not found: it was not, and is posted again. A connection error while no
kill happened would make this check racy, so it fails the test. The audit
at the end counts inbound notes per text: zero is a lost message, two a
duplicated one.

``VAULTGATE_RELIABILITY_SCALE=N`` sends N times the messages with N times the
kills (CI runs N=1).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from tests.helpers.harness import definition, message
from tests.helpers.serve import Serve
from tests.reliability.support import (
    audit,
    read_notes,
    registry_rows,
    scale,
    seed,
    summary,
    write_atomically,
)

MESSAGES = 500 * scale()
SUBJECTS = 20
KILLS = 5 * scale()
POSTERS = 4
USAGE = {"input_tokens": 7, "output_tokens": 3, "cost_usd": 0.0013}
AGENT = definition(
    "crash",
    extra=(
        f"script: {{delay_s: 0.03, usage: {{input_tokens: {USAGE['input_tokens']}, "
        f"output_tokens: {USAGE['output_tokens']}, cost_usd: {USAGE['cost_usd']}}}}}\n"
    ),
)
TIMEOUT = aiohttp.ClientTimeout(total=30)


def note_text(i: int) -> str:
    return f"crash-loop note message {i:05d}"


def post_text(i: int) -> str:
    return f"crash-loop http message {i:05d}"


@dataclass
class Endpoint:
    """The gateway currently serving, and which incarnation it is."""

    serve: Serve
    url: str = ""
    token: str = ""
    generation: int = 0
    up: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def start(self) -> None:
        await self.serve.start()
        self.url, self.token = self.serve.url, self.serve.token
        async with self.changed:
            self.generation += 1
            self.changed.notify_all()
        self.up.set()

    async def kill(self) -> None:
        self.up.clear()
        await self.serve.kill()

    async def past(self, generation: int, timeout: float) -> None:
        """Wait until a later incarnation than ``generation`` serves."""
        async with self.changed:
            await asyncio.wait_for(
                self.changed.wait_for(lambda: self.generation > generation), timeout
            )


@dataclass
class Stats:
    sent: int = 0
    accepted: int = 0
    ambiguous: int = 0
    durable_anyway: int = 0
    reposted: int = 0
    in_flight: int = 0
    posting: asyncio.Event = field(default_factory=asyncio.Event)
    progress: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def one_more(self) -> None:
        async with self.progress:
            self.sent += 1
            self.progress.notify_all()

    async def reached(self, count: int) -> None:
        async with self.progress:
            await self.progress.wait_for(lambda: self.sent >= count)


def posted_note_exists(root: Path, text: str) -> bool:
    return any(n.body.strip() == text for n in read_notes(root, "Inbox/http").values())


async def post_once(
    session: aiohttp.ClientSession, url: str, token: str, body: dict[str, str], stats: Stats
) -> tuple[int, dict[str, str]] | None:
    """One POST: its status and answer, or None when the connection failed."""
    stats.in_flight += 1
    stats.posting.set()
    try:
        async with session.post(
            f"{url}/api/messages",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=TIMEOUT,
        ) as response:
            return response.status, await response.json()
    except (aiohttp.ClientError, TimeoutError):
        return None
    finally:
        stats.in_flight -= 1
        if not stats.in_flight:
            stats.posting.clear()


async def post_durably(
    session: aiohttp.ClientSession, endpoint: Endpoint, root: Path, i: int, stats: Stats
) -> None:
    body = {"agent": "crash", "text": post_text(i), "subject": f"subject-{i % SUBJECTS}"}
    for _attempt in range(KILLS + 2):
        await asyncio.wait_for(endpoint.up.wait(), 60)
        generation = endpoint.generation
        answered = await post_once(session, endpoint.url, endpoint.token, body, stats)
        if answered is None:
            # Durable or not? Only the vault knows, once the process that may
            # still be writing it is certainly gone.
            stats.ambiguous += 1
            try:
                await endpoint.past(generation, timeout=60)
            except TimeoutError:
                raise AssertionError(f"POST {i} failed with no kill behind it") from None
            if posted_note_exists(root, body["text"]):
                stats.durable_anyway += 1
                return
            stats.reposted += 1
            continue
        status, answer = answered
        assert status == 202, f"POST {i}: {status} {answer}"
        stats.accepted += 1
        return
    raise AssertionError(f"POST {i}: no 202 after {KILLS + 2} attempts")


async def test_sigkill_loop_keeps_exactly_one_reply_per_message(tmp_path: Path) -> None:
    run_seed = seed()
    rng = random.Random(run_seed)
    print(f"crash loop seed {run_seed} ({MESSAGES} messages, {KILLS} kills)")
    root = tmp_path / "vault"
    (root / "Inbox").mkdir(parents=True)
    (root / "Agents").mkdir()
    (root / "Agents" / "crash.md").write_text(AGENT)
    kill_points = sorted(rng.sample(range(MESSAGES // 20, MESSAGES), KILLS))
    kill_delays = [rng.uniform(0, 0.05) for _ in kill_points]
    print(f"kills after {kill_points} messages sent")

    endpoint = Endpoint(Serve(root, env={"VAULTGATE_MAX_CONCURRENT_TURNS": "4"}))
    stats = Stats()
    started = time.monotonic()
    await endpoint.start()

    async def drop_notes() -> None:
        for i in range(0, MESSAGES, 2):
            text = message("crash", note_text(i), subject=f"subject-{i % SUBJECTS}")
            write_atomically(root / "Inbox" / f"n{i:05d}.md", text)
            await stats.one_more()
            await asyncio.sleep(0.02)  # the scenario: notes arriving over time

    async def post_all(session: aiohttp.ClientSession, worker: int) -> None:
        for i in range(1 + 2 * worker, MESSAGES, 2 * POSTERS):
            await post_durably(session, endpoint, root, i, stats)
            await stats.one_more()
            await asyncio.sleep(0.02 * POSTERS)  # the scenario: posts arriving over time

    async def kill_loop() -> None:
        for n, (point, delay) in enumerate(zip(kill_points, kill_delays, strict=True)):
            await asyncio.wait_for(stats.reached(point), 300)
            if n % 2:
                # Every other kill aims at a POST on its way: the answer may be lost
                # before or after its note was written.
                await asyncio.wait_for(stats.posting.wait(), 60)
                delay /= 10
            await asyncio.sleep(delay)  # the scenario: the kill lands at a random moment
            await endpoint.kill()
            await endpoint.start()

    async with aiohttp.ClientSession() as session:
        await asyncio.wait_for(
            asyncio.gather(
                drop_notes(),
                kill_loop(),
                *(post_all(session, w) for w in range(POSTERS)),
            ),
            600,
        )
    sending_s = time.monotonic() - started

    deadline = time.monotonic() + 180
    while True:
        inbound = read_notes(root, "Inbox")
        pending = [p for p, n in inbound.items() if n.get("status") != "done"]
        if len(inbound) >= MESSAGES and not pending:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"seed {run_seed}: not done: {sorted(pending)[:10]}")
        await asyncio.sleep(0.2)  # polling notes another process writes
    assert await endpoint.serve.terminate() == 0, "\n".join(endpoint.serve.log[-20:])

    result = audit(root)
    texts = Counter(n.body.strip() for n in result.inbound.values())
    expected = [note_text(i) if i % 2 == 0 else post_text(i) for i in range(MESSAGES)]
    lost = [t for t in expected if texts[t] == 0]
    duplicated = sum(n - 1 for n in texts.values() if n > 1)
    interrupted = registry_rows(root, "SELECT COUNT(*) AS n FROM events WHERE kind='interrupted'")
    summary(
        "crash_loop",
        seed=run_seed,
        messages_sent=MESSAGES,
        lost=len(lost),
        duplicated=duplicated,
        duplicate_replies=result.duplicated_replies,
        kills=KILLS,
        posts_ambiguous=stats.ambiguous,
        posts_durable_anyway=stats.durable_anyway,
        posts_resent=stats.reposted,
        turns_interrupted=interrupted[0]["n"],
        seconds=round(time.monotonic() - started, 1),
        sending_seconds=round(sending_s, 1),
    )
    assert not lost, f"seed {run_seed}: lost {lost[:10]}"
    assert duplicated == 0, f"seed {run_seed}: {texts.most_common(3)}"
    assert len(result.inbound) == MESSAGES
    assert len(result.replies) == MESSAGES, f"seed {run_seed}: {len(result.replies)} replies"
    assert result.duplicated_replies == 0
    assert len(result.turns) == MESSAGES
    assert len(result.threads) == SUBJECTS
    assert not result.problems, f"seed {run_seed}:\n" + "\n".join(result.problems[:30])
    totals = registry_rows(
        root,
        "SELECT SUM(turn_count) AS n, SUM(input_tokens) AS i, SUM(output_tokens) AS o,"
        " SUM(cost_usd) AS c FROM threads",
    )[0]
    assert (totals["n"], totals["i"], totals["o"]) == (
        MESSAGES,
        MESSAGES * USAGE["input_tokens"],
        MESSAGES * USAGE["output_tokens"],
    )
    assert abs(totals["c"] - MESSAGES * USAGE["cost_usd"]) < 1e-6
