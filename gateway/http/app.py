"""The aiohttp application ``vaultgate serve`` runs."""

from __future__ import annotations

import ipaddress

from aiohttp import web

from gateway.engine import Gateway
from gateway.errors import GatewayError
from gateway.http.errors import auth_middleware, error_middleware
from gateway.http.routes import GATEWAY, PREFLIGHT, add_routes


def build_app(
    gateway: Gateway, token: str, preflight: dict[str, object] | None = None
) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware, auth_middleware(token)],
        client_max_size=gateway.settings.http_max_body_bytes,
    )
    app[GATEWAY] = gateway
    app[PREFLIGHT] = dict(preflight or {})
    add_routes(app)
    return app


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_binding(host: str, explicit_token: bool) -> None:
    """Refuse to listen beyond loopback unless a token was given on purpose."""
    if not is_loopback(host) and not explicit_token:
        raise GatewayError(
            f"refusing to listen on {host} without an explicit token: set VAULTGATE_TOKEN "
            "(or token in vaultgate.toml), or bind to 127.0.0.1"
        )
