"""Printing listings: ``-o table`` (fits 80 columns), ``-o json``, ``-o jsonl``.

A listing is a list of flat dicts plus the columns a table shows. JSON forms
print every field; the table shows the chosen columns and shrinks the widest
ones (with an ellipsis) until a row fits the terminal, 80 columns when it is
not one.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

Format = Literal["table", "json", "jsonl"]
FORMATS: tuple[Format, ...] = ("table", "json", "jsonl")


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}".rstrip("0").rstrip(".") if value else "0"
    if isinstance(value, list | tuple):
        return ",".join(cell(v) for v in value)
    return str(value).replace("\n", " ")


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], width: int = 80) -> str:
    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    gap = 2
    while sum(widths) + gap * (len(widths) - 1) > width:
        widest = max(range(len(widths)), key=lambda i: widths[i])
        if widths[widest] <= 6:
            break
        widths[widest] -= 1

    def fit(text: str, w: int) -> str:
        return text if len(text) <= w else text[: max(w - 1, 0)] + "…"

    lines = ["  ".join(fit(c.upper(), w).ljust(w) for c, w in zip(columns, widths, strict=True))]
    for row in cells:
        lines.append("  ".join(fit(v, w).ljust(w) for v, w in zip(row, widths, strict=True)))
    return "\n".join(line.rstrip() for line in lines)


def render(rows: Iterable[Mapping[str, Any]], columns: Sequence[str], fmt: Format) -> str:
    items = list(rows)
    if fmt == "json":
        return json.dumps(items, indent=2, default=str)
    if fmt == "jsonl":
        return "\n".join(json.dumps(item, default=str) for item in items)
    if not items:
        return "(none)"
    return table(items, columns, terminal_width())


def render_one(item: Mapping[str, Any], fmt: Format) -> str:
    if fmt in ("json", "jsonl"):
        return json.dumps(item, indent=2 if fmt == "json" else None, default=str)
    width = max((len(k) for k in item), default=0)
    return "\n".join(f"{k.ljust(width)}  {cell(v)}" for k, v in item.items())


def terminal_width() -> int:
    return min(shutil.get_terminal_size((80, 24)).columns, 200)
