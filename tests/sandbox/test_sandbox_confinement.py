"""What a command run in the real bubblewrap sandbox can and cannot see and do."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sandbox import SandboxSpec, run

pytestmark = pytest.mark.usefixtures("require_bwrap")


async def sh(spec: SandboxSpec, script: str) -> tuple[int, str]:
    done = await run(spec, ["sh", "-c", script], time_limit=10)
    return done.returncode, done.stdout.decode() + done.stderr_tail


async def test_command_writes_inside_the_workspace(
    make_spec: Callable[..., SandboxSpec], workspace: Path
) -> None:
    code, output = await sh(make_spec(), "mkdir -p a/b && echo made > a/b/file")
    assert code == 0, output
    assert (workspace / "a/b/file").read_text() == "made\n"


async def test_host_directory_outside_the_workspace_is_invisible(
    make_spec: Callable[..., SandboxSpec], outside: Path
) -> None:
    code, output = await sh(make_spec(), f"ls {outside.parent}; cat {outside}/secret.txt")
    assert code != 0
    assert "host secret" not in output
    # The workspace's parent exists only as the path to the workspace: its siblings are absent.
    assert output.splitlines()[0] == "workspace"
    assert "No such file or directory" in output


async def test_root_home_is_invisible(make_spec: Callable[..., SandboxSpec]) -> None:
    planted = Path("/root") / f".vaultgate-sandbox-test-{id(make_spec)}"
    planted.write_text("root secret\n")
    try:
        code, output = await sh(make_spec(), f"cat {planted}")
    finally:
        planted.unlink()
    assert "root secret" not in output
    assert code != 0


async def test_system_dirs_and_extra_binds_are_read_only(
    make_spec: Callable[..., SandboxSpec], outside: Path
) -> None:
    spec = make_spec(ro_binds=(outside,))
    code, output = await sh(spec, f"cat {outside}/secret.txt && touch {outside}/new")
    assert "host secret" in output
    assert code != 0
    assert not (outside / "new").exists()
    for target in ("/usr/vaultgate-test", "/etc/vaultgate-test", "/vaultgate-test"):
        code, output = await sh(spec, f"touch {target}")
        assert code != 0, output
        assert "Read-only file system" in output


async def test_environment_is_only_what_the_spec_gives(
    make_spec: Callable[..., SandboxSpec], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAULTGATE_TEST_SECRET", "do-not-leak")
    code, output = await sh(make_spec(env={"PATH": "/usr/bin:/bin", "GIVEN": "yes"}), "env")
    assert code == 0
    names = {line.split("=", 1)[0] for line in output.splitlines()}
    assert names <= {"PATH", "GIVEN", "PWD", "SHLVL", "_"}
    assert "GIVEN=yes" in output
    assert "do-not-leak" not in output


async def test_command_sees_only_its_own_processes(make_spec: Callable[..., SandboxSpec]) -> None:
    code, output = await sh(make_spec(), "ps -e -o pid=,comm=")
    assert code == 0
    # bwrap's init as pid 1, then sh and ps: the host's processes are not there.
    assert [line.split()[1] for line in output.splitlines()] == ["bwrap", "sh", "ps"]


async def test_command_holds_no_capabilities_even_as_root(
    make_spec: Callable[..., SandboxSpec],
) -> None:
    code, output = await sh(make_spec(), "grep CapEff /proc/self/status")
    assert code == 0
    assert output.split()[1] == "0000000000000000"


@pytest.fixture
def host_listener() -> Iterator[int]:
    """A TCP port listening on the host's loopback."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


CONNECT = (
    "import socket,sys\n"
    "try:\n"
    "    socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5)\n"
    "    print('connected')\n"
    "except OSError as exc:\n"
    "    print('refused', exc)\n"
)


@pytest.mark.parametrize(
    ("network", "expected"), [("open", "connected"), ("restricted", "refused")]
)
async def test_restricted_network_cannot_reach_host_loopback(
    make_spec: Callable[..., SandboxSpec], host_listener: int, network: str, expected: str
) -> None:
    done = await asyncio.wait_for(
        run(
            make_spec(network=network),
            ["/usr/bin/python3", "-c", CONNECT, str(host_listener)],
            time_limit=10,
        ),
        timeout=15,
    )
    assert done.stdout.decode().startswith(expected), done.stderr_tail
