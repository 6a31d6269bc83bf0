"""Find and signal a process's descendants, read from /proc.

A process group does not hold everything a command starts: bwrap's ``--new-session`` moves the
confined command into a session of its own, and any program may call ``setsid``. Walking the
parent links in /proc finds those too. A pid is only a number and numbers get reused, so each
process is remembered with its start time and signalled only while both still match.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

ProcessKey = tuple[int, int]
"""(pid, start time in clock ticks since boot): one process, not just a pid number."""

_PROC = Path("/proc")


def descendants(pid: int) -> set[ProcessKey]:
    """Every living descendant of ``pid`` (children, their children, ...), not ``pid`` itself."""
    children: dict[int, list[ProcessKey]] = {}
    for child, (parent, start) in _process_table().items():
        children.setdefault(parent, []).append((child, start))
    found: set[ProcessKey] = set()
    pending = [pid]
    while pending:
        for key in children.get(pending.pop(), []):
            if key not in found:
                found.add(key)
                pending.append(key[0])
    return found


def signal_processes(keys: set[ProcessKey], sig: signal.Signals) -> None:
    """Send ``sig`` to each process still alive under the same identity; skip the gone."""
    for pid, start in keys:
        if _stat(pid) == ("alive", start):
            with contextlib.suppress(ProcessLookupError):  # it exited just now
                os.kill(pid, sig)


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to a process group, if any member of it is left."""
    with contextlib.suppress(ProcessLookupError):  # the group is empty
        os.killpg(pgid, sig)


def is_alive(key: ProcessKey) -> bool:
    """Whether this very process still runs (a zombie counts as gone: it runs nothing)."""
    return _stat(key[0]) == ("alive", key[1])


def _process_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, start time) for every living process."""
    table: dict[int, tuple[int, int]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None and fields[0] != "Z":
            table[int(entry.name)] = (int(fields[1]), int(fields[19]))
    return table


def _stat(pid: int) -> tuple[str, int] | None:
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return ("zombie" if fields[0] == "Z" else "alive", int(fields[19]))


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state, ppid, ...)."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:  # exited between listing and reading
        return None
    # The command name is in parentheses and may itself contain spaces and parentheses.
    return text[text.rindex(")") + 2 :].split()
