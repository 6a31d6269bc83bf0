"""A process limit for a confined command: a cgroup of its own with the pids controller.

``RLIMIT_NPROC`` cannot bound a sandbox run by root: the kernel exempts uid 0, and bwrap without
a user namespace keeps it. The pids controller binds everyone: past a cgroup's ``pids.max``,
``fork`` and ``clone`` fail with ``EAGAIN``. It counts tasks, so threads count as well as
processes, and so do bwrap's own two (its monitor and the sandbox's pid 1).

Each run gets a cgroup ``vaultgate/<gateway pid>-<random>`` below a pids controller we may write:

- cgroup v2: the gateway's own cgroup (from ``/proc/self/cgroup``), else the root of the
  hierarchy, provided ``cgroup.controllers`` lists ``pids``. ``+pids`` is enabled in
  ``cgroup.subtree_control`` on the way down (pids is a threaded controller, so the kernel allows
  it even where the gateway's own process lives).
- cgroup v1: the pids hierarchy, below the gateway's own cgroup in it.

The child enters its cgroup before it can fork: ``RunCgroup.enter_hook`` is its ``preexec_fn``,
run between fork and exec, which writes ``0`` ("this process") to a ``cgroup.procs`` the parent
opened, one system call, so everything the command starts is inside the limit. Once the process
has been reaped, ``RunCgroup.remove`` kills whatever is still in the cgroup (``cgroup.kill`` on
v2; on v1 SIGKILL through a pidfd to each listed pid, so a reused pid is never hit), waits for it
to empty and removes it. Empty cgroups left by a gateway that died are removed the first time
this one looks for its controller.

Where no controller is usable (a container without write access to cgroups, a kernel without
pids), ``find_controller`` says why and runs go ahead without a limit; ``preflight`` reports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import re
import signal
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Version = Literal[1, 2]

GROUP = "vaultgate"
"""The directory, below the controller's cgroup, that holds one cgroup per run."""
REMOVE_WITHIN = 5.0
"""Seconds ``remove`` keeps killing and retrying before it leaves a cgroup behind."""
FIX = (
    "run the gateway as root with cgroups mounted writable (/sys/fs/cgroup), or delegate a "
    "cgroup v2 subtree with the pids controller to its user (systemd: Delegate=yes)"
)
_RUN_NAME = re.compile(r"(\d+)-[0-9a-f]{12}")
_PROC = Path("/proc")


@dataclass(frozen=True)
class NoController:
    """Why no pids controller is usable here, and what would make one so."""

    reason: str
    fix: str = FIX


@dataclass(frozen=True)
class PidsController:
    """A ``vaultgate`` cgroup below which each run can get a cgroup with ``pids.max``."""

    version: Version
    base: Path

    def new_cgroup(self, limit: int) -> RunCgroup:
        """A fresh cgroup with ``pids.max = limit``, open for a child to enter (OSError if not)."""
        path = self.base / f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        path.mkdir()
        try:
            (path / "pids.max").write_text(str(limit))
            procs = os.open(path / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
        except OSError:
            with contextlib.suppress(OSError):
                path.rmdir()
            raise
        return RunCgroup(path, self.version, limit, procs)


class RunCgroup:
    """One run's cgroup: entered by the child at start, emptied and removed after it."""

    def __init__(self, path: Path, version: Version, limit: int, procs_fd: int) -> None:
        self.path = path
        self.version = version
        self.limit = limit
        self._procs_fd: int | None = procs_fd
        self._removed = False

    def enter_hook(self) -> Callable[[], object]:
        """The child's ``preexec_fn``: move the calling process into this cgroup.

        It runs in the forked child before exec, where the parent's other threads may have left
        locks held, so it is a bare C call with no Python frame of ours: write(2) of ``0``
        ("this process") to a descriptor opened beforehand. If it fails, the start fails (the
        caller sees ``SubprocessError``) rather than the command running unbounded.
        """
        assert self._procs_fd is not None
        return functools.partial(os.write, self._procs_fd, b"0")

    def entered(self) -> None:
        """The child has started (or failed to): the parent's descriptor is no longer needed."""
        if self._procs_fd is not None:
            os.close(self._procs_fd)
            self._procs_fd = None

    def members(self) -> list[int]:
        """Pids of the processes in the cgroup now (empty once it is gone)."""
        try:
            return [int(pid) for pid in (self.path / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def kill(self) -> None:
        """SIGKILL every process in the cgroup, whatever session or parent it has."""
        if self.version == 2:
            try:
                (self.path / "cgroup.kill").write_text("1")  # atomic, Linux 5.14+
                return
            except OSError:
                pass  # an older kernel: one pid at a time, as on v1
        # A pid is only a number: take a pidfd on each first, then signal only those still
        # listed, so a process that exited meanwhile cannot pass its pid on to a stranger.
        pidfds: dict[int, int] = {}
        for pid in self.members():
            with contextlib.suppress(OSError):  # already gone
                pidfds[pid] = os.pidfd_open(pid)
        try:
            for pid in set(self.members()) & pidfds.keys():
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(pidfds[pid], signal.SIGKILL)
        finally:
            for fd in pidfds.values():
                os.close(fd)

    async def remove(self, within: float = REMOVE_WITHIN) -> bool:
        """Kill what is left, wait until the cgroup is empty, remove it; False if it stayed."""
        self.entered()
        if self._removed:
            return True
        deadline = time.monotonic() + within
        pause = 0.001
        while True:
            self.kill()
            try:
                self.path.rmdir()  # cgroupfs removes its control files with it
            except FileNotFoundError:
                pass
            except OSError as exc:
                # EBUSY: a killed process is still on its way out (or a fork raced the kill).
                if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                    return False
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.05)
                continue
            self._removed = True
            return True


def cgroup_for_run(limit: int | None) -> tuple[RunCgroup | None, str | None]:
    """A cgroup that holds a run to ``limit`` tasks; or None and why not (None: none asked)."""
    if limit is None:
        return None, None
    found = find_controller()
    if isinstance(found, NoController):
        return None, found.reason
    try:
        return found.new_cgroup(limit), None
    except OSError as exc:
        find_controller.cache_clear()  # the controller changed under us: look again next time
        return None, f"cannot create a cgroup below {found.base}: {exc.strerror or exc}"


@functools.cache
def find_controller() -> PidsController | NoController:
    """The pids controller this process may use, found once (``cache_clear`` to look again)."""
    try:
        mountinfo = (_PROC / "self/mountinfo").read_text()
        own = (_PROC / "self/cgroup").read_text()
    except OSError as exc:
        return NoController(f"cannot read /proc/self: {exc.strerror}")
    reasons: list[str] = []
    for version, parent in candidates(mountinfo, own):
        try:
            controller = _prepare(version, parent)
        except OSError as exc:
            reasons.append(f"{parent}: {exc.strerror or exc}")
            continue
        _sweep(controller.base)
        return controller
    if not reasons:
        return NoController("no cgroup hierarchy with the pids controller is mounted")
    return NoController("no writable pids cgroup controller (" + "; ".join(reasons) + ")")


def candidates(mountinfo: str, own_cgroups: str) -> list[tuple[Version, Path]]:
    """Where a ``vaultgate`` cgroup could go, best first, from /proc/self/{mountinfo,cgroup}.

    v2 hierarchies first (where pids is enabled is checked later, on the files), then the v1
    pids hierarchy; in each, the gateway's own cgroup before the hierarchy's root.
    """
    own: dict[Version, str] = {}
    for line in own_cgroups.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            own[2] = path
        elif "pids" in controllers.split(","):
            own[1] = path
    found: list[tuple[Version, Path]] = []
    for version, root, mountpoint in sorted(_cgroup_mounts(mountinfo), key=lambda m: -m[0]):
        mine = own.get(version)
        if mine is not None and (mine == root or mine.startswith(root.rstrip("/") + "/")):
            found.append((version, mountpoint / mine[len(root) :].lstrip("/")))
        found.append((version, mountpoint))
    return list(dict.fromkeys(found))


def _cgroup_mounts(mountinfo: str) -> Iterable[tuple[Version, str, Path]]:
    """(version, root within the hierarchy, mount point) of each pids-capable cgroup mount."""
    for line in mountinfo.splitlines():
        # id parent major:minor root mountpoint options [optional...] - fstype source superopts
        mount, _, described = line.partition(" - ")
        fields, tail = mount.split(), described.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        fstype, options = tail[0], tail[2]
        root, mountpoint = _unescape(fields[3]), Path(_unescape(fields[4]))
        if fstype == "cgroup2":
            yield 2, root, mountpoint
        elif fstype == "cgroup" and "pids" in options.split(","):
            yield 1, root, mountpoint


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as octal escapes (\040 ...).
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _prepare(version: Version, parent: Path) -> PidsController:
    """Make ``parent/vaultgate`` a place for pids-limited cgroups, and prove it with one."""
    if not (parent / "cgroup.procs").is_file():
        raise OSError(errno.ENOENT, "not a cgroup directory")
    if version == 2:
        controllers = (parent / "cgroup.controllers").read_text().split()
        if "pids" not in controllers:
            raise OSError(errno.EOPNOTSUPP, "the pids controller is not enabled here")
    base = parent / GROUP
    made = not base.is_dir()
    if made:
        base.mkdir()
    try:
        if version == 2:
            _enable_pids(parent)
            _enable_pids(base)
        probe = PidsController(version, base).new_cgroup(1)
        probe.entered()
        probe.path.rmdir()
    except OSError:
        if made:
            with contextlib.suppress(OSError):
                base.rmdir()
        raise
    return PidsController(version, base)


def _enable_pids(cgroup: Path) -> None:
    control = cgroup / "cgroup.subtree_control"
    if "pids" not in control.read_text().split():
        control.write_text("+pids")


def _sweep(base: Path) -> None:
    """Remove the empty run cgroups of gateways that are gone (a crash skips ``remove``)."""
    with contextlib.suppress(OSError):
        for entry in base.iterdir():
            match = _RUN_NAME.fullmatch(entry.name)
            if match is None or _alive(int(match.group(1))):
                continue
            with contextlib.suppress(OSError):  # not empty: something still runs there
                entry.rmdir()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the pid exists
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, and belongs to someone else
    return True
