"""Threads: which thread a message belongs to, and what its note says.

A thread is one conversation: one Claude session, one note under
``Threads/<channel>/<leaf>.md``. The leaf is ``<name>`` for a single-threaded
agent, ``<name>--<slug(subject)>`` for a multi-threaded agent with a subject,
and a fresh id per message for a multi-threaded agent without one. The drain
key decides which turns must run one after another.

The thread note is a projection of the registry: its counters are written
from the registry's aggregates (never incremented in the note), and each
turn appends one section to the body, marked with the turn's id, so that
writing it again after a crash changes nothing.

A thread note shows the recent conversation, not all of it: once it holds
more than ``thread_note_turns`` sections, the older ones move, word for word,
to an archive note beside it (``Threads/<channel>/<leaf>/part-0001.md`` and
on), linked from the thread note's ``earlier_turns``. A note that grew by a
section every turn forever would be rewritten whole on every turn, would pass
``max_note_bytes`` (after which nobody could read it, the gateway included),
and would long before that stop being a note anyone reads.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from gateway.definitions import AgentSpec
from gateway.registry import ThreadRecord, TurnRecord
from vault_adapter import slug


@dataclass(frozen=True, slots=True)
class ThreadAddress:
    thread_id: str
    channel: str
    leaf: str
    drain_key: str
    note_path: str

    @property
    def link(self) -> str:
        return f"[[{self.note_path.removesuffix('.md')}]]"


def address(
    spec: AgentSpec, channel: str, subject: str | None, threads_folder: str, message_id: str
) -> ThreadAddress:
    """Where a message for ``spec`` on ``channel`` about ``subject`` goes (SPEC 3 and 4)."""
    if spec.mode == "single-threaded":
        leaf = spec.name
        key = channel
    elif subject:
        leaf = f"{spec.name}--{slug(subject)}"
        key = leaf
    else:
        leaf = f"{spec.name}--{message_id}"
        key = channel
    return ThreadAddress(
        thread_id=f"{channel}:{leaf}",
        channel=channel,
        leaf=leaf,
        drain_key=key,
        note_path=f"{threads_folder}/{channel}/{leaf}.md",
    )


def new_session_id() -> str:
    return str(uuid.uuid4())


_MARKER_START = "<!-- vaultgate:turn "


def turn_marker(turn_id: str) -> str:
    return f"{_MARKER_START}{turn_id} -->"


_MARKER_LINE = re.compile(rf"^{re.escape(_MARKER_START)}\S+ -->\r?$", re.MULTILINE)
"""A turn's marker line (in a note saved with CRLF line ends too)."""


ARCHIVE_TAG = "agent/thread-archive"


def older_turns(body: str, most: int, most_bytes: int) -> str | None:
    """What to move out of a thread note's ``body``: its oldest turn sections, when it
    holds more than ``most`` (then the newest ``most // 2`` stay) or its sections run
    to more than ``most_bytes`` characters (then the newest half stay; what a person
    wrote above the first section never moves). The text runs from the first
    section's marker to the first kept one's, with whatever a person wrote among
    those sections; None when nothing needs to move."""
    if len(body) <= most_bytes and body.count(_MARKER_START) <= most:
        return None  # every turn, most often: no need to find the sections
    starts = [match.start() for match in _MARKER_LINE.finditer(body)]
    if len(starts) > most:
        keep = max(1, most // 2)
    elif len(starts) > 1 and len(body) - starts[0] > most_bytes:
        keep = len(starts) // 2
    else:
        return None
    return body[starts[0] : starts[-keep]]


def archive_path(thread_note: str, part: int) -> str:
    """``Threads/<channel>/<leaf>.md``, part 3 -> ``Threads/<channel>/<leaf>/part-0003.md``."""
    return f"{thread_note.removesuffix('.md')}/part-{part:04d}.md"


def archive_part(path: str) -> int | None:
    """The part number of an archive note's path (as :func:`archive_path` names
    them), or None for any other note."""
    match = re.fullmatch(r".*/part-(\d{4,})\.md", path)
    return int(match.group(1)) if match else None


def _quote_block(text: str) -> str:
    """A message or reply as the section shows it. A line in it that would read as a
    turn marker (a thread note pasted into a message) gets a space in front: still
    an HTML comment to Obsidian, no longer a section boundary to the gateway."""
    text = _MARKER_LINE.sub(lambda match: " " + match.group(0), text.strip())
    return text or "_(empty)_"


def conversation_section(
    *,
    turn_id: str,
    received_at: str,
    sender: str,
    message: str,
    finished_at: str,
    agent: str,
    reply: str,
    failed: bool,
    notice: str | None = None,
) -> str:
    """One turn as readable Markdown: the message, then the reply (or the failure)."""
    who = "failed" if failed else agent
    parts = [
        "",
        turn_marker(turn_id),
        f"### {_short(received_at)} · {sender}",
        "",
        _quote_block(message),
        "",
        f"### {_short(finished_at)} · {who}",
        "",
    ]
    if notice:
        parts += [f"> [!note] {notice}", ""]
    parts += [_quote_block(reply), ""]
    return "\n".join(parts)


def _short(stamp: str) -> str:
    return stamp.replace("T", " ")[:16]


def thread_fields(record: ThreadRecord, spec: AgentSpec | None) -> dict[str, Any]:
    """The frontmatter the gateway owns on a thread note, from the registry."""
    return {
        "tags": ["agent/thread"],
        "agent": record.agent,
        "channel": record.channel,
        "subject": record.subject,
        "mode": record.mode,
        "definition": spec.link if spec else None,
        "status": record.status,
        "turn_count": record.turn_count,
        "input_tokens": record.input_tokens,
        "output_tokens": record.output_tokens,
        "cost_usd": round(record.cost_usd, 6),
        "session": record.session_id,
        "started_at": record.created_at,
        "last_turn_at": record.last_turn_at,
        "model": record.model,
        "last_error": record.last_error,
    }


def _title(record: ThreadRecord) -> str:
    return f"{record.agent} · {record.subject}" if record.subject else record.agent


def thread_heading(record: ThreadRecord) -> str:
    return f"# {_title(record)}\n"


def archive_note(
    record: ThreadRecord, part: int, turns: str, earlier: str | None = None
) -> tuple[dict[str, Any], str]:
    """Frontmatter and body of a thread's archive note ``part`` holding ``turns``
    (sections moved out of the thread note); ``earlier`` links the part before it."""
    fields: dict[str, Any] = {
        "tags": [ARCHIVE_TAG],
        "thread": f"[[{record.note.removesuffix('.md')}]]",
        "part": part,
        "agent": record.agent,
        "subject": record.subject,
    }
    if earlier:
        fields["earlier_turns"] = earlier
    return fields, f"# {_title(record)} · part {part}\n\n{turns}"


def history_block(turns: list[TurnRecord]) -> str:
    """The thread's recent turns, to seed a fresh session after the old one was lost."""
    done = [t for t in turns if t.status in ("done", "error") and t.message]
    if not done:
        return ""
    parts = ["[vaultgate: this thread's earlier session was lost; its recent history follows]"]
    for turn in done:
        parts.append(f'<turn from="{turn.sender or "someone"}">\n{turn.message}\n</turn>')
        parts.append(f'<turn from="{turn.agent}">\n{turn.reply_text or turn.error}\n</turn>')
    return "\n".join(parts)
