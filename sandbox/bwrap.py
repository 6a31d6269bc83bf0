"""The bubblewrap engine: turn a ``SandboxSpec`` into a ``bwrap`` command line.

The sandbox root is empty apart from what is mounted into it: the system directories a program
needs to run (read-only), the spec's extra binds, and the workspace (read-write). Everything
else on the host - other workspaces, the state database, home directories, the rest of /tmp - is
simply absent. Mounts are emitted parents first, so a workspace below /tmp lands on top of the
fresh tmpfs rather than under it.

Namespaces: pid (the command sees only its own processes, and when it exits the kernel kills
whatever it left behind), ipc, uts, and net when the network is restricted. ``--cap-drop ALL``
matters when the gateway runs as root: bwrap would otherwise hand the command root's full
capability set (mount, module loading, raw network). ``--die-with-parent`` ties the sandbox's
life to the bwrap process we start, which is what ``process.kill`` relies on.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from sandbox.errors import SandboxSpecError, SandboxUnavailable
from sandbox.spec import SandboxSpec

SYSTEM_PATHS: tuple[str, ...] = (
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib64",
    "/lib32",
    "/libx32",
    "/etc/alternatives",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/passwd",
    "/etc/group",
    "/etc/ld.so.cache",
    "/etc/localtime",
)
"""Host paths mounted read-only when present: enough for /usr/bin tools, node, python3, TLS."""

INSTALL_FIX = "apt-get install -y bubblewrap (Debian/Ubuntu) or dnf install -y bubblewrap (Fedora)"


def find_bwrap(search_path: str | None = None) -> str:
    """The absolute path of ``bwrap`` on ``search_path`` (default: ``$PATH``)."""
    found = shutil.which("bwrap", path=search_path)
    if found is None:
        raise SandboxUnavailable("bwrap", "bwrap is not installed (not found on PATH)", INSTALL_FIX)
    return found


def bwrap_argv(spec: SandboxSpec, command: Sequence[str], *, bwrap: str = "bwrap") -> list[str]:
    """The full ``bwrap ... -- command`` argv that runs ``command`` confined by ``spec``."""
    if not command:
        raise SandboxSpecError("command", "is empty")
    argv = [bwrap]
    for _, args in sorted(_mounts(spec), key=lambda mount: len(Path(mount[0]).parts)):
        argv.extend(args)
    # The sandbox root is a tmpfs bwrap made to hold the mount points; without this the command
    # could write into /, /etc, ... (lost at exit, but "only the workspace is writable" is the
    # contract). Mounts below it (/tmp, /dev, the workspace) keep their own flags.
    argv += ["--remount-ro", "/"]
    argv += ["--unshare-pid", "--unshare-ipc", "--unshare-uts"]
    if spec.network == "restricted":
        argv.append("--unshare-net")
    argv += ["--die-with-parent", "--new-session", "--cap-drop", "ALL", "--clearenv"]
    for name, value in spec.env.items():
        argv += ["--setenv", name, value]
    argv += ["--chdir", str(spec.workdir), "--", *command]
    return argv


def _mounts(spec: SandboxSpec) -> list[tuple[str, list[str]]]:
    """(destination, bwrap arguments) for every mount, in spec order."""
    mounts: list[tuple[str, list[str]]] = []
    for name in SYSTEM_PATHS:
        path = Path(name)
        if path.parent == Path("/") and path.is_symlink():
            # Merged-/usr systems have /bin -> usr/bin: keep it a symlink, so the sandbox's
            # layout matches the host's instead of holding a second mount of the same tree.
            mounts.append((name, ["--symlink", str(path.readlink()), name]))
        else:
            mounts.append((name, ["--ro-bind-try", name, name]))
    mounts += [
        ("/tmp", ["--tmpfs", "/tmp"]),
        ("/proc", ["--proc", "/proc"]),
        ("/dev", ["--dev", "/dev"]),
    ]
    for field_name, option, paths in (
        ("ro_binds", "--ro-bind", spec.ro_binds),
        ("rw_binds", "--bind", spec.rw_binds),
        ("workspace", "--bind", (spec.workspace,)),
    ):
        for path in paths:
            # Checked here rather than left to bwrap: its "Can't find source path" would arrive
            # later, as an exit status 1 indistinguishable from the command's own.
            if not path.exists():
                raise SandboxSpecError(field_name, f"{path} does not exist")
            mounts.append((str(path), [option, str(path), str(path)]))
    return mounts
