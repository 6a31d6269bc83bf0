"""The ``Note`` model and the one place raw bytes become a note and back.

Parsing is strict about what it refuses (over-size, binary, non-UTF-8, broken
or non-mapping YAML; each a :class:`NoteParseError` naming the path) and
lenient about what it keeps: unknown keys, key order and the body survive
byte for byte. YAML goes through python-frontmatter's handler (libyaml's safe
loader when present); the split into frontmatter and body is done here so the
body keeps its exact leading whitespace, which the library would strip.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import yaml
from frontmatter.default_handlers import YAMLHandler
from pydantic import BaseModel, ConfigDict

from vault_adapter.errors import NoteParseError

DEFAULT_MAX_NOTE_BYTES = 5 * 1024 * 1024

_HANDLER = YAMLHandler()
_OPEN = re.compile(r"\A---[ \t]*\r?\n")
_CLOSE = re.compile(r"^(?:---|\.\.\.)[ \t]*(?:\r?\n|\Z)", re.MULTILINE)
_BASE_DUMPER: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _NoteDumper(_BASE_DUMPER):  # type: ignore[valid-type,misc]
    """Safe dumper that writes multi-line strings as readable ``|`` blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # A block scalar ending in blank lines needs '|+', after which YAML writes a
    # '...' document end, which would close the frontmatter early: quote those.
    style = "|" if "\n" in value.rstrip("\n") and not value.endswith("\n\n") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


class _TopLevel(dict[str, Any]):
    """Marks the frontmatter mapping itself, which is always written in block style."""


def _represent_top(dumper: yaml.SafeDumper, value: _TopLevel) -> yaml.MappingNode:
    return dumper.represent_mapping("tag:yaml.org,2002:map", value, flow_style=False)


_NoteDumper.add_representer(str, _represent_str)
_NoteDumper.add_representer(_TopLevel, _represent_top)


class Note(BaseModel):
    """One Markdown note: where it is, its frontmatter (order kept), its body."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    path: str
    """Vault-relative POSIX path, e.g. ``Inbox/hello.md``."""
    frontmatter: dict[str, Any]
    body: str
    tags: tuple[str, ...]
    """Normalised: no ``#``, no blanks, no duplicates, order kept."""
    mtime: float
    content_hash: str
    """blake2b of the file's bytes; equal hashes mean equal files."""

    def get(self, key: str, default: Any = None) -> Any:
        return self.frontmatter.get(key, default)

    def has_tag(self, tag: str) -> bool:
        wanted = normalize_tag(tag).casefold()
        return any(t.casefold() == wanted for t in self.tags)

    @property
    def stem(self) -> str:
        name = self.path.rsplit("/", 1)[-1]
        return name[:-3] if name.endswith(".md") else name

    @property
    def folder(self) -> str:
        return self.path.rsplit("/", 1)[0] if "/" in self.path else ""


def content_hash(raw: bytes) -> str:
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


def normalize_tag(tag: str) -> str:
    return tag.strip().lstrip("#").strip()


def normalize_tags(value: Any) -> tuple[str, ...]:
    """Tags from a frontmatter value: a list, or a string split on commas and spaces."""
    if value is None:
        return ()
    items: Iterable[Any]
    if isinstance(value, str):
        items = re.split(r"[,\s]+", value)
    elif isinstance(value, list | tuple | set):
        items = value
    else:
        items = [value]
    seen: dict[str, None] = {}
    for item in items:
        if item is None:
            continue
        tag = normalize_tag(str(item))
        if tag:
            seen.setdefault(tag, None)
    return tuple(seen)


def split_frontmatter(text: str, path: str) -> tuple[str | None, str]:
    """``(yaml_text, body)``; ``yaml_text`` is None when the note has no frontmatter."""
    opening = _OPEN.match(text)
    if opening is None:
        return None, text
    closing = _CLOSE.search(text, opening.end())
    if closing is None:
        raise NoteParseError(path, "frontmatter opens with '---' but has no closing '---' line")
    return text[opening.end() : closing.start()], text[closing.end() :]


MAX_NESTING = 100
"""Deepest nesting of lists and mappings accepted in frontmatter. libyaml builds
nested nodes by recursing on the C stack, so a note nesting thousands deep
(``- - - - ...``, ``[[[[...``) would crash the process instead of raising."""


def _could_nest_deeper(yaml_text: str, limit: int) -> bool:
    """Cheap bound: every level of nesting costs a line, a ``[``/``{``, or a ``- ``/``? ``.

    Ordinary frontmatter stays far below the limit and is never walked twice.
    """
    bound = (
        yaml_text.count("\n")
        + yaml_text.count("[")
        + yaml_text.count("{")
        + yaml_text.count("- ")
        + yaml_text.count("? ")
    )
    return bound > limit


def _too_deep(yaml_text: str) -> bool:
    # libyaml's event parser keeps its own stack (no recursion): walk the events.
    depth = 0
    for event in yaml.parse(yaml_text, Loader=_LOADER):
        if isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            depth += 1
            if depth > MAX_NESTING:
                return True
        elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            depth -= 1
    return False


class _Recent:
    """The last few frontmatters parsed, by their exact text.

    A note the gateway stamps is read again for its next stamp (queued, running,
    done; a thread note every turn), and its frontmatter is the text the last
    write produced, which that write parsed already. Entries are handed out as
    copies, so no caller shares a mutable value with another."""

    def __init__(self, size: int = 512, longest: int = 16_384) -> None:
        self._size = size
        self._longest = longest
        self._lock = threading.Lock()
        self._items: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def get(self, text: str) -> dict[str, Any] | None:
        with self._lock:
            found = self._items.get(text)
            if found is None:
                return None
            self._items.move_to_end(text)
        copied: dict[str, Any] = _copy(found)
        return copied

    def put(self, text: str, data: dict[str, Any]) -> None:
        if len(text) > self._longest:
            return
        kept = _copy(data)
        with self._lock:
            self._items[text] = kept
            self._items.move_to_end(text)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


def _copy(value: Any) -> Any:
    if type(value) is dict:
        return {k: _copy(v) for k, v in value.items()}
    if type(value) is list:
        return [_copy(v) for v in value]
    if type(value) is set:
        return set(value)
    return value  # the scalars YAML makes are immutable (str, int, float, bool, None, dates)


_RECENT = _Recent()


def load_yaml(yaml_text: str, path: str) -> dict[str, Any]:
    """Parse frontmatter YAML into a dict with string keys, in file order."""
    known = _RECENT.get(yaml_text)
    if known is not None:
        return known
    data = _load_yaml(yaml_text, path)
    _RECENT.put(yaml_text, data)
    return data


def remember_yaml(yaml_text: str, data: dict[str, Any]) -> None:
    """Record what ``yaml_text`` reads as, known without parsing it (text we rendered
    from ``data`` in a way that reads back exactly), so the next read need not parse."""
    _RECENT.put(yaml_text, data)


def _load_yaml(yaml_text: str, path: str) -> dict[str, Any]:
    try:
        if _could_nest_deeper(yaml_text, MAX_NESTING) and _too_deep(yaml_text):
            raise NoteParseError(
                path, f"frontmatter nests lists or mappings more than {MAX_NESTING} deep"
            )
        data = _HANDLER.load(yaml_text)
    except NoteParseError:
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" (frontmatter line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise NoteParseError(path, f"broken YAML frontmatter: {exc.problem}{where}") from exc
    except Exception as exc:  # libyaml and constructors raise ValueError, RecursionError...
        raise NoteParseError(path, f"broken YAML frontmatter: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise NoteParseError(path, f"frontmatter must be 'key: value' lines, not a {kind}")
    return {k if isinstance(k, str) else str(k): v for k, v in data.items()}


def parse_note(
    path: str, raw: bytes, mtime: float, *, max_bytes: int = DEFAULT_MAX_NOTE_BYTES
) -> Note:
    """Turn a file's bytes into a :class:`Note`, or raise :class:`NoteParseError`."""
    meta, body = parse_parts(path, raw, max_bytes=max_bytes)
    return Note(
        path=path,
        frontmatter=meta,
        body=body,
        tags=normalize_tags(meta.get("tags")),
        mtime=mtime,
        content_hash=content_hash(raw),
    )


def parse_parts(
    path: str, raw: bytes, *, max_bytes: int = DEFAULT_MAX_NOTE_BYTES
) -> tuple[dict[str, Any], str]:
    """``(frontmatter, body)`` of a file's bytes, refused exactly as :func:`parse_note`
    refuses them; for callers that need no :class:`Note` (the start-up scan)."""
    if len(raw) > max_bytes:
        raise NoteParseError(
            path, f"note is {len(raw)} bytes, over the limit of {max_bytes} (max_note_bytes)"
        )
    if b"\x00" in raw:
        raise NoteParseError(path, "binary file (contains NUL bytes), not a Markdown note")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise NoteParseError(
            path, f"not UTF-8 text (invalid byte 0x{raw[exc.start]:02x} at offset {exc.start})"
        ) from exc
    yaml_text, body = split_frontmatter(text, path)
    meta = load_yaml(yaml_text, path) if yaml_text is not None else {}
    return meta, body


_RESOLVE: Callable[[type[yaml.Node], str, tuple[bool, bool]], str] = (
    yaml.resolver.Resolver().resolve
)
_STR_TAG = "tag:yaml.org,2002:str"
# Strings the dumper writes plain in a block mapping (if YAML reads them back as
# strings): a conservative subset, no indicator first, no ': ', no trailing ':'.
_PLAIN_SCALAR = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./+=~()$^;,@: -]*\Z")


def render_scalar(value: str) -> str | None:
    """A one-line string as the dumper writes it as a mapping value (plain or
    'single-quoted'), without running it; None for a string this does not decide
    (the dumper does). What it returns always reads back as exactly ``value``."""
    if not value or len(value) > 1024 or value[-1] == " " or not value.isprintable():
        return None
    if _PLAIN_SCALAR.match(value) and ": " not in value and value[-1] != ":":
        if _RESOLVE(yaml.ScalarNode, value, (True, False)) == _STR_TAG:
            return value
    elif value[0] not in "[{":
        return None  # plain or quoted: left to the dumper
    # Plain would read back as something else (a date, a number, a flow list):
    # single quotes, in which nothing but a quote needs escaping.
    return None if "'" in value or value[0] == " " else f"'{value}'"


def dump_yaml(data: Mapping[str, Any]) -> str:
    """YAML for frontmatter: insertion order, unicode kept, short lists inline."""
    if not data:
        return ""
    text: str = yaml.dump(
        _TopLevel(data),
        Dumper=_NoteDumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=None,
        width=1 << 30,
    )
    return text


def render_note(frontmatter: Mapping[str, Any], body: str) -> str:
    """The text of a note; no frontmatter block when there are no fields."""
    if not frontmatter:
        return body
    return f"---\n{dump_yaml(frontmatter)}---\n{body}"
