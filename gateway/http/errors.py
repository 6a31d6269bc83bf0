"""One place where exceptions become HTTP answers, and where callers are authenticated.

Handlers raise; :func:`error_middleware` turns what they raise into
``{"error": {"code", "message"}}`` with a status: 4xx for anything the
client can fix (bad JSON, a body that does not validate, an unknown thread
or agent, a body too large, a missing token), 500 only for our own bugs.
:func:`auth_middleware` requires the bearer token on every route but
``/health``, always: sandboxed agents share loopback, so being local proves
nothing. Tokens are compared in constant time.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware
from aiohttp.web_protocol import RequestPayloadError
from pydantic import ValidationError

from gateway.errors import RoutingError, UnknownThread
from vault_adapter import VaultError, VaultPathError

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
WEBHOOK_PATH = "/api/webhooks/vault"


class ApiError(Exception):
    """A client mistake with its HTTP status and a stable code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_body(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_body(exc.status, exc.code, exc.message)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        message = str(first["msg"]).removeprefix("Value error, ")
        return error_body(422, "invalid_body", f"{where}: {message}")
    except json.JSONDecodeError as exc:
        return error_body(400, "invalid_json", f"the body is not valid JSON: {exc.msg}")
    except UnicodeDecodeError:
        return error_body(400, "invalid_json", "the body is not UTF-8")
    except UnknownThread as exc:
        return error_body(404, "unknown_thread", str(exc))
    except RoutingError as exc:
        return error_body(404, "unknown_agent", exc.reason)
    except VaultPathError as exc:
        return error_body(400, "bad_path", str(exc))
    except VaultError as exc:
        # The vault could not be written or read (a full disk, say): nothing was
        # stored, and the client did nothing wrong; it may try again.
        return error_body(503, "vault_unavailable", f"{exc}; nothing was stored, try again")
    except RequestPayloadError as exc:
        return error_body(400, "bad_body", f"the body could not be read: {exc}")
    except web.HTTPRequestEntityTooLarge as exc:
        return error_body(413, "body_too_large", exc.text or "request body too large")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        return error_body(exc.status, code, exc.reason)
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error_body(500, "internal", "internal error; see the gateway's log")


def auth_middleware(token: str) -> Middleware:
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/health":
            return await handler(request)
        # Headers that are not UTF-8 arrive surrogate-escaped: encode them back, never fail.
        given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
        if request.path == WEBHOOK_PATH and "token" in request.query:
            # A vault server's trigger can name a URL but not set a header.
            given = f"Bearer {request.query['token']}".encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, expected):
            raise ApiError(
                401,
                "unauthorized",
                "missing or wrong bearer token: send 'Authorization: Bearer <token>' "
                "(the token is in .vaultgate/token or VAULTGATE_TOKEN)",
            )
        return await handler(request)

    return check
