from __future__ import annotations

import os
from pathlib import Path

import pytest

from vault_adapter import FolderVault, VaultPathError, slug


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("acme-deal", "acme-deal"),
        ("Acme Deal 2026", "Acme-Deal-2026"),
        ("../../etc/passwd", "------etc-passwd"),
        ("a/b\\c", "a-b-c"),
        ("café", "caf-"),
        ("", "-"),
        ("..", "--"),
    ],
)
def test_slug_maps_everything_outside_the_safe_set_to_dashes(text: str, expected: str) -> None:
    assert slug(text) == expected


ESCAPES = [
    "../outside.md",
    "Inbox/../../outside.md",
    "/etc/passwd",
    "C:/Windows/x.md",
    "Inbox\\..\\..\\outside.md",
    "Inbox/\x00.md",
    "",
    ".",
    "link-out/secret.md",
    "file-link.md",
]


@pytest.fixture
def escaping_vault(tmp_path: Path, vault: FolderVault) -> FolderVault:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.md").write_text("---\nsecret: yes\n---\n")
    os.symlink(outside, vault.root / "link-out")
    os.symlink(outside / "secret.md", vault.root / "file-link.md")
    return vault


@pytest.mark.parametrize("path", ESCAPES)
async def test_every_operation_refuses_paths_that_escape_the_vault(
    escaping_vault: FolderVault, path: str, tmp_path: Path
) -> None:
    v = escaping_vault
    for attempt in (
        v.read(path),
        v.write(path, {"a": 1}, "x"),
        v.create(path, {"a": 1}, "x"),
        v.update_fields(path, {"a": 1}),
        v.delete(path),
        v.exists(path),
    ):
        with pytest.raises(VaultPathError):
            await attempt
    assert (tmp_path / "outside" / "secret.md").read_text() == "---\nsecret: yes\n---\n"
    assert not (tmp_path / "outside.md").exists()


async def test_symlink_inside_the_vault_is_allowed(vault: FolderVault) -> None:
    (vault.root / "real").mkdir()
    os.symlink(vault.root / "real", vault.root / "alias")
    await vault.write("alias/n.md", {"a": 1}, "x")
    assert (vault.root / "real" / "n.md").exists()


def test_a_drive_letter_behind_a_dot_is_still_absolute(vault: FolderVault) -> None:
    from vault_adapter import normalize

    for rel in ("./C:/x.md", ".//c:", "./Z:"):
        with pytest.raises(VaultPathError):
            normalize(rel)
