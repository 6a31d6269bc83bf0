"""Can this machine confine a command? Answered by trying, and explained when it cannot.

Finding ``bwrap`` on PATH is not enough: kernels and container runtimes refuse namespaces in
several ways, and only running ``bwrap ... true`` with the very options a real run uses tells
them apart. When it fails, bwrap's message and the kernel's sysctls are matched to a cause and a
fix a person can act on. The ``none`` engine always passes: it confines nothing.

A working engine can still come with warnings: without a usable pids cgroup controller
(pids.py), commands run with no process limit, so a fork bomb inside could exhaust the machine.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from sandbox import pids
from sandbox.bwrap import INSTALL_FIX, find_bwrap
from sandbox.errors import SandboxError, SandboxTimeout, SandboxUnavailable
from sandbox.process import run
from sandbox.spec import Engine, Network, SandboxSpec

_PROBE_ENV = {"PATH": "/usr/bin:/bin"}

# (text in bwrap's stderr, what it means, how to fix it), most specific first.
_KNOWN_REFUSALS: tuple[tuple[str, str, str], ...] = (
    (
        "unprivileged_userns_clone",
        "user namespaces are disabled",
        "sysctl -w kernel.unprivileged_userns_clone=1",
    ),
    (
        "setting up uid map: Permission denied",
        "AppArmor forbids unprivileged user namespaces",
        "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, or give bwrap an AppArmor "
        "profile that allows userns",
    ),
    (
        "No space left on device",
        "the user namespace limit is reached or zero",
        "sysctl -w user.max_user_namespaces=15000",
    ),
    (
        "Can't mount proc",
        "mounting /proc is refused (typical inside an unprivileged container)",
        "run the gateway where it may create namespaces (e.g. docker --privileged or a "
        "seccomp/AppArmor profile that allows them), or opt in to engine 'none'",
    ),
    (
        "Operation not permitted",
        "creating namespaces is not permitted here (seccomp or a container runtime)",
        "run the gateway where it may create namespaces (e.g. docker --security-opt "
        "seccomp=unconfined --cap-add SYS_ADMIN), or opt in to engine 'none'",
    ),
)


@dataclass(frozen=True)
class PreflightResult:
    """Whether ``engine`` works here; if not, what is missing and how to fix it."""

    engine: Engine
    ok: bool
    detail: str
    fix: str | None = None
    warnings: tuple[str, ...] = ()
    """What works less well than it should, on an engine that works (``ok``)."""

    def raise_if_unavailable(self) -> None:
        """Raise ``SandboxUnavailable`` carrying this result's reason and fix."""
        if not self.ok:
            raise SandboxUnavailable(self.engine, self.detail, self.fix or "")


async def preflight(
    engine: Engine = "bwrap",
    *,
    network: Network = "open",
    search_path: str | None = None,
    time_limit: float = 10.0,
) -> PreflightResult:
    """Check ``engine`` by running ``true`` in a throwaway sandbox with the real options."""
    if engine == "none":
        return PreflightResult(
            "none", True, "engine 'none' runs commands unconfined", warnings=_warnings()
        )
    try:
        bwrap = find_bwrap(search_path)
    except SandboxUnavailable as exc:
        return PreflightResult("bwrap", False, exc.reason, exc.fix)
    with tempfile.TemporaryDirectory(prefix="vaultgate-preflight-") as workspace:
        spec = SandboxSpec(workspace=Path(workspace), env=_PROBE_ENV, network=network)
        try:
            done = await run(spec, ["true"], time_limit=time_limit, search_path=search_path)
        except SandboxTimeout:
            return PreflightResult(
                "bwrap",
                False,
                f"{bwrap} did not finish a trivial command in {time_limit:g}s",
                "check that bwrap runs by hand: bwrap --ro-bind / / true",
            )
        except SandboxError as exc:
            return PreflightResult("bwrap", False, str(exc), INSTALL_FIX)
    if done.returncode == 0:
        return PreflightResult("bwrap", True, f"{bwrap} can create a sandbox", warnings=_warnings())
    stderr = done.stderr_tail.strip()
    reason, fix = _diagnose(stderr)
    return PreflightResult("bwrap", False, f"{reason}: {bwrap} said: {stderr!r}", fix)


def _warnings() -> tuple[str, ...]:
    found = pids.find_controller()
    if isinstance(found, pids.NoController):
        return (
            f"sandboxed commands run without a process limit: {found.reason}; a fork bomb "
            f"could exhaust the machine's processes (fix: {found.fix})",
        )
    return ()


def _diagnose(stderr: str) -> tuple[str, str]:
    for needle, reason, fix in _KNOWN_REFUSALS:
        if needle in stderr:
            return reason, fix
    # bwrap said nothing we recognise: the kernel's switches may still explain it.
    for name, enabled in (
        ("kernel.unprivileged_userns_clone", "1"),
        ("user.max_user_namespaces", "15000"),
    ):
        path = Path("/proc/sys", *name.split("."))
        if path.exists() and path.read_text().strip() == "0":
            return f"{name} is 0, so user namespaces are disabled", f"sysctl -w {name}={enabled}"
    return "bwrap cannot create a sandbox", "run bwrap by hand to see why: bwrap --ro-bind / / true"
