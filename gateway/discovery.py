"""How the CLI finds a running gateway, and the API token they share.

``.vaultgate/gateway.json`` holds the running gateway's pid, URL and start
time; it is written once the HTTP server listens and removed on a clean exit.
A file left by a gateway that died is recognised because its pid is gone.
``.vaultgate/token`` (mode 0600) holds the bearer token when none is set.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

DISCOVERY = "gateway.json"
TOKEN_FILE = "token"


@dataclass(frozen=True, slots=True)
class Running:
    pid: int
    url: str
    started_at: str


def write_discovery(state_dir: Path, url: str, started_at: str) -> Path:
    path = state_dir / DISCOVERY
    tmp = path.with_name(f".{DISCOVERY}.tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "url": url, "started_at": started_at}))
    tmp.replace(path)
    return path


def remove_discovery(state_dir: Path) -> None:
    path = state_dir / DISCOVERY
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if data.get("pid") == os.getpid():
        path.unlink(missing_ok=True)


def find_running(state_dir: Path) -> Running | None:
    """The gateway serving this vault, or None (no file, or a stale one)."""
    try:
        data = json.loads((state_dir / DISCOVERY).read_text())
        running = Running(int(data["pid"]), str(data["url"]), str(data.get("started_at", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return running if _alive(running.pid) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def load_or_create_token(state_dir: Path, configured: str = "") -> str:
    if configured:
        return configured
    path = state_dir / TOKEN_FILE
    try:
        token = path.read_text().strip()
        if token:
            return token
    except FileNotFoundError:
        pass
    state_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token


def read_token(state_dir: Path, configured: str = "") -> str | None:
    if configured:
        return configured
    try:
        return (state_dir / TOKEN_FILE).read_text().strip() or None
    except OSError:
        return None
