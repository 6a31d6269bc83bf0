"""The process limit: a fork bomb inside a real sandbox hits ``pids.max`` and is cleaned up."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from sandbox import SandboxedProcess, SandboxSpec, preflight, start
from sandbox.pids import PidsController, candidates

pytestmark = [pytest.mark.usefixtures("require_bwrap"), pytest.mark.timeout(60)]

REPO = Path(__file__).resolve().parents[2]
FORK_UNTIL_REFUSED = """
import os
n, (r, w) = 0, os.pipe()
while True:
    try:
        pid = os.fork()
    except OSError as exc:
        print(n, exc.errno, flush=True)
        break
    if pid == 0:
        os.close(w)
        os.read(r, 1)  # until the parent is gone
        os._exit(0)
    n += 1
os.read(r, 1)  # stay, children and all, until killed
"""
# The classic bomb. Its stderr is made the sandbox's stdout before the pipelines start, so
# every bash's "fork: retry: Resource temporarily unavailable" reaches the test as a line. The
# first shell then stays, as an agent's CLI does: were it to exit, the sandbox's pid namespace
# would end and take the bomb with it.
BASH_BOMB = "exec 2>&1; :(){ :|:& };:; exec sleep 1000"


@contextmanager
def pidfds(pids: list[int]) -> Iterator[list[int]]:
    """A pidfd per process: it keeps naming that process, whatever happens to the pid."""
    fds = []
    for pid in pids:
        try:
            fds.append(os.pidfd_open(pid))
        except ProcessLookupError:
            pass  # already gone
    try:
        yield fds
    finally:
        for fd in fds:
            os.close(fd)


async def terminated(pidfds: list[int], within: float = 10.0) -> None:
    """Wait until every process has terminated: a pidfd polls readable once its process has."""
    loop = asyncio.get_running_loop()
    waits: list[asyncio.Future[None]] = []
    for fd in pidfds:
        done: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, _resolve, done)
        waits.append(done)
    try:
        async with asyncio.timeout(within):
            await asyncio.gather(*waits)
    finally:
        for fd in pidfds:
            loop.remove_reader(fd)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def tasks(cgroup: Path) -> int:
    return int((cgroup / "pids.current").read_text())


def refusals(cgroup: Path) -> int:
    """How many forks the limit refused (``pids.events`` reads ``max <count>``)."""
    return int((cgroup / "pids.events").read_text().split()[1])


def removed(cgroup: Path) -> bool:
    return not cgroup.exists()


def proc_pids(cgroup: Path) -> list[int]:
    return [int(pid) for pid in (cgroup / "cgroup.procs").read_text().split()]


async def host_spawn_seconds() -> float:
    """How long the host takes to start and reap a process (it must not be starved)."""
    started = time.monotonic()
    async with asyncio.timeout(10):
        proc = await asyncio.create_subprocess_exec("/bin/true")
        assert await proc.wait() == 0
    return time.monotonic() - started


async def assert_cleaned_up(proc: SandboxedProcess, cgroup: Path, pidfds: list[int]) -> None:
    """The run was reaped, its cgroup is gone, and not one of its processes lives on.

    A removed cgroup means every process in it has reached exit; the sandbox's pid 1 still has
    to reap its children (the kernel makes it, before it may exit itself), which takes moments.
    """
    assert proc.returncode is not None
    assert removed(cgroup)
    await terminated(pidfds)


async def test_forks_past_the_limit_fail_with_eagain(
    make_spec: Callable[..., SandboxSpec], pids_controller: PidsController
) -> None:
    limit = 32
    command = ["/usr/bin/python3", "-c", FORK_UNTIL_REFUSED]
    async with await start(make_spec(max_processes=limit), command) as proc:
        cgroup = proc.cgroup
        assert cgroup is not None and cgroup.parent == pids_controller.base
        assert proc.process_limit == limit and proc.process_limit_error is None
        async with asyncio.timeout(20):
            forked, error = map(int, (await proc.stdout.readline()).split())  # type: ignore[union-attr]

        assert error == errno.EAGAIN
        # bwrap's monitor and the sandbox's pid 1 count too: with python, three tasks.
        assert forked == limit - 3
        assert tasks(cgroup) == limit
        assert refusals(cgroup) >= 1
        with pidfds(proc_pids(cgroup)) as fds:
            assert len(fds) == limit
            async with asyncio.timeout(20):
                await proc.kill(grace=1.0)
            await assert_cleaned_up(proc, cgroup, fds)


async def test_a_bash_fork_bomb_is_bounded_the_host_responds_and_all_is_reaped(
    make_spec: Callable[..., SandboxSpec], pids_controller: PidsController
) -> None:
    limit = 64
    async with await start(make_spec(max_processes=limit), ["bash", "-c", BASH_BOMB]) as proc:
        cgroup = proc.cgroup
        assert cgroup is not None
        async with asyncio.timeout(20):
            async for line in proc.lines():
                if b"Resource temporarily unavailable" in line:
                    break
            else:
                pytest.fail("the bomb ended before it reached the limit")

        assert tasks(cgroup) <= limit and refusals(cgroup) >= 1
        assert await host_spawn_seconds() < 2.0
        with pidfds(proc_pids(cgroup)) as fds:
            assert len(fds) > limit // 2  # the bomb did fill its cgroup
            started = time.monotonic()
            async with asyncio.timeout(20):
                await proc.kill(grace=1.0)
            assert time.monotonic() - started < 10
            await assert_cleaned_up(proc, cgroup, fds)


async def test_a_daemon_that_left_the_tree_dies_with_the_run(
    make_spec: Callable[..., SandboxSpec], pids_controller: PidsController
) -> None:
    # Unconfined there is no pid namespace, and a double fork leaves both the process group
    # and the tree of descendants: only the cgroup still knows the daemon belongs to the run.
    script = "(setsid sh -c 'echo $$; exec sleep 1000' &)"
    async with await start(make_spec(engine="none"), ["sh", "-c", script]) as proc:
        cgroup = proc.cgroup
        assert cgroup is not None
        async with asyncio.timeout(10):
            daemon = int(await proc.stdout.readline())  # type: ignore[union-attr]
        with pidfds([daemon]) as fds:
            assert fds and os.getsid(daemon) == daemon
            async with asyncio.timeout(20):
                assert await proc.wait(10) == 0  # the command itself is done at once
            await assert_cleaned_up(proc, cgroup, fds)


async def test_every_run_has_its_own_cgroup_and_none_outlives_it(
    make_spec: Callable[..., SandboxSpec], pids_controller: PidsController
) -> None:
    seen = []
    for engine in ("bwrap", "none"):
        async with await start(make_spec(engine=engine), ["cat", "/proc/self/cgroup"]) as proc:
            assert proc.process_limit == 512  # the spec's default
            output = (await proc.stdout.read()).decode()  # type: ignore[union-attr]
            assert await proc.wait(10) == 0
        assert proc.cgroup is not None and not proc.cgroup.exists()
        assert f"/{pids_controller.base.name}/{proc.cgroup.name}" in output
        seen.append(proc.cgroup)
    assert seen[0] != seen[1]


async def test_no_limit_asked_means_no_cgroup(make_spec: Callable[..., SandboxSpec]) -> None:
    async with await start(make_spec(max_processes=None), ["true"]) as proc:
        assert await proc.wait(10) == 0
    assert (proc.cgroup, proc.process_limit, proc.process_limit_error) == (None, None, None)


async def test_preflight_has_no_warning_where_the_limit_works(
    pids_controller: PidsController,
) -> None:
    result = await preflight("bwrap")
    assert result.ok and result.warnings == ()


# What happens on a machine without a usable controller is shown for real: a child process
# whose private mount namespace hides /sys/fs/cgroup under an empty tmpfs.
WITHOUT_CGROUPS = """
import asyncio, json, tempfile
from pathlib import Path
from sandbox import SandboxSpec, preflight, start

async def main():
    result = await preflight("bwrap")
    with tempfile.TemporaryDirectory() as ws:
        spec = SandboxSpec(workspace=Path(ws), env={"PATH": "/usr/bin:/bin"})
        async with await start(spec, ["echo", "ran"]) as proc:
            out = (await proc.stdout.read()).decode()
            code = await proc.wait(10)
    print(json.dumps({"ok": result.ok, "warnings": result.warnings, "out": out, "code": code,
                      "limit": proc.process_limit, "error": proc.process_limit_error}))

asyncio.run(main())
"""


def test_without_a_usable_controller_runs_go_ahead_and_preflight_warns() -> None:
    hide = 'mount -t tmpfs tmpfs /sys/fs/cgroup && exec "$0" -c "$1"'
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", hide]
    probe = subprocess.run([*argv[:4], "true"], capture_output=True, timeout=10, check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a mount namespace here: {probe.stderr.decode().strip()}")
    done = subprocess.run(
        [*argv, sys.executable, WITHOUT_CGROUPS],
        capture_output=True,
        timeout=30,
        check=False,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr.decode()
    report = json.loads(done.stdout)
    assert (report["out"], report["code"], report["limit"]) == ("ran\n", 0, None)
    assert "no writable pids cgroup controller" in report["error"]
    assert report["ok"]
    [warning] = report["warnings"]
    assert warning.startswith("sandboxed commands run without a process limit")
    assert "Delegate=yes" in warning


V1_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
V2_MOUNTINFO = """\
25 30 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
29 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate
"""


@pytest.mark.parametrize(
    ("mountinfo", "own", "expected"),
    [
        pytest.param(
            V1_MOUNTINFO,
            "8:pids:/\n4:memory:/x\n0::/\n",
            [(2, "/sys/fs/cgroup/unified"), (1, "/sys/fs/cgroup/pids")],
            id="v1-in-the-root",
        ),
        pytest.param(
            V1_MOUNTINFO,
            "8:pids:/docker/abc\n0::/\n",
            [
                (2, "/sys/fs/cgroup/unified"),
                (1, "/sys/fs/cgroup/pids/docker/abc"),
                (1, "/sys/fs/cgroup/pids"),
            ],
            id="v1-in-a-container-cgroup",
        ),
        pytest.param(
            V2_MOUNTINFO,
            "0::/system.slice/vaultgate.service\n",
            [(2, "/sys/fs/cgroup/system.slice/vaultgate.service"), (2, "/sys/fs/cgroup")],
            id="v2-systemd-service",
        ),
        pytest.param(
            "29 25 0:26 /sub /mnt/cg\\040x rw - cgroup2 cgroup2 rw\n",
            "0::/sub/leaf\n",
            [(2, "/mnt/cg x/leaf"), (2, "/mnt/cg x")],
            id="v2-mounted-from-a-subtree",
        ),
        pytest.param("31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n", "0::/\n", [], id="none"),
    ],
)
def test_candidates_are_read_from_mountinfo_and_proc_self_cgroup(
    mountinfo: str, own: str, expected: list[tuple[int, str]]
) -> None:
    assert candidates(mountinfo, own) == [(v, Path(p)) for v, p in expected]


def test_a_child_that_cannot_enter_its_cgroup_never_runs(
    pids_controller: PidsController, tmp_path: Path
) -> None:
    # Fail closed: the hook raises in the child, so the command is not run unbounded.
    cgroup = pids_controller.new_cgroup(8)
    cgroup.path.rmdir()  # gone before the child could enter it
    try:
        with pytest.raises(subprocess.SubprocessError):
            subprocess.run(
                ["touch", str(tmp_path / "ran")], preexec_fn=cgroup.enter_hook(), timeout=10
            )
    finally:
        cgroup.entered()
    assert not (tmp_path / "ran").exists()
