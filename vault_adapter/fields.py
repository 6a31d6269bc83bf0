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

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from vault_adapter.note import (
    dump_yaml,
    load_yaml,
    remember_yaml,
    render_scalar,
    split_frontmatter,
)

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


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_PLAIN_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_/-]*\Z")
# Plain words YAML would read as something other than a string.
_RESERVED = frozenset(["true", "false", "yes", "no", "on", "off", "null", "y", "n"])


def _plain_word(value: str) -> bool:
    return bool(_PLAIN_WORD.match(value)) and value.casefold() not in _RESERVED


def _render_simple(key: str, value: Any) -> str | None:
    """``key: value`` for the values the gateway stamps most (one-line strings, links,
    times, numbers, flat lists of words) exactly as the YAML dumper writes them,
    without running it; None for anything else. (Checked against the dumper in the
    tests.)"""
    if not _PLAIN_KEY.match(key) or key.casefold() in _RESERVED:
        return None
    if value is None:
        return f"{key}: null"
    if isinstance(value, bool):
        return f"{key}: {'true' if value else 'false'}"
    if isinstance(value, int):
        return f"{key}: {value}"
    if isinstance(value, float):
        return f"{key}: {_float(value)}" if math.isfinite(value) else None
    if isinstance(value, str):
        scalar = render_scalar(value)
        return None if scalar is None else f"{key}: {scalar}"
    if (
        isinstance(value, list)
        and value
        and all(isinstance(item, str) and _plain_word(item) for item in value)
    ):
        return f"{key}: [{', '.join(value)}]"
    return None


def _float(value: float) -> str:
    """A finite float as the YAML dumper writes it (``repr``, with ``.0`` before an
    exponent that has no point, so it reads back as a float)."""
    text = repr(value).lower()
    if "." not in text and "e" in text:
        text = text.replace("e", ".0e", 1)
    return text


def _rendered(key: str, value: Any, newline: str) -> list[str]:
    simple = _render_simple(key, value)
    if simple is not None:
        return [simple + newline]
    text = dump_yaml({key: value})
    return [line + newline for line in text.splitlines()]


def render_frontmatter(fields: Mapping[str, Any]) -> str | None:
    """The YAML :func:`dump_yaml` writes for ``fields``, when every field has a quick
    rendering (which reads back exactly as the value); None otherwise."""
    lines = []
    for key, value in fields.items():
        line = _render_simple(key, value)
        if line is None:
            return None
        lines.append(line + "\n")
    return "".join(lines)


def _plain_layout(
    lines: list[str], spans: list[tuple[str | None, int, int]], before: Mapping[str, Any]
) -> bool:
    """Whether replacing, cutting and appending whole top-level blocks of this YAML
    is sure to change exactly those keys, so the result need not be parsed to check.

    True for a block mapping whose every key is written plainly, once, and reads
    back as that key (no ``yes:`` or ``1:``), with only comments and blank lines
    between blocks, and no anchors or aliases (which could tie one block to
    another). Anything else (flow style, odd keys) is checked by parsing."""
    keys: list[str] = []
    for key, start, end in spans:
        if key is None:
            if any(line.strip() and not line.startswith("#") for line in lines[start:end]):
                return False
        elif not _PLAIN_KEY.match(key):
            return False
        else:
            keys.append(key)
    if len(keys) != len(before) or set(keys) != set(before):
        return False
    return not any("&" in line or "*" in line for line in lines)


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (``1``, ``1.0`` and ``True`` differ)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def apply_fields(
    text: str, fields: Mapping[str, Any], remove: Iterable[str] = (), *, path: str = ""
) -> str:
    """``text`` with ``fields`` set and ``remove`` keys dropped from its frontmatter.

    Raises :class:`~vault_adapter.errors.NoteParseError` when the existing
    frontmatter cannot be parsed: fields are never stamped onto a note whose
    YAML would then mean something else.
    """
    return edit_fields(text, fields, remove, path=path).text


class Edited(NamedTuple):
    text: str
    """The whole new text of the note."""
    frontmatter: dict[str, Any]
    """What its frontmatter now reads as (checked by parsing it)."""
    body: str


def edit_fields(
    text: str,
    fields: Mapping[str, Any],
    remove: Iterable[str] = (),
    *,
    path: str = "",
    before: Mapping[str, Any] | None = None,
) -> Edited:
    """:func:`apply_fields`, also returning the frontmatter it produced.

    ``before`` is the frontmatter ``text`` already parsed to, if the caller has
    it (it saves parsing it again). Fields whose value is already there are
    left as they are written."""
    removing = [k for k in remove if k not in fields]
    found, body = split_frontmatter(text, path)
    if found is None:
        if not fields:
            return Edited(text, {}, text)
        return Edited(f"---\n{dump_yaml(fields)}---\n{text}", dict(fields), text)

    yaml_text: str = found
    if before is None:
        before = load_yaml(yaml_text, path)
    changing = {k: v for k, v in fields.items() if k not in before or not _same(before[k], v)}
    removing = [k for k in removing if k in before]
    if not changing and not removing:
        return Edited(text, dict(before), body)
    expected = dict(before)
    for key in removing:
        expected.pop(key, None)
    expected.update(changing)

    newline = "\r\n" if "\r\n" in text[: text.find("\n") + 1] else "\n"
    lines = yaml_text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += newline
    out: list[str] = []
    placed: set[str] = set()
    spans = _blocks(lines)
    for block_key, start, end in spans:
        if block_key is not None and block_key in changing:
            if block_key not in placed:
                out.extend(_rendered(block_key, changing[block_key], newline))
                placed.add(block_key)
            continue
        if block_key is not None and block_key in removing:
            continue
        out.extend(lines[start:end])
    for key, value in changing.items():
        if key not in placed:
            out.extend(_rendered(key, value, newline))
    new_yaml = "".join(out)

    if all(_PLAIN_KEY.match(k) for k in changing) and _plain_layout(lines, spans, before):
        remember_yaml(new_yaml, expected)  # reads back as expected: no need to parse it
    else:
        try:
            ok = load_yaml(new_yaml, path) == expected
        except Exception:
            ok = False
        if not ok:
            new_yaml = dump_yaml(expected).replace("\n", newline)

    head_end = text.index("\n") + 1
    close = text[len(text) - len(body) - _closing_len(text, body) : len(text) - len(body)]
    return Edited(text[:head_end] + new_yaml + close + body, expected, body)


def _closing_len(text: str, body: str) -> int:
    """Length of the closing delimiter line that sits just before ``body``."""
    head = text[: len(text) - len(body)]
    start = max(head.rfind("\n", 0, len(head) - 1) + 1, 0)
    return len(head) - start
