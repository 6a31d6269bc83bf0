"""Finding processes by their command line, to prove nothing outlived a turn."""

from __future__ import annotations

import os


def processes_mentioning(needle: str) -> list[int]:
    """Pids of live processes whose command line contains ``needle``."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as fh:
                if needle.encode() in fh.read():
                    found.append(int(entry.name))
        except OSError:
            continue
    return found
