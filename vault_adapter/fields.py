"""Change named frontmatter fields in a note's text and leave everything else alone.

People keep comments, blank lines, quoting styles and their own key order in
frontmatter; re-dumping the whole YAML would flatten all of that. So fields
are edited as text: each top-level key owns a block of lines (its line plus
the indented or ``- `` lines under it), a changed field's block is replaced in
place, a new field is appended at the end, a removed field's block is cut.
The result is parsed again and compared with the intended mapping; if the
text edit did not produce exactly that (a flow-style mapping, an unusual
layout), the whole frontmatter is re-dumped instead, which keeps values and
order but not comments. The body is never touched.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from vault_adapter.note import dump_yaml, load_yaml, split_frontmatter

_KEY_LINE = re.compile(
    r"""^(?:"(?P<dq>(?:[^"\\]|\\.)*)"    # "double quoted key"
         |'(?P<sq>(?:[^']|'')*)'          # 'single quoted key'
         |(?P<plain>[^\s#'"\-?:][^:#]*?   # plain key
         |-[^\s:#][^:#]*?))              # plain key starting with '-' (not a list item)
        [\ \t]*:(?:[\ \t]|\r?$)""",
    re.VERBOSE,
)


def _key_of(line: str) -> str | None:
    match = _KEY_LINE.match(line)
    if match is None:
        return None
    if match.group("dq") is not None:
        return match.group("dq").replace('\\"', '"').replace("\\\\", "\\")
    if match.group("sq") is not None:
        return match.group("sq").replace("''", "'")
    return match.group("plain")


def _continues_block(line: str) -> bool:
    stripped = line.rstrip("\r\n")
    return stripped == "" or stripped[0] in " \t" or stripped == "-" or stripped.startswith("- ")


def _blocks(lines: list[str]) -> list[tuple[str | None, int, int]]:
    """``(key, start, end)`` spans covering ``lines``; key None for comments and strays."""
    spans: list[tuple[str | None, int, int]] = []
    i = 0
    while i < len(lines):
        key = _key_of(lines[i])
        j = i + 1
        if key is not None:
            while j < len(lines) and _continues_block(lines[j]):
                j += 1
            # Trailing blank lines separate blocks; they do not belong to this key.
            while j - 1 > i and lines[j - 1].strip() == "":
                j -= 1
        spans.append((key, i, j))
        i = j
    return spans


def _rendered(key: str, value: Any, newline: str) -> list[str]:
    text = dump_yaml({key: value})
    return [line + newline for line in text.splitlines()]


def apply_fields(
    text: str, fields: Mapping[str, Any], remove: Iterable[str] = (), *, path: str = ""
) -> str:
    """``text`` with ``fields`` set and ``remove`` keys dropped from its frontmatter.

    Raises :class:`~vault_adapter.errors.NoteParseError` when the existing
    frontmatter cannot be parsed: fields are never stamped onto a note whose
    YAML would then mean something else.
    """
    removing = [k for k in remove if k not in fields]
    found, body = split_frontmatter(text, path)
    if found is None:
        if not fields:
            return text
        return f"---\n{dump_yaml(fields)}---\n{text}"

    yaml_text: str = found
    before = load_yaml(yaml_text, path)
    expected = dict(before)
    for key in removing:
        expected.pop(key, None)
    expected.update(fields)

    newline = "\r\n" if "\r\n" in text[: text.find("\n") + 1] else "\n"
    lines = yaml_text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += newline
    out: list[str] = []
    placed: set[str] = set()
    for block_key, start, end in _blocks(lines):
        if block_key is not None and block_key in fields:
            if block_key not in placed:
                out.extend(_rendered(block_key, fields[block_key], newline))
                placed.add(block_key)
            continue
        if block_key is not None and block_key in removing:
            continue
        out.extend(lines[start:end])
    for key, value in fields.items():
        if key not in placed:
            out.extend(_rendered(key, value, newline))
    new_yaml = "".join(out)

    try:
        ok = load_yaml(new_yaml, path) == expected
    except Exception:
        ok = False
    if not ok:
        new_yaml = dump_yaml(expected).replace("\n", newline)

    head_end = text.index("\n") + 1
    close = text[len(text) - len(body) - _closing_len(text, body) : len(text) - len(body)]
    return text[:head_end] + new_yaml + close + body


def _closing_len(text: str, body: str) -> int:
    """Length of the closing delimiter line that sits just before ``body``."""
    head = text[: len(text) - len(body)]
    start = max(head.rfind("\n", 0, len(head) - 1) + 1, 0)
    return len(head) - start
