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

A restricted network with an ``egress_socket`` gets one way out: the proxy's socket is bound to
``/run/vaultgate/egress.sock`` and the command is started through ``egress_forwarder.py`` (run
by the system Python, read-only at ``/run/vaultgate/``), which listens on the sandbox's own
loopback and carries each connection to that socket. ``HTTPS_PROXY``/``HTTP_PROXY`` (both
spellings) point there and ``NO_PROXY`` is empty, so clients send everything through it.
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

FORWARDER = Path(__file__).with_name("egress_forwarder.py")
FORWARDER_PYTHON = Path("/usr/bin/python3")
"""Runs the forwarder: it is under /usr, which every sandbox has, unlike a virtualenv's python."""
EGRESS_SOCKET = "/run/vaultgate/egress.sock"
EGRESS_FORWARDER = "/run/vaultgate/egress-forwarder.py"
PROXY_PORT = 3128
PROXY_URL = f"http://127.0.0.1:{PROXY_PORT}"
PROXY_ENV: dict[str, str] = {
    # curl reads only the lower-case http_proxy; most other clients read either.
    **{name: PROXY_URL for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy")},
    # Empty: loopback too goes through the proxy (inside the sandbox it leads nowhere else).
    "NO_PROXY": "",
    "no_proxy": "",
}

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
    env = dict(spec.env)
    if spec.egress_socket is not None:
        env.update(PROXY_ENV)
        # The forwarder comes first and runs the command as its child: see egress_forwarder.py.
        command = [
            str(FORWARDER_PYTHON),
            "-I",
            "-S",
            EGRESS_FORWARDER,
            EGRESS_SOCKET,
            str(PROXY_PORT),
            "--",
            *command,
        ]
    for name, value in env.items():
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
    if spec.egress_socket is not None:
        if not spec.egress_socket.is_socket():
            raise SandboxSpecError("egress_socket", f"{spec.egress_socket} is not a socket")
        if not FORWARDER_PYTHON.is_file():
            raise SandboxUnavailable(
                "bwrap",
                f"a restricted network's forwarder needs {FORWARDER_PYTHON}, which is missing",
                "apt-get install -y python3-minimal",
            )
        mounts.append((EGRESS_SOCKET, ["--ro-bind", str(spec.egress_socket), EGRESS_SOCKET]))
        mounts.append((EGRESS_FORWARDER, ["--ro-bind", str(FORWARDER), EGRESS_FORWARDER]))
    return mounts
