"""A restricted network's one way out: the egress socket, reached through the in-sandbox forwarder.

The proxy itself belongs to the gateway (tests/gateway/test_egress.py); here the socket is served
by a toy that answers whatever it is sent, which is all the sandbox promises to carry.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from sandbox import SandboxSpec, SandboxSpecError, run, start
from sandbox.bwrap import EGRESS_FORWARDER, EGRESS_SOCKET, PROXY_PORT, PROXY_URL, bwrap_argv

pytestmark = pytest.mark.usefixtures("require_bwrap")


@pytest.fixture
async def egress_socket(tmp_path: Path) -> AsyncIterator[Path]:
    """A unix socket standing in for the proxy: it answers each line with ``seen: <line>``."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            writer.write(b"seen: " + line)
            await writer.drain()
        writer.close()

    path = tmp_path / "egress.sock"
    server = await asyncio.start_unix_server(answer, path=str(path))
    async with server:
        yield path


@pytest.fixture
def host_listener() -> Iterator[int]:
    """A TCP port listening on the host's loopback (a gateway, a database...)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


PROBE = """
import os, socket, sys
proxy = os.environ["HTTPS_PROXY"].rsplit(":", 1)
with socket.create_connection((proxy[0].split("//")[1], int(proxy[1])), timeout=5) as s:
    s.sendall(b"hello proxy\\n")
    print(s.makefile("rb").readline().decode().strip())
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
    print("host loopback: connected")
except OSError as exc:
    print("host loopback: refused", exc.errno)
"""


def test_restricted_network_with_engine_none_is_refused(workspace: Path) -> None:
    with pytest.raises(SandboxSpecError) as caught:
        SandboxSpec(workspace=workspace, network="restricted", engine="none")
    assert caught.value.field == "network"
    assert "engine 'none' cannot" in caught.value.detail


def test_an_egress_socket_needs_a_restricted_network(workspace: Path) -> None:
    with pytest.raises(SandboxSpecError) as caught:
        SandboxSpec(workspace=workspace, egress_socket=workspace / "s.sock")
    assert caught.value.field == "egress_socket"


def test_the_command_runs_behind_the_forwarder_with_the_proxy_in_its_environment(
    make_spec: Callable[..., SandboxSpec], egress_socket: Path
) -> None:
    spec = make_spec(network="restricted", egress_socket=egress_socket, env={"HTTPS_PROXY": "x"})
    argv = bwrap_argv(spec, ["claude", "-p"])
    assert "--unshare-net" in argv
    assert argv[argv.index(str(egress_socket)) - 1 : argv.index(str(egress_socket)) + 2] == [
        "--ro-bind",
        str(egress_socket),
        EGRESS_SOCKET,
    ]
    assert argv[argv.index(EGRESS_FORWARDER) - 2] == "--ro-bind"
    command = argv[argv.index("--chdir") + 3 :]
    assert command == [
        "/usr/bin/python3",
        "-I",
        "-S",
        EGRESS_FORWARDER,
        EGRESS_SOCKET,
        str(PROXY_PORT),
        "--",
        "claude",
        "-p",
    ]
    setenvs = {argv[i + 1]: argv[i + 2] for i, arg in enumerate(argv) if arg == "--setenv"}
    assert setenvs["HTTPS_PROXY"] == setenvs["http_proxy"] == PROXY_URL  # the spec's is replaced
    assert setenvs["NO_PROXY"] == setenvs["no_proxy"] == ""


def test_an_egress_socket_that_is_not_a_socket_is_a_spec_error(
    make_spec: Callable[..., SandboxSpec], workspace: Path
) -> None:
    (workspace / "plain").write_text("")
    spec = make_spec(network="restricted", egress_socket=workspace / "plain")
    with pytest.raises(SandboxSpecError) as caught:
        bwrap_argv(spec, ["true"])
    assert caught.value.field == "egress_socket"


async def test_the_proxy_port_leads_to_the_egress_socket_and_host_loopback_stays_unreachable(
    make_spec: Callable[..., SandboxSpec], egress_socket: Path, host_listener: int
) -> None:
    spec = make_spec(network="restricted", egress_socket=egress_socket)
    done = await run(spec, ["/usr/bin/python3", "-c", PROBE, str(host_listener)], time_limit=20)
    assert done.returncode == 0, done.stderr_tail
    assert done.stdout.decode().splitlines() == [
        "seen: hello proxy",
        "host loopback: refused 111",
    ]


@pytest.mark.parametrize(
    "script", ["cat; echo; exit 7", "echo out; kill -TERM $$", "echo err >&2; exit 0"]
)
async def test_stdin_stdout_and_exit_status_pass_through_the_forwarder_unchanged(
    make_spec: Callable[..., SandboxSpec], egress_socket: Path, script: str
) -> None:
    plain = await run(
        make_spec(network="restricted"), ["sh", "-c", script], stdin=b"in", time_limit=20
    )
    behind = await run(
        make_spec(network="restricted", egress_socket=egress_socket),
        ["sh", "-c", script],
        stdin=b"in",
        time_limit=20,
    )
    assert (behind.returncode, behind.stdout) == (plain.returncode, plain.stdout)
    assert behind.stderr_tail == plain.stderr_tail


async def test_output_to_a_file_is_followed_as_without_the_forwarder(
    make_spec: Callable[..., SandboxSpec], egress_socket: Path, tmp_path: Path
) -> None:
    transcript = tmp_path / "transcript.jsonl"
    spec = make_spec(network="restricted", egress_socket=egress_socket)
    async with await start(
        spec,
        ["sh", "-c", 'read line; echo "$line"; echo two'],
        stdin=b"one\n",
        stdout_file=transcript,
    ) as proc:
        lines = [line async for line in proc.lines()]
        assert await proc.wait(20) == 0
    assert lines == [b"one\n", b"two\n"]


async def test_kill_gives_the_command_its_grace_and_then_nothing_is_left(
    make_spec: Callable[..., SandboxSpec], egress_socket: Path, workspace: Path
) -> None:
    marker = uuid.uuid4().hex
    child = f'/usr/bin/python3 -c "import time; time.sleep(1000)  # {marker}"'
    script = (
        f"trap 'echo cleaned > cleanup.txt; exit 3' TERM; {child} & echo ready; "
        "while :; do sleep 0.05; done"
    )
    spec = make_spec(network="restricted", egress_socket=egress_socket)
    async with await start(spec, ["sh", "-c", script]) as proc:
        async with asyncio.timeout(20):
            assert await proc.stdout.readline() == b"ready\n"  # type: ignore[union-attr]
        running = _mentioning(marker)  # bwrap, the forwarder, sh, the child...
        assert running
        returncode = await proc.kill(grace=5.0)
    # The forwarder passed SIGTERM on and waited: the trap ran and its status came back.
    assert (workspace / "cleanup.txt").read_text() == "cleaned\n"
    assert returncode == 3
    for pid in running:
        await _gone(pid)
    assert _mentioning(marker) == []


async def _gone(pid: int) -> None:
    """Wait (5 s at most) until process ``pid`` has terminated: a pidfd is readable once it has."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    terminated = loop.create_future()
    loop.add_reader(pidfd, terminated.set_result, None)
    try:
        async with asyncio.timeout(5):
            await terminated
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)


def _mentioning(marker: str) -> list[int]:
    """Live processes whose command line holds ``marker`` (the forwarder's does too)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as fh:
                cmdline = fh.read()
            with open(f"/proc/{entry.name}/stat") as fh:
                state = fh.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if marker.encode() in cmdline and state != "Z":
            found.append(int(entry.name))
    return found
