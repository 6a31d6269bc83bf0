"""Fixtures shared by every test: a real folder vault in a temp dir."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from vault_adapter import FolderVault

FIXTURE_VAULT = Path(__file__).resolve().parent.parent / "fixtures" / "vault"


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
