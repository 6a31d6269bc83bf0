"""Inside a restricted sandbox: a loopback port that leads to the egress proxy, then the command.

The bwrap engine runs this file with the system's ``/usr/bin/python3 -I -S`` as the sandbox's
first process::

    egress_forwarder.py SOCKET PORT -- COMMAND [ARG...]

It listens on ``127.0.0.1:PORT`` inside the sandbox's own network namespace, where nothing else
leads anywhere, and joins every connection made there to the proxy's unix socket SOCKET (bound
into the sandbox from the host), byte for byte. The proxy on the other end decides what may pass;
this side only carries bytes. Then it runs COMMAND as its child, with stdin, stdout, stderr and
the environment (``HTTPS_PROXY`` and friends are set by the engine) passed straight through.

It lives exactly as long as the command: termination signals are passed on to the command rather
than acted on (bwrap tears down the whole sandbox when this process exits, and the command needs
its grace period), and once the command exits this process exits the same way, leaving any
half-open connection to die with the sandbox. It uses the standard library only, since it runs
under whichever Python 3 the system has, outside any virtualenv.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys

BUFFER = 64 * 1024
MAX_CONNECTIONS = 64
"""Connections carried at once; more are closed at once (the proxy has its own, lower cap)."""
PASSED_ON = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
USAGE = "usage: egress_forwarder.py SOCKET PORT -- COMMAND [ARG...]"


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(BUFFER):
            writer.write(data)
            await writer.drain()
        # Half-close, so a client that has said all it will say still hears the answer.
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.close()  # a reset on one side resets the other


class Forwarder:
    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.open = 0

    async def carry(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self.open >= MAX_CONNECTIONS:
            client_w.close()
            return
        self.open += 1
        try:
            try:
                proxy_r, proxy_w = await asyncio.open_unix_connection(self.socket_path)
            except OSError as exc:
                print(f"egress-forwarder: cannot reach the proxy: {exc}", file=sys.stderr)
                return
            try:
                await asyncio.gather(_pipe(client_r, proxy_w), _pipe(proxy_r, client_w))
            finally:
                proxy_w.close()
        finally:
            self.open -= 1
            client_w.close()


async def main(socket_path: str, port: int, command: list[str]) -> int:
    loop = asyncio.get_running_loop()
    child: asyncio.subprocess.Process | None = None
    early: list[int] = []

    def pass_on(signum: int) -> None:
        if child is None:
            early.append(signum)
        elif child.returncode is None:
            # Not child.send_signal: Popen polls (waitpid) before it signals, and when the
            # command has just exited (the whole sandbox gets SIGTERM at once) that reaps it
            # under asyncio's watcher, which then reports status 255 instead of the real one.
            # Until the watcher has reaped it the pid is still this command's (a zombie at worst),
            # and pids are handed out in a cycle through the whole pid space before coming back.
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signum)

    # Installed before anything else: from here on a SIGTERM meant for the sandbox reaches the
    # command instead of ending this process (which would end the sandbox at once).
    for signum in PASSED_ON:
        loop.add_signal_handler(signum, pass_on, signum)
    forwarder = Forwarder(socket_path)
    try:
        server = await asyncio.start_server(forwarder.carry, "127.0.0.1", port)
    except OSError as exc:
        print(f"egress-forwarder: cannot listen on 127.0.0.1:{port}: {exc}", file=sys.stderr)
        return 125
    if early:
        return 128 + early[0]
    try:
        child = await asyncio.create_subprocess_exec(*command)
    except OSError as exc:
        print(f"egress-forwarder: cannot run {command[0]}: {exc.strerror}", file=sys.stderr)
        return 127
    # Only the command holds stdin and stdout now: its exit alone is what ends them.
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
    returncode = await child.wait()
    server.close()
    return returncode


def exit_like(returncode: int) -> None:
    """Leave with the command's status; a command killed by a signal is mirrored by one."""
    sys.stderr.flush()
    if returncode < 0:
        signum = -returncode
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        returncode = 128 + signum  # the signal's default action is to carry on
    # os._exit: open connections are not worth waiting for once the command is done.
    os._exit(returncode)


if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) < 4 or args[2] != "--" or not args[1].isdigit():
        print(USAGE, file=sys.stderr)
        sys.exit(2)
    exit_like(asyncio.run(main(args[0], int(args[1]), args[3:])))
