from __future__ import annotations

from datetime import UTC, datetime

from tests.helpers.harness import FakeClock, Harness, definition

START = datetime(2026, 1, 5, 10, 0, 30, tzinfo=UTC)


def job(
    agent: str = "helper", cron: str = "* * * * *", subject: str = "brief", extra: str = ""
) -> str:
    return (
        f"---\ntags: [agent/job]\nagent: {agent}\ncron: '{cron}'\ntz: UTC\nsubject: {subject}\n"
        f"{extra}---\nWrite the daily brief.\n"
    )


async def test_a_minutely_job_fires_each_minute_and_its_thread_continues(
    harness: Harness,
) -> None:
    harness.clock = clock = FakeClock(START)
    harness.write("Agents/helper.md", definition("helper"))
    harness.write("Jobs/daily.md", job())
    await harness.start()
    assert harness.note("Jobs/daily.md").frontmatter["next_run_at"] == "2026-01-05T10:01:00Z"
    clock.advance(30)
    [first] = await harness.done(1)
    clock.advance(60)
    [_, second] = await harness.done(2)
    assert first["thread"] == second["thread"] == "helper:helper--brief"
    calls = harness.backend.calls
    assert [c.request.resume for c in calls] == [False, True]
    assert all("fired-by=runner:daily" in c.request.message for c in calls)
    thread = harness.note("Threads/helper/helper--brief.md").frontmatter
    assert thread["turn_count"] == 2
    await harness.wait_event(lambda e: e["type"] == "turn.done" and e is second)
    fm = harness.note("Jobs/daily.md").frontmatter
    assert fm["last_run_at"] == "2026-01-05T10:02:00Z"
    assert fm["next_run_at"] == "2026-01-05T10:03:00Z"
    assert harness.gateway is not None and harness.gateway.jobs is not None
    [described] = await harness.gateway.jobs.describe()
    assert described["last_message"] == second["turn"]


async def test_a_slot_missed_over_a_restart_fires_exactly_once(harness: Harness) -> None:
    harness.clock = clock = FakeClock(START)
    harness.write("Agents/helper.md", definition("helper"))
    harness.write("Jobs/daily.md", job())
    await harness.start()
    clock.advance(30)
    await harness.done(1)
    await harness.stop()
    clock.advance(5 * 60 + 20)  # five slots pass while the gateway is down
    await harness.start()
    await harness.done(2)
    assert harness.gateway is not None and harness.gateway.jobs is not None
    [described] = await harness.gateway.jobs.describe()
    assert described["next_run_at"] == "2026-01-05T10:07:00Z"
    assert described["last_run_at"] == "2026-01-05T10:06:20Z"
    assert len(harness.backend.calls) == 2


async def test_broken_jobs_show_their_error_and_the_others_still_fire(
    harness: Harness,
) -> None:
    harness.clock = clock = FakeClock(START)
    harness.write("Agents/helper.md", definition("helper"))
    harness.write("Jobs/good.md", job())
    harness.write("Jobs/badcron.md", job(cron="61 * * * *"))
    harness.write("Jobs/noagent.md", job(agent="ghost"))
    harness.write("Jobs/badtz.md", job(extra="tz: Mars/Olympus\n").replace("tz: UTC\n", ""))
    await harness.start()
    assert "not a 5-field cron" in harness.note("Jobs/badcron.md").frontmatter["error"]
    assert harness.note("Jobs/noagent.md").frontmatter["error"] == "no agent named 'ghost'"
    assert "unknown time zone" in harness.note("Jobs/badtz.md").frontmatter["error"]
    clock.advance(30)
    [done] = await harness.done(1)
    assert done["status"] == "done"
    assert len(harness.backend.calls) == 1  # the ghost's job fired nothing


async def test_editing_a_job_takes_effect_without_a_restart(harness: Harness) -> None:
    harness.clock = FakeClock(START)
    harness.write("Agents/helper.md", definition("helper"))
    harness.write("Jobs/daily.md", job(cron="0 9 * * *"))
    await harness.start()
    assert harness.note("Jobs/daily.md").frontmatter["next_run_at"] == "2026-01-06T09:00:00Z"
    path = harness.root / "Jobs/daily.md"
    path.write_text(path.read_text().replace("cron: '0 9 * * *'", "cron: '30 10 * * *'"))
    await harness.wait_for_file(
        "Jobs/daily.md", lambda fm: fm.get("next_run_at") == "2026-01-05T10:30:00Z"
    )
