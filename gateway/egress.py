"""The egress proxy: the one way out of a turn whose sandbox has ``network: restricted``.

Such a turn has a network namespace of its own with nothing in it but loopback; the sandbox
carries every connection made to its ``HTTPS_PROXY`` to this proxy's unix socket (see
``sandbox/egress_forwarder.py``). The proxy speaks just enough HTTP for that: ``CONNECT
host:port`` opens a tunnel (https), and a plain request with an absolute ``http://`` URI is sent
on once, with ``Connection: close`` (the claude CLI talks to an ``http://`` base URL that way).

What passes is decided in two steps. By name: the model API (the host and port of
``ANTHROPIC_BASE_URL``, else ``api.anthropic.com:443``) and the definition's ``egress`` entries
(``example.com`` for its ports 443 and 80, ``example.com:8443``, ``*.example.com`` for names
below it). By address, after resolving: nothing may lead back to this machine or its neighbours
on the link (loopback, the machine's own addresses, unspecified, link-local, multicast), so a
listed name that resolves to 127.0.0.1 does not reach the gateway's own port. The one exception
is the exact host:port of the model API, which an operator (or a test's fake API) may run on
loopback. The proxy connects to the addresses it checked, never resolving twice.

Everything else gets ``403`` and is reported through ``on_refusal``. Every part is bounded: the
request head (size, time), the connect, the number of tunnels at once, the number of refusals
reported; closing the proxy ends every tunnel.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from gateway.errors import GatewayError

log = logging.getLogger(__name__)

HostPort = tuple[str, int]

DEFAULT_API: HostPort = ("api.anthropic.com", 443)
BARE_HOST_PORTS = (443, 80)
"""The ports an ``egress`` entry without one allows: https and http."""
HEAD_LIMIT = 64 * 1024
BUFFER = 64 * 1024
_HOP_BY_HOP = frozenset(
    {"connection", "proxy-connection", "keep-alive", "proxy-authorization", "te", "upgrade"}
)


class EgressRuleError(GatewayError):
    """An ``egress`` entry (or the API's base URL) that cannot be read as a host and port."""

    def __init__(self, entry: str, detail: str) -> None:
        super().__init__(f"egress entry {entry!r}: {detail}")
        self.entry = entry
        self.detail = detail


@dataclass(frozen=True)
class Refusal:
    """One connection the proxy did not let through."""

    host: str
    port: int
    reason: str

    def as_data(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "reason": self.reason}


RefusalSink = Callable[[Refusal], None]


@dataclass(frozen=True)
class HostRule:
    """One ``egress`` entry: a host name (or ``*.`` and a domain) and the ports it opens."""

    host: str
    wildcard: bool
    ports: tuple[int, ...]

    @classmethod
    def parse(cls, entry: str) -> HostRule:
        text = entry.strip()
        wildcard = text.startswith("*.")
        if wildcard:
            text = text[2:]
        try:
            host, port = _split_host_port(text, default=None)
        except ValueError as exc:
            raise EgressRuleError(entry, str(exc)) from None
        if not host or "*" in host or "/" in host:
            raise EgressRuleError(entry, "expected host, host:port or *.domain[:port]")
        return cls(host, wildcard, BARE_HOST_PORTS if port is None else (port,))

    def matches(self, host: str, port: int) -> bool:
        if port not in self.ports:
            return False
        return host.endswith("." + self.host) if self.wildcard else host == self.host


@dataclass(frozen=True)
class EgressPolicy:
    """Which host:port targets a turn may reach, by name; addresses are checked on connect."""

    api: HostPort = DEFAULT_API
    rules: tuple[HostRule, ...] = ()
    may_be_local: frozenset[HostPort] = field(default_factory=frozenset)
    """Targets allowed to resolve to this machine; ``api`` always is."""

    @classmethod
    def for_turn(cls, base_url: str | None, egress: Iterable[str]) -> EgressPolicy:
        """The policy of a turn: the model API from ``base_url`` plus the ``egress`` entries."""
        api = DEFAULT_API
        if base_url:
            parts = urlsplit(base_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise EgressRuleError(base_url, "ANTHROPIC_BASE_URL is not an http(s) URL")
            try:
                port = parts.port or (443 if parts.scheme == "https" else 80)
            except ValueError as exc:
                raise EgressRuleError(base_url, str(exc)) from None
            api = (_normal(parts.hostname), port)
        return cls(api, tuple(HostRule.parse(entry) for entry in egress))

    def refusal(self, host: str, port: int) -> str | None:
        """Why ``host:port`` may not be reached by name, or None when it may."""
        if (host, port) == self.api or any(rule.matches(host, port) for rule in self.rules):
            return None
        return "not the model API and not in the definition's egress list"

    def local_allowed(self, host: str, port: int) -> bool:
        return (host, port) == self.api or (host, port) in self.may_be_local


class _Refused(Exception):
    def __init__(self, status: int, reason: str, *, report: bool = True) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.report = report


_STATUS_TEXT = {
    400: "Bad Request",
    403: "Forbidden",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class EgressProxy:
    """An HTTP proxy on a unix socket, for one turn. ``async with`` it; pass ``socket_path`` on.

    ``on_refusal`` is called (on the event loop) for each refused connection, up to
    ``max_reports`` times; ``refused`` counts them all.
    """

    def __init__(
        self,
        policy: EgressPolicy,
        on_refusal: RefusalSink,
        *,
        max_tunnels: int = 32,
        connect_timeout: float = 10.0,
        head_timeout: float = 30.0,
        max_reports: int = 100,
    ) -> None:
        self.policy = policy
        self.on_refusal = on_refusal
        self.max_tunnels = max_tunnels
        self.connect_timeout = connect_timeout
        self.head_timeout = head_timeout
        self.max_reports = max_reports
        self.refused = 0
        self._dir: Path | None = None
        self._server: asyncio.AbstractServer | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        """One per connection, each carrying one exchange (a refusal or a tunnel)."""
        self._tunnels = 0

    @property
    def socket_path(self) -> Path:
        assert self._dir is not None, "the proxy is not running"
        return self._dir / "egress.sock"

    async def start(self) -> None:
        # A short private directory: a unix socket path may not exceed 107 bytes, which a
        # workspace deep in a vault easily would; 0700 keeps other users off the socket.
        self._dir = Path(tempfile.mkdtemp(prefix="vaultgate-egress-"))
        try:
            self._server = await asyncio.start_unix_server(
                self._handle, path=str(self.socket_path), limit=HEAD_LIMIT
            )
        except OSError:
            await self.close()
            raise

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        # Tunnels outlive nothing: a turn that is over has no business holding connections.
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    async def __aenter__(self) -> EgressProxy:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- one connection ---------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The exchange runs in a task of our own, which close() cancels; the task asyncio
        # gave this callback is left to end normally (3.11 logs a cancelled one as an error).
        task = asyncio.create_task(self._exchange(reader, writer))
        self._handlers.add(task)
        try:
            await asyncio.wait({task})
        finally:
            self._handlers.discard(task)
            writer.close()
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("egress proxy: an exchange failed", exc_info=error)

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = "", 0
        try:
            if self._tunnels >= self.max_tunnels:
                raise _Refused(503, "too many connections at once", report=False)
            self._tunnels += 1
            try:
                method, target, head = await self._read_head(reader)
                host, port, plain = _target(method, target)
                upstream = await self._connect(host, port)
                await self._relay(reader, writer, upstream, plain, head)
            finally:
                self._tunnels -= 1
        except _Refused as refused:
            await self._refuse(writer, host, port, refused)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away; nothing to answer

    async def _read_head(self, reader: asyncio.StreamReader) -> tuple[str, str, list[bytes]]:
        try:
            async with asyncio.timeout(self.head_timeout):
                raw = await reader.readuntil(b"\r\n\r\n")
        except (TimeoutError, asyncio.LimitOverrunError):
            raise _Refused(400, "no complete request head", report=False) from None
        lines = raw[:-4].split(b"\r\n")
        parts = lines[0].decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _Refused(400, "not an HTTP/1.x request", report=False)
        return parts[0].upper(), parts[1], lines

    async def _connect(
        self, host: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reason = self.policy.refusal(host, port)
        if reason is not None:
            raise _Refused(403, reason)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
                if not self.policy.local_allowed(host, port):
                    barred = [a for a in addresses if _local_address(a)]
                    addresses = [a for a in addresses if a not in barred]
                    if not addresses:
                        raise _Refused(403, f"{host} resolves to a local address ({barred[0]})")
                error: OSError | None = None
                for address in addresses:
                    try:
                        return await asyncio.open_connection(address, port, limit=BUFFER)
                    except OSError as exc:
                        error = exc
        except TimeoutError:
            raise _Refused(
                504, f"no connection within {self.connect_timeout:g}s", report=False
            ) from None
        except OSError as exc:
            raise _Refused(502, f"cannot resolve {host}: {exc}", report=False) from None
        raise _Refused(502, f"cannot connect: {error}", report=False)

    async def _relay(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        plain: bool,
        head: list[bytes],
    ) -> None:
        up_reader, up_writer = upstream
        try:
            if plain:
                up_writer.write(_origin_form(head))
                # One request per connection (Connection: close): when the answer is over, so
                # is the exchange, whatever the client meant to send next.
                sending = asyncio.create_task(_pipe(reader, up_writer))
                try:
                    await _pipe(up_reader, writer)
                finally:
                    sending.cancel()
                    await asyncio.gather(sending, return_exceptions=True)
            else:
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            up_writer.close()

    async def _refuse(
        self, writer: asyncio.StreamWriter, host: str, port: int, refused: _Refused
    ) -> None:
        if refused.report:
            self.refused += 1
            if self.refused <= self.max_reports:
                try:
                    self.on_refusal(Refusal(host, port, refused.reason))
                except Exception:
                    log.exception("reporting an egress refusal failed")
            elif self.refused == self.max_reports + 1:
                log.warning(
                    "egress: more than %d refusals; no longer reporting each", self.max_reports
                )
        body = f"vaultgate egress proxy: {refused.reason}\n".encode()
        status = f"{refused.status} {_STATUS_TEXT[refused.status]}"
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()


def _target(method: str, target: str) -> tuple[str, int, bool]:
    """(host, port, is-plain-http) of a request line's target."""
    if method == "CONNECT":
        try:
            host, port = _split_host_port(target, default=None)
        except ValueError as exc:
            raise _Refused(400, str(exc), report=False) from None
        if port is None:
            raise _Refused(400, "CONNECT needs host:port", report=False)
        return host, port, False
    parts = urlsplit(target)
    if parts.scheme != "http" or not parts.hostname:
        raise _Refused(400, "only CONNECT and absolute http:// requests pass", report=False)
    try:
        return _normal(parts.hostname), parts.port or 80, True
    except ValueError as exc:
        raise _Refused(400, str(exc), report=False) from None


def _origin_form(head: list[bytes]) -> bytes:
    """The request head as sent to the origin: its own path, no hop-by-hop headers, one shot."""
    method, target, version = head[0].split()
    parts = urlsplit(target.decode("latin-1"))
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    lines = [b" ".join((method, path.encode("latin-1"), version))]
    for line in head[1:]:
        name = line.split(b":", 1)[0].strip().lower().decode("latin-1")
        if name not in _HOP_BY_HOP:
            lines.append(line)
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(BUFFER):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.close()


def _split_host_port(text: str, *, default: int | None) -> tuple[str, int | None]:
    """``host``, ``host:port`` or ``[v6]:port``, host normalised; ValueError if malformed."""
    port: str | None = None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"malformed address {text!r}")
        port = rest[1:] or None
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host = text  # a bare name, or a bare IPv6 address
    if port is None:
        return _normal(host), default
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad port {port!r}")
    return _normal(host), int(port)


def _normal(host: str) -> str:
    return host.strip().rstrip(".").lower()


def _local_address(address: str) -> bool:
    """Whether connecting to ``address`` would reach this machine or only its own link."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback or ip.is_unspecified or ip.is_link_local or ip.is_multicast:
        return True
    # One of this machine's own addresses (a gateway bound to 0.0.0.0 answers on each): the
    # kernel picks that very address as the source of a datagram socket "connected" to it.
    # Nothing is sent.
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((str(ip), 9))
        except OSError:
            return False  # no route: not this machine, and the connect will fail anyway
        return bool(probe.getsockname()[0] == str(ip))
