"""Writes someone is waiting on go ahead of the gateway's background work.

File work runs in worker threads. The gateway's own bookkeeping (stamps,
replies, thread notes) can fill the shared pool's queue; a client holding an
HTTP request open for its note to be stored should not wait behind it. Code
that writes for such a client wraps the call in :func:`waited_on`, and the
folder adapter then runs it on a small pool of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_WAITED_ON: ContextVar[bool] = ContextVar("vault_waited_on", default=False)


@contextmanager
def waited_on() -> Iterator[None]:
    """Vault calls made inside are for someone waiting on them."""
    token = _WAITED_ON.set(True)
    try:
        yield
    finally:
        _WAITED_ON.reset(token)


def is_waited_on() -> bool:
    return _WAITED_ON.get()
