"""What the reliability tests share: scale, figures, vault and registry audits, RSS.

The audits read the vault and the registry *after* a gateway has stopped (or
while it runs, read-only) and say, in plain sentences, everything that does
not add up: a message with no reply or two, a turn not finalized, a thread
whose counters are not the sum of its turns, a reply note the registry names
but the vault lacks. Tests assert the list of problems is empty, so a failure
shows all of them at once, not just the first.
"""

from __future__ import annotations

import json
import math
import os
import re
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vault_adapter import Note, NoteParseError, parse_note

SCALE_ENV = "VAULTGATE_RELIABILITY_SCALE"
SEED_ENV = "VAULTGATE_RELIABILITY_SEED"
FIGURES_ENV = "VAULTGATE_RELIABILITY_FIGURES"

FIGURES: list[str] = []
"""Summary lines of this run; the folder's conftest prints them at the end."""


def scale() -> int:
    """How much longer than the CI default to run: ``$VAULTGATE_RELIABILITY_SCALE`` (>= 1)."""
    raw = os.environ.get(SCALE_ENV, "").strip()
    return max(1, int(raw)) if raw else 1


def seed() -> int:
    raw = os.environ.get(SEED_ENV, "").strip()
    return int(raw) if raw else time.time_ns() % 1_000_000


def summary(test: str, **figures: Any) -> str:
    """One line of figures for the CI log (and, with ``$VAULTGATE_RELIABILITY_FIGURES``
    naming a file, one JSON line appended to it)."""
    line = f"RELIABILITY {test}: " + ", ".join(f"{k}={v}" for k, v in figures.items())
    FIGURES.append(line)
    print(line)
    target = os.environ.get(FIGURES_ENV, "").strip()
    if target:
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"test": test, **figures}, default=str) + "\n")
    return line


# -- files --------------------------------------------------------------------


def write_atomically(path: Path, text: str) -> None:
    """Save a note the way a careful editor or sync tool does: hidden temp, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def visible_files(root: Path) -> Iterator[Path]:
    """Every file a person or Obsidian sees: nothing under a dot-folder, no dot-files."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith("."):
                yield Path(dirpath) / name


def unreadable_notes(root: Path) -> list[str]:
    """Visible files that are not whole notes (half-written, or not notes at all)."""
    problems = []
    for path in visible_files(root):
        rel = path.relative_to(root).as_posix()
        if path.suffix != ".md":
            problems.append(f"{rel}: a visible file that is not a note")
            continue
        try:
            parse_note(rel, path.read_bytes(), 0.0)
        except (NoteParseError, OSError) as exc:
            problems.append(f"{rel}: {exc}")
    return problems


def read_notes(root: Path, folder: str) -> dict[str, Note]:
    """The notes under ``root/folder`` by vault-relative path."""
    out = {}
    base = root / folder
    if not base.is_dir():
        return out
    for path in visible_files(base):
        if path.suffix == ".md":
            rel = path.relative_to(root).as_posix()
            out[rel] = parse_note(rel, path.read_bytes(), 0.0)
    return out


def unlink(value: Any) -> str:
    """``"[[Messages/x/y]]"`` -> ``"Messages/x/y.md"``."""
    text = str(value)
    assert text.startswith("[[") and text.endswith("]]"), text
    return text[2:-2] + ".md"


# -- the registry ---------------------------------------------------------------


def registry_rows(root: Path, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    db = sqlite3.connect(root / ".vaultgate" / "registry.db", timeout=30)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute(sql, args).fetchall()]
    finally:
        db.close()


@dataclass
class Audit:
    """What the vault and the registry say about every message, and what disagrees."""

    inbound: dict[str, Note]
    replies: dict[str, Note]
    threads: dict[str, Note]
    turns: list[dict[str, Any]]
    problems: list[str]

    @property
    def duplicated_replies(self) -> int:
        counts = Counter(str(r.get("in_reply_to")) for r in self.replies.values())
        return sum(n - 1 for n in counts.values() if n > 1)


def audit(root: Path, *, inbox: str = "Inbox") -> Audit:
    """Check exactly-once and vault/registry agreement over a stopped gateway's vault."""
    problems: list[str] = []
    inbound = read_notes(root, inbox)
    replies = read_notes(root, "Messages")
    threads = read_notes(root, "Threads")
    turns = registry_rows(root, "SELECT * FROM turns ORDER BY seq")
    by_id = {t["id"]: t for t in turns}

    # Every inbound note: done, one turn, one reply that exists and points back.
    replies_to: dict[str, list[str]] = {}
    for path, reply in replies.items():
        replies_to.setdefault(unlink(reply.get("in_reply_to")), []).append(path)
    for path, note in inbound.items():
        fm = note.frontmatter
        if fm.get("status") != "done":
            problems.append(f"{path}: status {fm.get('status')!r}, not done")
        turn = by_id.get(str(fm.get("id")))
        if turn is None:
            problems.append(f"{path}: id {fm.get('id')!r} is not a turn in the registry")
            continue
        if turn["note"] != path:
            problems.append(f"{path}: its turn {turn['id']} names note {turn['note']}")
        answers = replies_to.get(path, [])
        if len(answers) != 1:
            problems.append(f"{path}: {len(answers)} reply notes {answers}")
        if "reply" not in fm or unlink(fm["reply"]) != turn["reply_note"]:
            problems.append(f"{path}: reply {fm.get('reply')!r}, registry {turn['reply_note']}")
        for key in ("thread", "received_at", "finished_at"):
            if not fm.get(key):
                problems.append(f"{path}: gateway field {key!r} missing")

    # Every turn: done, finalized, its reply note and inbound note exist.
    for turn in turns:
        if (turn["status"], turn["finalized"]) != ("done", 1):
            problems.append(f"turn {turn['id']}: {turn['status']}, finalized={turn['finalized']}")
        if not turn["reply_note"] or turn["reply_note"] not in replies:
            problems.append(f"turn {turn['id']}: reply note {turn['reply_note']} is not there")
        if turn["note"] not in inbound:
            problems.append(f"turn {turn['id']}: inbound note {turn['note']} is not there")
    for path, reply in replies.items():
        if str(reply.get("id")) not in by_id:
            problems.append(f"{path}: a reply to no turn the registry knows")

    # Every thread: registry aggregates are the sums of its turns; the note shows them.
    for row in registry_rows(
        root,
        "SELECT t.*, COUNT(u.id) AS n, COALESCE(SUM(u.input_tokens), 0) AS i,"
        " COALESCE(SUM(u.output_tokens), 0) AS o, COALESCE(SUM(u.cost_usd), 0) AS c"
        " FROM threads t LEFT JOIN turns u ON u.thread_id = t.id AND u.status IN ('done','error')"
        " GROUP BY t.id",
    ):
        sums = (row["n"], row["i"], row["o"])
        kept = (row["turn_count"], row["input_tokens"], row["output_tokens"])
        if sums != kept or not math.isclose(row["c"], row["cost_usd"], abs_tol=1e-9):
            problems.append(
                f"thread {row['id']}: counters {kept} cost {row['cost_usd']} but its turns sum "
                f"to {sums} cost {row['c']}"
            )
        note = threads.get(row["note"])
        if note is None:
            problems.append(f"thread {row['id']}: note {row['note']} is not there")
            continue
        fm = note.frontmatter
        shown = (fm.get("turn_count"), fm.get("input_tokens"), fm.get("output_tokens"))
        if shown != kept or not math.isclose(
            float(fm.get("cost_usd") or 0), row["cost_usd"], abs_tol=1e-6
        ):
            problems.append(f"{row['note']}: shows {shown} {fm.get('cost_usd')}, registry {kept}")
        if fm.get("status") != row["status"]:
            problems.append(f"{row['note']}: status {fm.get('status')!r}, registry {row['status']}")
        # Its turns' sections: in the thread note or its archive parts, each exactly once.
        parts = sorted(p for p in threads if p.startswith(row["note"].removesuffix(".md") + "/"))
        bodies = [threads[p].body for p in parts] + [note.body]
        markers = [m for body in bodies for m in re.findall(r"<!-- vaultgate:turn (\S+) -->", body)]
        if len(markers) != row["turn_count"] or len(set(markers)) != len(markers):
            problems.append(
                f"{row['note']}: {len(markers)} turn sections ({len(set(markers))} different, "
                f"{len(parts)} archive parts) for {row['n']} turns"
            )
    return Audit(inbound, replies, threads, turns, problems)


# -- processes ------------------------------------------------------------------


def vm_kb(pid: int | str = "self") -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in kB, from /proc."""
    out = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank percentile (no interpolation: a p99 is a latency someone saw)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]
