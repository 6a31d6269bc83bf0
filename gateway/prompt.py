"""Composing what a turn sends: the system prompt and the user message.

The system prompt is the agent's role, plus the subject's dossier after a
``---`` rule when the thread has one. Inbound text is untrusted: it goes in
the user message only, after a short run-context preamble, inside a
``<message from="...">`` block that the text cannot close early.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

SEPARATOR = "\n\n---\n\n"
_UNSAFE_ATTR = re.compile(r"[^\w .@:/+-]")


def system_prompt(role: str, dossier: str | None) -> str:
    """Role verbatim, or role + separator + dossier when the subject has one."""
    if dossier is None or not dossier.strip():
        return role
    return f"{role}{SEPARATOR}{dossier.strip()}"


def _attr(value: str) -> str:
    return _UNSAFE_ATTR.sub("_", value)[:120]


def user_message(
    text: str,
    *,
    sender: str,
    resumed: bool,
    thread_id: str,
    subject: str | None,
    now: datetime | None = None,
    note: str | None = None,
) -> str:
    """The run-context preamble and the inbound text, delimited as from ``sender``."""
    moment = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    context = [
        "[vaultgate run context]",
        f"time={moment}",
        f"session={'resumed' if resumed else 'new'}",
        f"fired-by={_attr(sender)}",
        f"thread={thread_id}",
    ]
    if subject:
        context.append(f"subject={_attr(subject)}")
    if note:
        context.append(f"note={_attr(note)}")
    # The text may not end the block early: any closing tag inside it is defused.
    safe = re.sub(r"</(message)", r"<\\/\1", text, flags=re.IGNORECASE)
    return "\n".join(context) + f'\n\n<message from="{_attr(sender)}">\n{safe.strip()}\n</message>'
