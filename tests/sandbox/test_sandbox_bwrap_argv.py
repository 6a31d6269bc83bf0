"""The bwrap command line built from a spec (no process is started here)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from sandbox import SandboxSpec, SandboxSpecError
from sandbox.bwrap import bwrap_argv


def _mount_targets(argv: list[str]) -> list[str]:
    """Mount destinations in the order bwrap will perform them."""
    targets = []
    for i, arg in enumerate(argv):
        if arg in ("--bind", "--ro-bind", "--ro-bind-try", "--symlink"):
            targets.append(argv[i + 2])
        elif arg in ("--tmpfs", "--proc", "--dev"):
            targets.append(argv[i + 1])
    return targets


def test_workspace_is_mounted_after_the_tmpfs_it_lives_under(
    make_spec: Callable[..., SandboxSpec], workspace: Path
) -> None:
    argv = bwrap_argv(make_spec(), ["true"])
    targets = _mount_targets(argv)
    assert str(workspace).startswith("/tmp/")
    assert targets.index("/tmp") < targets.index(str(workspace))
    assert argv[argv.index(str(workspace)) - 1] == "--bind"


def test_extra_binds_are_read_only_unless_asked(
    make_spec: Callable[..., SandboxSpec], tmp_path: Path
) -> None:
    tools, vault = tmp_path / "tools", tmp_path / "vault"
    tools.mkdir()
    vault.mkdir()
    argv = bwrap_argv(make_spec(ro_binds=(tools,), rw_binds=(vault,)), ["true"])
    assert argv[argv.index(str(tools)) - 1] == "--ro-bind"
    assert argv[argv.index(str(vault)) - 1] == "--bind"


def test_missing_bind_is_a_spec_error_not_a_bwrap_failure(
    make_spec: Callable[..., SandboxSpec], tmp_path: Path
) -> None:
    with pytest.raises(SandboxSpecError) as caught:
        bwrap_argv(make_spec(ro_binds=(tmp_path / "nowhere",)), ["true"])
    assert caught.value.field == "ro_binds"


def test_environment_is_cleared_then_rebuilt_from_the_spec(
    make_spec: Callable[..., SandboxSpec],
) -> None:
    argv = bwrap_argv(make_spec(env={"PATH": "/usr/bin", "HOME": "/w"}), ["env"])
    clear = argv.index("--clearenv")
    setenvs = [argv[i + 1 : i + 3] for i, arg in enumerate(argv) if arg == "--setenv"]
    assert setenvs == [["PATH", "/usr/bin"], ["HOME", "/w"]]
    assert argv.index("--setenv") > clear


def test_command_follows_the_options_after_a_double_dash(
    make_spec: Callable[..., SandboxSpec], workspace: Path
) -> None:
    argv = bwrap_argv(make_spec(), ["claude", "-p", "--", "--not-a-bwrap-option"])
    assert argv[argv.index("--chdir") + 1] == str(workspace)
    tail = argv[argv.index("--") :]
    assert tail == ["--", "claude", "-p", "--", "--not-a-bwrap-option"]


@pytest.mark.parametrize(("network", "unshared"), [("open", False), ("restricted", True)])
def test_only_restricted_network_gets_its_own_namespace(
    make_spec: Callable[..., SandboxSpec], network: str, unshared: bool
) -> None:
    argv = bwrap_argv(make_spec(network=network), ["true"])
    assert ("--unshare-net" in argv) is unshared
    for flag in ("--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent"):
        assert flag in argv
    assert argv[argv.index("--cap-drop") + 1] == "ALL"
