"""An in-memory index of every note's tags and a few chosen fields.

The gateway asks "which notes are agent definitions?" and "which inbound
notes are not finished?" all the time; answering from memory means no query
ever reads every note. Entries also keep each note's content hash, which is
how the watcher recognises a write it has already seen (its own, or one the
scan read) without relying on timing. Reverse maps from tag and from field
value keep lookups proportional to the answer, not to the vault.

Writers are the adapter's worker threads and the watcher on the event loop,
so every method takes one lock; each call is a few dict operations.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Any

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


class NoteIndex:
    """Tags and selected frontmatter fields of every note, keyed by vault path."""

    def __init__(self, fields: Iterable[str] = ()) -> None:
        self.fields = tuple(dict.fromkeys(fields))
        self._lock = threading.Lock()
        self._entries: dict[str, IndexEntry] = {}
        self._by_tag: defaultdict[str, set[str]] = defaultdict(set)
        self._by_value: defaultdict[tuple[str, Hashable], set[str]] = defaultdict(set)
        self._unhashable: defaultdict[str, set[str]] = defaultdict(set)
        self.ready = False
        """True once a full scan has filled the index."""

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, path: str) -> bool:
        return path in self._entries

    def get(self, path: str) -> IndexEntry | None:
        return self._entries.get(path)

    def hash_of(self, path: str) -> str | None:
        entry = self._entries.get(path)
        return entry.content_hash if entry else None

    def put(self, note: Note) -> None:
        wanted = tuple((k, note.frontmatter[k]) for k in self.fields if k in note.frontmatter)
        self._store(note.path, IndexEntry(note.content_hash, note.tags, wanted))

    def put_broken(self, path: str, content_hash: str) -> None:
        """Remember a file that does not parse, so an unchanged copy is not reported again."""
        self._store(path, IndexEntry(content_hash, (), (), broken=True))

    def remove(self, path: str) -> None:
        with self._lock:
            self._unlink(path)

    def paths(self) -> list[str]:
        with self._lock:
            return list(self._entries)

    def by_tag(self, tag: str) -> list[str]:
        with self._lock:
            return sorted(self._by_tag.get(tag.lstrip("#").casefold(), ()))

    def by_field(self, key: str, value: Any) -> list[str]:
        with self._lock:
            found: set[str] = set()
            if isinstance(value, Hashable):
                found |= self._by_value.get((key, value), set())
            for path in self._unhashable.get(key, ()):
                if self._entries[path].field(key) == value:
                    found.add(path)
            return sorted(found)

    def under(self, folder: str) -> list[str]:
        prefix = folder.rstrip("/") + "/" if folder else ""
        with self._lock:
            return sorted(p for p in self._entries if p.startswith(prefix))

    def _store(self, path: str, entry: IndexEntry) -> None:
        with self._lock:
            self._unlink(path)
            self._entries[path] = entry
            for tag in entry.tags:
                self._by_tag[tag.casefold()].add(path)
            for key, value in entry.fields:
                if isinstance(value, Hashable):
                    self._by_value[(key, value)].add(path)
                else:
                    self._unhashable[key].add(path)

    def _unlink(self, path: str) -> None:
        old = self._entries.pop(path, None)
        if old is None:
            return
        for tag in old.tags:
            bucket = self._by_tag.get(tag.casefold())
            if bucket is not None:
                bucket.discard(path)
                if not bucket:
                    del self._by_tag[tag.casefold()]
        for key, value in old.fields:
            if isinstance(value, Hashable):
                vbucket = self._by_value.get((key, value))
                if vbucket is not None:
                    vbucket.discard(path)
                    if not vbucket:
                        del self._by_value[(key, value)]
            else:
                self._unhashable[key].discard(path)
