"""Fixtures for gateway tests: a harness around a real vault, registry and gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.backends import ScriptedBackend
from gateway.settings import Settings
from tests.helpers.harness import Harness


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    root = tmp_path / "vault"
    root.mkdir()
    # The inbox exists before the gateway starts, as in a real vault: notes
    # dropped into a folder the watcher has not seen yet arrive in no set order.
    (root / "Inbox").mkdir()
    settings = Settings(quiet_window_s=0.05, agent_wait_s=0.5, fsync=False, port=0)
    h = Harness(root=root, settings=settings, backend=ScriptedBackend())
    yield h
    await h.stop()
