"""Preflight: does bwrap work here, and if not, a message a person can act on."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from sandbox import Network, PreflightResult, SandboxUnavailable, preflight

pytestmark = pytest.mark.usefixtures("require_bwrap")


def fake_bwrap(directory: Path, stderr: str) -> str:
    """A PATH holding only a ``bwrap`` that refuses the way a locked-down kernel makes it."""
    script = directory / "bwrap"
    script.write_text(f"#!/bin/sh\necho '{stderr}' >&2\nexit 1\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(directory)


@pytest.mark.parametrize("network", ["open", "restricted"])
async def test_bwrap_works_here(network: Network) -> None:
    result = await preflight("bwrap", network=network)
    assert result.ok, result
    result.raise_if_unavailable()


async def test_missing_bwrap_is_reported_with_the_install_command(tmp_path: Path) -> None:
    result = await preflight("bwrap", search_path=str(tmp_path))
    assert result == PreflightResult(
        "bwrap",
        ok=False,
        detail="bwrap is not installed (not found on PATH)",
        fix="apt-get install -y bubblewrap (Debian/Ubuntu) or dnf install -y bubblewrap (Fedora)",
    )
    with pytest.raises(SandboxUnavailable) as caught:
        result.raise_if_unavailable()
    assert caught.value.engine == "bwrap"
    assert "apt-get install -y bubblewrap" in caught.value.fix


async def test_disabled_user_namespaces_are_named_with_the_sysctl(tmp_path: Path) -> None:
    refusal = (
        "bwrap: No permissions to creating new namespace, likely because the kernel does not "
        "allow non-privileged user namespaces. On e.g. debian this can be enabled with "
        "sysctl kernel.unprivileged_userns_clone=1."
    )
    result = await preflight("bwrap", search_path=fake_bwrap(tmp_path, refusal))
    assert not result.ok
    assert result.detail.startswith("user namespaces are disabled")
    assert result.fix == "sysctl -w kernel.unprivileged_userns_clone=1"


async def test_namespace_refused_by_the_container_says_so(tmp_path: Path) -> None:
    refusal = "bwrap: Creating new namespace failed: Operation not permitted"
    result = await preflight("bwrap", search_path=fake_bwrap(tmp_path, refusal))
    assert not result.ok
    assert "not permitted" in result.detail
    assert result.fix is not None and "engine 'none'" in result.fix


async def test_engine_none_always_passes() -> None:
    assert (await preflight("none")).ok
