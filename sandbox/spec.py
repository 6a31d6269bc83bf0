"""What to confine and how: a plain value the caller fills in and every engine reads.

A spec names paths on the host; engines mount them at the same paths inside the sandbox, so a
path means the same thing on both sides (a session file written at ``<workspace>/x`` inside is
``<workspace>/x`` outside). The environment is not inherited: ``env`` is the whole of it, and
``env_from_allowlist`` is the one helper for building it from the caller's environment.
Validation happens here, once, so engines can trust what they are given.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from sandbox.errors import SandboxSpecError

Network = Literal["open", "restricted"]
"""``open`` shares the host network; ``restricted`` gives the command its own, empty one, whose
only way out (if any) is the ``egress_socket`` of a proxy the caller runs."""

Engine = Literal["bwrap", "none"]
"""``bwrap`` confines with bubblewrap; ``none`` runs unconfined and is only for explicit opt-in."""

DEFAULT_MAX_PROCESSES = 512


@dataclass(frozen=True)
class SandboxSpec:
    """A confined command's world: one writable workspace, read-only extras, an exact env."""

    workspace: Path
    """The only host directory the command may write (mounted read-write)."""
    cwd: Path | None = None
    """Where the command starts: a path inside ``workspace`` (relative paths are taken from it)."""
    ro_binds: tuple[Path, ...] = ()
    """Extra host paths visible read-only, e.g. the claude install directory."""
    rw_binds: tuple[Path, ...] = ()
    """Extra host paths visible read-write (a mounted vault folder); empty unless asked for."""
    env: Mapping[str, str] = field(default_factory=dict)
    """The complete environment of the command; nothing else is passed through."""
    network: Network = "open"
    engine: Engine = "bwrap"
    egress_socket: Path | None = None
    """With ``network="restricted"``: a host unix socket where an HTTP proxy listens. The command
    then reaches it as ``HTTPS_PROXY``/``HTTP_PROXY`` on its own loopback, and nothing else. None:
    a restricted command has no way out at all."""
    max_processes: int | None = DEFAULT_MAX_PROCESSES
    """At most this many tasks (processes and threads, bwrap's own included) at once: a fork
    past it fails with EAGAIN. Enforced with the pids cgroup controller (see pids.py); where
    none is usable the command runs without it and ``preflight`` warns. None: no limit."""

    def __post_init__(self) -> None:
        workspace = _absolute("workspace", self.workspace)
        cwd = workspace if self.cwd is None else Path(os.path.normpath(workspace / self.cwd))
        if not cwd.is_relative_to(workspace):
            raise SandboxSpecError("cwd", f"{cwd} is not inside the workspace {workspace}")
        for name, value in self.env.items():
            if not name or "=" in name or "\0" in name or "\0" in value:
                raise SandboxSpecError("env", f"{name!r} cannot be an environment variable")
        if self.network not in ("open", "restricted"):
            raise SandboxSpecError("network", f"unknown network mode {self.network!r}")
        if self.engine not in ("bwrap", "none"):
            raise SandboxSpecError("engine", f"unknown engine {self.engine!r}")
        if self.network == "restricted" and self.engine == "none":
            # Silently running with the host's network would be the opposite of what was asked.
            raise SandboxSpecError(
                "network",
                "'restricted' needs a network namespace, which engine 'none' cannot make: "
                "use engine 'bwrap', or network 'open'",
            )
        limit = self.max_processes
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
            raise SandboxSpecError("max_processes", f"{limit!r} is not a whole number")
        if limit is not None and limit < 1:
            raise SandboxSpecError("max_processes", f"{limit} is below 1")
        if self.egress_socket is not None:
            if self.network != "restricted":
                raise SandboxSpecError("egress_socket", "only a restricted network has a proxy")
            object.__setattr__(
                self, "egress_socket", _absolute("egress_socket", self.egress_socket)
            )
        # Normalised copies, so a frozen spec cannot change under an engine.
        object.__setattr__(self, "workspace", workspace)
        object.__setattr__(self, "cwd", cwd)
        object.__setattr__(self, "ro_binds", tuple(_absolute("ro_binds", p) for p in self.ro_binds))
        object.__setattr__(self, "rw_binds", tuple(_absolute("rw_binds", p) for p in self.rw_binds))
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))

    @property
    def workdir(self) -> Path:
        """The absolute directory the command starts in."""
        assert self.cwd is not None  # set in __post_init__
        return self.cwd


def env_from_allowlist(
    names: Iterable[str],
    *,
    source: Mapping[str, str] | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The variables of ``source`` (default: this process) named in ``names``, plus ``extra``.

    ``extra`` wins over ``source``: it is where the caller puts values it decides itself, such as
    ``HOME`` inside the workspace or the one credential a turn needs.
    """
    source = os.environ if source is None else source
    env = {name: source[name] for name in names if name in source}
    env.update(extra or {})
    return env


def _absolute(field_name: str, path: Path) -> Path:
    path = Path(path)
    if not path.is_absolute():
        raise SandboxSpecError(field_name, f"{path} must be an absolute path")
    return Path(os.path.normpath(path))
