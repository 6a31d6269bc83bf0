"""Writing an inbound message on someone's behalf (the HTTP API, ``vaultgate send``).

The note is the message: it is written, durably and atomically, into
``Inbox/<source>/<date>/<id>.md`` already carrying its id, so whoever sent it
can follow it by that id before the gateway has even read it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.inbound import MESSAGE_TAG, new_message_id
from gateway.registry import now_iso
from gateway.settings import Settings
from vault_adapter import Note, Vault, slug


async def write_inbound(
    vault: Vault,
    settings: Settings,
    *,
    text: str,
    agent: str | None = None,
    channel: str | None = None,
    subject: str | None = None,
    sender: str | None = None,
    source: str = "http",
    message_id: str | None = None,
    thread_link: str | None = None,
) -> Note:
    """``thread_link``, when the caller already knows where the message will land,
    is written too, so the gateway has nothing left to stamp when it takes it in."""
    message_id = message_id or new_message_id()
    fields: dict[str, object] = {}
    if agent:
        fields["agent"] = agent
    if channel:
        fields["channel"] = channel
    if subject:
        fields["subject"] = subject
    fields["sender"] = sender or source
    fields.update(
        {
            "tags": [MESSAGE_TAG],
            "direction": "inbound",
            "id": message_id,
            "status": "queued",
            "received_at": now_iso(),
        }
    )
    if thread_link:
        fields["thread"] = thread_link
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    path = f"{settings.inbox_folder}/{slug(source)}/{day}/{message_id}.md"
    body = text if text.endswith("\n") else text + "\n"
    return await vault.create(path, fields, body)
