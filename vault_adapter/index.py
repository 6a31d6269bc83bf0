"""An in-memory index of every note's tags and a few chosen fields.

The gateway asks "which notes are agent definitions?" and "which inbound
notes are not finished?" all the time; answering from memory means no query
ever reads every note. Entries also keep each note's content hash, which is
how the watcher recognises a write it has already seen (its own, or one the
scan read) without relying on timing. Reverse maps from tag and from field
value keep lookups proportional to the answer, not to the vault.

Every turn adds notes for good, so the index grows with the gateway's
history and is kept small per note: the hash is an int, the indexed fields
one tuple of values in :attr:`NoteIndex.fields` order, strings and tuples
equal to ones another note holds are that note's objects (found through the
reverse maps, and for tag lists a small bounded cache), and a reverse-map
bucket is the path itself while one note has the value (an ``id``), a tuple
while a few do, and a dict's keys only for many. A note written again (each
status stamp) only moves between the buckets whose key changed, so the big
buckets are not emptied and refilled, which would grow their tables.

Writers are the adapter's worker threads and the watcher on the event loop,
so every method takes one lock; each call is a few dict operations.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Collection, Hashable, Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Final

from vault_adapter.note import Note


@dataclass(slots=True, frozen=True)
class IndexEntry:
    """What the index remembers of one note."""

    content_hash: str
    tags: tuple[str, ...]
    fields: tuple[tuple[str, Any], ...]
    broken: bool = False

    def field(self, key: str, default: Any = None) -> Any:
        for name, value in self.fields:
            if name == key:
                return value
        return default


class _Absent:
    """The value of an indexed field a note does not have (``None`` is a value)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<absent>"


_ABSENT: Final = _Absent()

_ATOMIC: Final = frozenset({str, int, float, bool, type(None), _Absent, date, datetime})
"""Immutable types: two notes' values of one of these, equal and of the same type, can be
one object (``1 == 1.0 == True``, so the type must match too)."""

_RECENT_TAGS = 1024
"""How many distinct tag lists the index remembers to share without looking them up."""

_FEW = 8
"""A bucket of up to this many paths is a tuple; one more makes it a dict."""

_Bucket = str | tuple[str, ...] | dict[str, None]
"""The paths with one tag or field value: one path, a few, or many. Many are the keys of
a dict, which costs about half what a set of the same strings does (30 bytes a path
against 60 between 10,000 and 50,000 paths: a small set grows its table fourfold)."""


def _digest(content_hash: str) -> int | str:
    """A blake2b hex digest as an int (48 bytes, not 81); any other string as it is."""
    try:
        raw = bytes.fromhex(content_hash)
    except ValueError:
        return content_hash
    if len(raw) == 16 and raw.hex() == content_hash:
        return int.from_bytes(raw, "big")
    return content_hash


def _hex(digest: int | str) -> str:
    return digest.to_bytes(16, "big").hex() if isinstance(digest, int) else digest


def _add(buckets: dict[Any, _Bucket], key: Any, path: str) -> None:
    """Put ``path`` (not there yet) in the bucket for ``key``; TypeError if it is unhashable."""
    bucket = buckets.get(key)
    if isinstance(bucket, dict):
        bucket[path] = None
    elif bucket is None:
        buckets[key] = path
    elif isinstance(bucket, str):
        buckets[key] = (bucket, path)
    elif len(bucket) < _FEW:
        buckets[key] = (*bucket, path)
    else:
        buckets[key] = dict.fromkeys((*bucket, path))


def _drop(buckets: dict[Any, _Bucket], key: Any, path: str) -> None:
    """Take ``path`` out of the bucket for ``key``, and the bucket once it is empty."""
    bucket = buckets.get(key)
    if isinstance(bucket, dict):
        bucket.pop(path, None)
        if len(bucket) > _FEW // 2:
            return
        # Deleting never shrinks a dict's table: one that has mostly emptied out goes.
        rest = tuple(bucket)
    elif isinstance(bucket, tuple):
        rest = tuple(p for p in bucket if p != path)
    elif bucket is None:
        return
    else:
        rest = () if bucket == path else (bucket,)
    if not rest:
        del buckets[key]
    else:
        buckets[key] = rest[0] if len(rest) == 1 else rest


def _folded(tags: tuple[str, ...]) -> Collection[str]:
    """The tags as the reverse map keys them, each once (``A`` and ``a`` are one tag)."""
    if len(tags) == 1:
        return (tags[0].casefold(),)
    return {tag.casefold() for tag in tags}


def _members(bucket: _Bucket | None) -> Iterable[str]:
    if bucket is None:
        return ()
    return (bucket,) if isinstance(bucket, str) else bucket


def _one(bucket: _Bucket) -> str:
    """Some path in ``bucket``. From a dict, the newest: deleted keys leave holes that
    iteration steps over, and the newest end is where paths are added back."""
    if isinstance(bucket, str):
        return bucket
    return bucket[-1] if isinstance(bucket, tuple) else next(reversed(bucket))


class _Record:
    """One note in the index. ``values`` follows ``NoteIndex.fields`` (``()`` when the note
    has none of them); it is None for a note that does not parse. ``path`` is the very
    string the maps hold, so a note written again adds no copy of it (four slots fit the
    same 64 bytes as three)."""

    __slots__ = ("digest", "path", "tags", "values")

    def __init__(
        self, path: str, digest: int | str, tags: tuple[str, ...], values: tuple[Any, ...] | None
    ) -> None:
        self.path = path
        self.digest = digest
        self.tags = tags
        self.values = values


class NoteIndex:
    """Tags and selected frontmatter fields of every note, keyed by vault path."""

    def __init__(self, fields: Iterable[str] = ()) -> None:
        self.fields = tuple(dict.fromkeys(fields))
        self._slot = {key: i for i, key in enumerate(self.fields)}
        self._lock = threading.Lock()
        self._entries: dict[str, _Record] = {}
        self._by_tag: dict[str, _Bucket] = {}
        self._recent_tags: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._by_value: tuple[dict[Hashable, _Bucket], ...] = tuple({} for _ in self.fields)
        self._unhashable: tuple[set[str], ...] = tuple(set() for _ in self.fields)
        self.ready = False
        """True once a full scan has filled the index."""

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, path: str) -> bool:
        return path in self._entries

    def get(self, path: str) -> IndexEntry | None:
        record = self._entries.get(path)
        if record is None:
            return None
        if record.values is None:
            return IndexEntry(_hex(record.digest), (), (), broken=True)
        fields = tuple(
            (key, value)
            for key, value in zip(self.fields, record.values or (), strict=False)
            if value is not _ABSENT
        )
        return IndexEntry(_hex(record.digest), record.tags, fields)

    def hash_of(self, path: str) -> str | None:
        record = self._entries.get(path)
        return _hex(record.digest) if record else None

    def put(self, note: Note) -> None:
        values: tuple[Any, ...] = ()
        if not note.frontmatter.keys().isdisjoint(self.fields):
            get = note.frontmatter.get
            values = tuple([get(key, _ABSENT) for key in self.fields])
        self._store(note.path, _digest(note.content_hash), note.tags, values)

    def put_broken(self, path: str, content_hash: str) -> None:
        """Remember a file that does not parse, so an unchanged copy is not reported again."""
        self._store(path, _digest(content_hash), (), None)

    def remove(self, path: str) -> None:
        with self._lock:
            self._unlink(path)

    def paths(self) -> list[str]:
        with self._lock:
            return list(self._entries)

    def by_tag(self, tag: str) -> list[str]:
        with self._lock:
            return sorted(_members(self._by_tag.get(tag.lstrip("#").casefold())))

    def by_field(self, key: str, value: Any) -> list[str]:
        slot = self._slot.get(key)
        if slot is None:
            return []
        with self._lock:
            found: set[str] = set()
            try:
                found.update(_members(self._by_value[slot].get(value)))
            except TypeError:  # a list, a mapping, a tuple holding one
                pass
            for path in self._unhashable[slot]:
                values = self._entries[path].values
                if values and values[slot] == value:
                    found.add(path)
            return sorted(found)

    def under(self, folder: str) -> list[str]:
        prefix = folder.rstrip("/") + "/" if folder else ""
        with self._lock:
            return sorted(p for p in self._entries if p.startswith(prefix))

    def _store(
        self,
        path: str,
        digest: int | str,
        tags: tuple[str, ...],
        values: tuple[Any, ...] | None,
    ) -> None:
        with self._lock:
            # Shared before the old entry goes, so a note written again keeps its objects.
            tags = self._shared_tags(tags)
            if values:
                values = self._shared_values(values)
            old = self._entries.get(path)
            if old is None:
                self._entries[path] = _Record(path, digest, tags, values)
                self._relink(path, (), tags, (), values)
            else:
                # Only the maps for what changed are touched: a status change moves
                # the note between two buckets and leaves the big ones alone.
                self._entries[path] = _Record(old.path, digest, tags, values)
                self._relink(old.path, old.tags, tags, old.values, values)

    def _unlink(self, path: str) -> None:
        old = self._entries.pop(path, None)
        if old is not None:
            self._relink(old.path, old.tags, (), old.values, None)

    def _relink(
        self,
        path: str,
        old_tags: tuple[str, ...],
        tags: tuple[str, ...],
        old_values: tuple[Any, ...] | None,
        values: tuple[Any, ...] | None,
    ) -> None:
        """Move ``path`` from the buckets of its old tags and values to those of its new."""
        if tags is not old_tags:
            before, after = _folded(old_tags), _folded(tags)
            for folded in before:
                if folded not in after:
                    _drop(self._by_tag, folded, path)
            for folded in after:
                if folded not in before:
                    _add(self._by_tag, folded, path)
        if not old_values and not values:
            return
        for slot in range(len(self.fields)):
            was = old_values[slot] if old_values else _ABSENT
            now = values[slot] if values else _ABSENT
            if was is now:
                continue
            if was is not _ABSENT:
                try:
                    _drop(self._by_value[slot], was, path)
                except TypeError:
                    self._unhashable[slot].discard(path)
            if now is not _ABSENT:
                try:
                    _add(self._by_value[slot], now, path)
                except TypeError:
                    self._unhashable[slot].add(path)

    def _shared_tags(self, tags: tuple[str, ...]) -> tuple[str, ...]:
        """``tags`` as other notes hold them: one's equal tuple, else their strings.

        Most notes repeat a tag list another has (``agent/message``), so the last
        :data:`_RECENT_TAGS` distinct lists are remembered to skip the look-ups; that
        bounded cache may keep a list no note has any more, a few bytes each."""
        recent = self._recent_tags.get(tags)
        if recent is not None:
            return recent
        shared: tuple[str, ...] | None = None
        found = []
        for tag in tags:
            tagged = self._by_tag.get(tag.casefold())
            if tagged is not None:
                other = self._entries[_one(tagged)].tags
                if other == tags:
                    shared = other
                    break
                with contextlib.suppress(ValueError):  # only a case-folded match
                    tag = other[other.index(tag)]
            found.append(tag)
        if shared is None:
            shared = tuple(found)
        if len(self._recent_tags) >= _RECENT_TAGS:
            self._recent_tags.clear()
        self._recent_tags[shared] = shared
        return shared

    def _shared_values(self, values: tuple[Any, ...]) -> tuple[Any, ...]:
        """``values`` as another note holds them: its tuple if the same (equal, and of the
        same immutable types: ``1`` is not ``true``), else its equal strings."""
        slot = 0
        while values[slot] is _ABSENT:  # put() sends () when every value is absent
            slot += 1
        try:
            paths = self._by_value[slot].get(values[slot])
        except TypeError:
            paths = None
        if paths is not None:
            other = self._entries[_one(paths)].values
            if other == values and other is not None:
                kinds = list(map(type, values))
                if kinds == list(map(type, other)) and _ATOMIC.issuperset(kinds):
                    return other
        shared = list(values)
        for slot, value in enumerate(values):
            if type(value) is not str:
                continue
            paths = self._by_value[slot].get(value)
            if paths is not None:
                other = self._entries[_one(paths)].values
                if other:
                    shared[slot] = other[slot]
        return tuple(shared)
