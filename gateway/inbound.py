"""Inbound messages: which notes are messages for agents, and what they ask.

A note is inbound when it sits under the inbox folder, or when it is tagged
``agent/message`` with ``direction: inbound`` anywhere outside the folders the
gateway owns. Its frontmatter names the target (``agent`` or ``channel``),
and optionally ``subject`` and ``sender``; the body is the message. A note
with a final status was answered (or refused) and is never taken up again; a
note with ``status: draft`` is left alone until the status goes.
"""

from __future__ import annotations

import os
import random
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.settings import Settings
from vault_adapter import Note

MESSAGE_TAG = "agent/message"
FINAL_STATUSES = frozenset({"done", "error", "rejected"})
DRAFT = "draft"


def new_message_id(now: datetime | None = None) -> str:
    """Sortable and readable: ``20261120-235902-3f9a1c07b2e4``.

    48 random bits: a thousand messages in one second collide with odds of
    about one in a billion (24 bits collided in a benchmark posting 2,000)."""
    second = _this_second() if now is None else f"{now.astimezone(UTC):%Y%m%d-%H%M%S}"
    return f"{second}-{_RANDOM.getrandbits(48):012x}"


_RANDOM = random.Random(secrets.randbits(128))
"""Message ids need to be unique, not secret: a generator seeded once from the
system's randomness (and again in a forked child) costs no system call an id."""
os.register_at_fork(after_in_child=lambda: _RANDOM.seed(secrets.randbits(128)))
_SECOND: tuple[int, str] = (0, "")


def _this_second() -> str:
    global _SECOND
    now = int(time.time())
    if now != _SECOND[0]:
        _SECOND = (now, time.strftime("%Y%m%d-%H%M%S", time.gmtime(now)))
    return _SECOND[1]


def _under(path: str, folder: str) -> bool:
    return bool(folder) and path.startswith(folder.rstrip("/") + "/")


def is_gateway_owned(path: str, settings: Settings) -> bool:
    return any(_under(path, folder) for folder in settings.gateway_folders)


def is_inbound_path(path: str, settings: Settings) -> bool:
    return _under(path, settings.inbox_folder) and not is_gateway_owned(path, settings)


def is_inbound(note: Note, settings: Settings) -> bool:
    if is_gateway_owned(note.path, settings):
        return False
    direction = note.get("direction")
    if direction == "outbound":
        return False
    if _under(note.path, settings.inbox_folder):
        return True
    return note.has_tag(MESSAGE_TAG) and direction == "inbound"


def _text(value: Any) -> str | None:
    """A frontmatter value as a clean string; wikilinks ``[[x]]`` become ``x``."""
    if value is None:
        return None
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    text = str(value).strip()
    if text.startswith("[[") and text.endswith("]]"):
        text = text[2:-2].split("|", 1)[0].strip()
    return text or None


@dataclass(frozen=True, slots=True)
class InboundMessage:
    note: Note
    id: str | None
    agent: str | None
    channel: str | None
    subject: str | None
    sender: str
    status: str | None

    @property
    def text(self) -> str:
        return self.note.body.strip()

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def is_draft(self) -> bool:
        return self.status == DRAFT

    @property
    def link(self) -> str:
        return f"[[{self.note.path.removesuffix('.md')}]]"


def read_message(note: Note) -> InboundMessage:
    fm = note.frontmatter
    status = fm.get("status")
    return InboundMessage(
        note=note,
        id=_text(fm.get("id")),
        agent=_text(fm.get("agent")),
        channel=_text(fm.get("channel")),
        subject=_text(fm.get("subject")),
        sender=_text(fm.get("sender")) or "someone",
        status=str(status).strip().lower() if status is not None else None,
    )
