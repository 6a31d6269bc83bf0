"""SandboxSpec validation and the environment allowlist helper."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox import SandboxSpec, SandboxSpecError, env_from_allowlist


def test_cwd_defaults_to_the_workspace(workspace: Path) -> None:
    assert SandboxSpec(workspace=workspace).workdir == workspace


def test_relative_cwd_is_taken_from_the_workspace(workspace: Path) -> None:
    assert SandboxSpec(workspace=workspace, cwd=Path("sub/dir")).workdir == workspace / "sub/dir"


@pytest.mark.parametrize("cwd", ["..", "../outside", "/etc", "sub/../../x"])
def test_cwd_outside_the_workspace_is_refused(workspace: Path, cwd: str) -> None:
    with pytest.raises(SandboxSpecError) as caught:
        SandboxSpec(workspace=workspace, cwd=Path(cwd))
    assert caught.value.field == "cwd"


def test_relative_workspace_is_refused() -> None:
    with pytest.raises(SandboxSpecError) as caught:
        SandboxSpec(workspace=Path("relative/ws"))
    assert caught.value.field == "workspace"


@pytest.mark.parametrize("name", ["", "A=B", "NUL\0"])
def test_impossible_env_names_are_refused(workspace: Path, name: str) -> None:
    with pytest.raises(SandboxSpecError):
        SandboxSpec(workspace=workspace, env={name: "x"})


def test_spec_env_cannot_be_changed_after_construction(workspace: Path) -> None:
    env = {"PATH": "/usr/bin"}
    spec = SandboxSpec(workspace=workspace, env=env)
    env["LEAK"] = "1"
    assert dict(spec.env) == {"PATH": "/usr/bin"}


def test_env_from_allowlist_keeps_only_named_variables_and_extra_wins() -> None:
    source = {"PATH": "/usr/bin", "LANG": "C.UTF-8", "AWS_SECRET": "s3cr3t", "HOME": "/root"}
    env = env_from_allowlist(
        ["PATH", "LANG", "HOME", "MISSING"], source=source, extra={"HOME": "/w"}
    )
    assert env == {"PATH": "/usr/bin", "LANG": "C.UTF-8", "HOME": "/w"}


def test_processes_are_limited_by_default(workspace: Path) -> None:
    assert SandboxSpec(workspace=workspace).max_processes == 512
    assert SandboxSpec(workspace=workspace, max_processes=None).max_processes is None


@pytest.mark.parametrize("limit", [0, -5, True, 2.5, "64"])
def test_a_process_limit_that_is_not_a_positive_whole_number_is_refused(
    workspace: Path, limit: object
) -> None:
    with pytest.raises(SandboxSpecError) as caught:
        SandboxSpec(workspace=workspace, max_processes=limit)  # type: ignore[arg-type]
    assert caught.value.field == "max_processes"
