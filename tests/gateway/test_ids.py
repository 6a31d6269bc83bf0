"""Message ids and timestamps: their formats, and ids that never repeat."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta

import pytest

from gateway.inbound import new_message_id
from gateway.registry.store import now_iso


def test_message_ids_are_sortable_readable_and_unique() -> None:
    ids = [new_message_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{12}", i) for i in ids)
    now = datetime.now(UTC)
    assert ids[0][:15] in {f"{now - timedelta(seconds=s):%Y%m%d-%H%M%S}" for s in range(3)}
    given = new_message_id(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert given.startswith("20260102-030405-")


def test_now_iso_is_utc_to_the_millisecond_and_close_to_the_clock() -> None:
    stamp = now_iso()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp)
    parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert abs((datetime.now(UTC) - parsed).total_seconds()) < 2


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_makes_other_ids_than_its_parent() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        os.close(read)
        os.write(write, " ".join(new_message_id() for _ in range(5)).encode())
        os._exit(0)
    os.close(write)
    mine = {new_message_id() for _ in range(5)}
    with os.fdopen(read, "rb") as pipe:
        theirs = set(pipe.read().decode().split())
    os.waitpid(pid, 0)
    assert len(theirs) == 5 and not mine & theirs
    assert {i.rsplit("-", 1)[1] for i in mine}.isdisjoint(i.rsplit("-", 1)[1] for i in theirs)
