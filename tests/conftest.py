"""Fixtures shared by every test: a real folder vault in a temp dir."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from vault_adapter import FolderVault

REPO = Path(__file__).resolve().parent.parent
FIXTURE_VAULT = REPO / "fixtures" / "vault"
DEFAULT_CLAUDE = REPO / ".tools" / "node_modules" / ".bin" / "claude"


@pytest.fixture
def vault_dir(tmp_path: Path) -> Path:
    root = tmp_path / "vault"
    root.mkdir()
    return root


@pytest.fixture
def vault(vault_dir: Path) -> FolderVault:
    return FolderVault(vault_dir, quiet_window_s=0.2, index_fields=("status", "agent"))


@pytest.fixture
def example_vault(tmp_path: Path) -> Path:
    """A private copy of fixtures/vault."""
    root = tmp_path / "example"
    shutil.copytree(FIXTURE_VAULT, root)
    return root


@pytest.fixture
def claude() -> Path:
    """The real claude CLI (``make test`` installs it); missing, it fails in CI, skips elsewhere."""
    path = Path(os.environ.get("VAULTGATE_CLAUDE_BIN") or DEFAULT_CLAUDE)
    if not (path.is_file() and os.access(path, os.X_OK)):
        message = (
            f"claude CLI not found at {path}: run 'make test', which installs "
            "@anthropic-ai/claude-code into .tools/, or set VAULTGATE_CLAUDE_BIN"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path.resolve()
