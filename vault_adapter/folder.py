"""A vault that is a folder of Markdown files on the local disk.

Every write is atomic (a hidden temp file in the same folder, fsync, rename),
so a reader (Obsidian, a sync tool, our own watcher) never sees half a note.
``update_fields`` edits only the named frontmatter fields and refuses to
overwrite a newer edit: it re-reads, re-applies and checks, under a per-note
lock, that the file is still the one it read just before renaming over it.
Blocking file work runs in worker threads; the public API is async so the
gateway can use this adapter and the remote one interchangeably.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import stat
import tempfile
import threading
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

from vault_adapter.batches import GroupCommit
from vault_adapter.errors import NoteNotFound, NoteParseError, VaultError, WriteConflict
from vault_adapter.fields import edit_fields, render_frontmatter
from vault_adapter.index import NoteIndex
from vault_adapter.note import (
    DEFAULT_MAX_NOTE_BYTES,
    Note,
    content_hash,
    load_yaml,
    normalize_tags,
    parse_note,
    parse_parts,
    remember_yaml,
    render_note,
    split_frontmatter,
)
from vault_adapter.paths import normalize, plain_below, resolve_in
from vault_adapter.scan import (
    PARALLEL_FROM,
    NoteSummary,
    Scanned,
    ScanSetup,
    Wanted,
    chunked,
    default_processes,
    scan_chunks,
)
from vault_adapter.scratch import (
    Scratch,
    exchange,
    fill,
    move_new,
    start_writeback,
    write_over,
)
from vault_adapter.watch import EventKind, VaultEvent, Watcher
from vault_adapter.workers import file_workers

_UPDATE_ATTEMPTS = 8
_LOCK_STRIPES = 64
_SCAN_BATCH = 256
_WRITES_REMEMBERED = 4096


def _default_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_NEW_FILE_MODE = _default_mode()


class NoteExists(VaultError):
    """``create`` found a note already at the path (exactly-once writes rely on this)."""

    def __init__(self, path: str) -> None:
        super().__init__(f"{path}: a note already exists here")
        self.path = path


@dataclass(frozen=True, slots=True)
class ScanItem:
    """One note found by :meth:`FolderVault.rescan`: parsed, or why it could not be."""

    path: str
    note: Note | None
    error: NoteParseError | None


class FolderVault:
    """Notes in a local folder, with an index and a watcher."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        max_note_bytes: int = DEFAULT_MAX_NOTE_BYTES,
        index_fields: Iterable[str] = (),
        quiet_window_s: float = 0.5,
        watch_polling: bool = False,
        poll_interval_s: float = 1.0,
        fsync: bool = True,
        scratch: Scratch | str | os.PathLike[str] | None = None,
        before_replace: Callable[[str], None] | None = None,
        after_check: Callable[[str], None] | None = None,
        scan_processes: int | None = None,
        parallel_scan_from: int = PARALLEL_FROM,
    ) -> None:
        """``scratch`` is a folder on the vault's filesystem where new versions are
        written and replaced ones are kept for reuse (see :mod:`vault_adapter.scratch`);
        without it, temp files go beside their note and old versions are freed.

        ``before_replace`` is a fault-injection seam for tests: it is called with the
        path inside ``update_fields`` after the new text is computed and before the
        final check-and-rename, which is where a concurrent human edit would land;
        ``after_check`` is called after that check, just before the rename.

        ``scan_processes`` worker processes (default: one per CPU, none on one CPU)
        index a vault of ``parallel_scan_from`` notes or more in ``rescan(wanted)``."""
        root_path = Path(root)
        if not root_path.is_dir():
            raise VaultError(f"vault folder {root_path} does not exist or is not a folder")
        self.root = root_path.resolve()
        self.max_note_bytes = max_note_bytes
        self.index = NoteIndex(index_fields)
        self.quiet_window_s = quiet_window_s
        self.watch_polling = watch_polling
        self.poll_interval_s = poll_interval_s
        self._fsync = fsync
        self._before_replace = before_replace
        self._after_check = after_check
        self.scan_processes = default_processes() if scan_processes is None else scan_processes
        self.parallel_scan_from = parallel_scan_from
        self._io = file_workers()
        self._creates: GroupCommit[_NewNote, Note] = GroupCommit(self._create_many, self._io)
        """New notes that arrive together are written and synced together."""
        self._updates: GroupCommit[_Update, Note] = GroupCommit(self._update_many, self._io)
        """And so are field updates (see :meth:`_update_many`)."""
        self._stripes = [threading.Lock() for _ in range(_LOCK_STRIPES)]
        self._inflight_lock = threading.Lock()
        self._inflight: dict[str, set[str]] = {}
        self._written: dict[str, tuple[tuple[int, int, int, int], int]] = {}
        """Note -> (identity of the file our last write left, our writes since the
        note last settled); see ``_settle``."""
        self.scratch: Scratch | None = None
        if scratch is not None:
            spares = scratch if isinstance(scratch, Scratch) else Scratch(Path(scratch))
            if spares.device == self.root.stat().st_dev:
                self.scratch = spares
        self._scratch_ok: dict[str, bool] = {}
        """Folder -> whether its notes can be written through the scratch folder."""

    # -- reading ------------------------------------------------------------

    def path_of(self, rel: str) -> Path:
        """Absolute path of a vault-relative path, refusing anything that escapes."""
        return resolve_in(self.root, rel)

    async def read(self, path: str) -> Note:
        return await self._io.run(functools.partial(self.read_sync, path))

    def read_sync(self, path: str) -> Note:
        rel = normalize(path)
        raw, mtime = self._read_raw(rel)
        return parse_note(rel, raw, mtime, max_bytes=self.max_note_bytes)

    async def exists(self, path: str) -> bool:
        target = self.path_of(path)
        return await asyncio.to_thread(target.is_file)

    async def list_notes(self, folder: str = "", *, recursive: bool = True) -> list[str]:
        """Vault-relative paths of the notes under ``folder`` (dot-folders skipped)."""
        start = self.path_of(folder) if folder else self.root
        return await asyncio.to_thread(
            lambda: sorted(rel for rel, _ in self._walk(start, recursive))
        )

    async def find_by_tag(self, tag: str) -> list[str]:
        await self._ensure_index()
        return self.index.by_tag(tag)

    async def find_by_field(self, key: str, value: Any) -> list[str]:
        if key not in self.index.fields:
            raise VaultError(f"field {key!r} is not indexed; add it to index_fields")
        await self._ensure_index()
        return self.index.by_field(key, value)

    async def _ensure_index(self) -> None:
        if not self.index.ready:
            async for _ in self.rescan(_none):
                pass

    # -- writing ------------------------------------------------------------

    async def write(self, path: str, frontmatter: Mapping[str, Any], body: str) -> Note:
        """Create or replace a whole note, atomically."""
        return await self._io.run(functools.partial(self._write_whole, path, frontmatter, body))

    async def create(self, path: str, frontmatter: Mapping[str, Any], body: str) -> Note:
        """Create a note that must not exist yet; :class:`NoteExists` if it does.

        The check and the creation are one atomic step (a hard link of the
        finished temp file), so two writers can never both create it.
        """
        return await self._creates.submit((path, frontmatter, body))

    async def update_fields(
        self,
        path: str,
        fields: Mapping[str, Any],
        remove: Iterable[str] = (),
        *,
        append_once: tuple[str, str] | None = None,
    ) -> Note:
        """Set ``fields`` (and drop ``remove``) in a note's frontmatter; nothing else changes.

        ``append_once=(marker, text)`` also appends ``text`` to the body unless
        the body already contains ``marker``, which makes appending idempotent.
        """
        return await self._updates.submit((path, dict(fields), tuple(remove), append_once))

    async def rewrite(self, path: str, transform: Callable[[str], str]) -> Note | None:
        """Replace a note's whole text with ``transform(text)``, never over a newer edit.

        For notes whose frontmatter cannot be parsed (so fields cannot be
        stamped): ``transform`` sees the raw text. Returns the new note, or
        None if the result does not parse either.
        """
        return await asyncio.to_thread(self._rewrite, path, transform)

    def _rewrite(self, path: str, transform: Callable[[str], str]) -> Note | None:
        rel = normalize(path)
        target = self.path_of(rel)
        with self._stripe(rel):
            for _ in range(_UPDATE_ATTEMPTS):
                raw, _mtime = self._read_raw(rel)
                try:
                    text = raw.decode("utf-8-sig")
                except UnicodeDecodeError as exc:
                    raise NoteParseError(rel, "not UTF-8 text; cannot rewrite") from exc
                new = transform(text).encode("utf-8")
                try:
                    done = self._commit(rel, target, new, allow_unparsed=True, unchanged=raw)
                except NoteParseError:
                    return None
                if done is not None:
                    return done
        raise WriteConflict(rel, _UPDATE_ATTEMPTS)

    async def delete(self, path: str) -> None:
        await asyncio.to_thread(self._delete, path)

    def _write_whole(self, path: str, frontmatter: Mapping[str, Any], body: str) -> Note:
        rel, target, data, parsed = self._rendered(path, frontmatter, body)
        with self._stripe(rel):
            return self._commit(rel, target, data, parsed=parsed)

    def _rendered(
        self,
        path: str,
        frontmatter: Mapping[str, Any],
        body: str,
        resolve: Callable[[str], Path] | None = None,
    ) -> tuple[str, Path, bytes, Note | None]:
        """A whole note's path, file and bytes, and what it reads as when that is known
        without parsing it (None: ``_checked`` parses it)."""
        rel = normalize(path)
        target = (resolve or self.path_of)(rel)
        yaml_text = render_frontmatter(frontmatter) if frontmatter else None
        parsed: Note | None = None
        if yaml_text is None or "\x00" in body:
            data = render_note(frontmatter, body).encode("utf-8")
        else:
            # Every field had a rendering known to read back as its value: the note
            # reads as these fields and this body without parsing it again.
            data = f"---\n{yaml_text}---\n{body}".encode()
            remember_yaml(yaml_text, dict(frontmatter))
            fields = load_yaml(yaml_text, rel)  # a copy of what was just remembered
            parsed = Note.model_construct(
                path=rel,
                frontmatter=fields,
                body=body,
                tags=normalize_tags(fields.get("tags")),
                mtime=0.0,
                content_hash="",
            )
        return rel, target, data, parsed

    def _update_many(self, items: Sequence[_Update]) -> list[Note | BaseException]:
        """Field updates, each exactly as :meth:`update_fields` promises, written as a
        group (see :mod:`vault_adapter.batches`): each note read and edited, every new
        version written, then all synced, then each checked against what was read and
        renamed into place, then one sync per folder. One update's failure is its own.

        A note named twice is updated twice, in order: the second goes in a later
        round, on top of the first. An update that lost to a person's save (the note
        changed between our read and our rename) is read and applied again, in the
        next round. Each round holds its notes' locks from the read to the rename."""
        results: list[Note | BaseException] = [_PENDING] * len(items)
        rels: dict[int, str] = {}
        for index, item in enumerate(items):
            try:
                rels[index] = normalize(item[0])
            except Exception as exc:
                results[index] = exc
        tries = dict.fromkeys(rels, 0)
        pending = list(rels)
        while pending:
            now: list[int] = []
            later: list[int] = []
            taken: set[str] = set()
            for index in pending:
                (later if rels[index] in taken else now).append(index)
                taken.add(rels[index])
            with contextlib.ExitStack() as held:
                for stripe in sorted({self._stripe_of(rels[index]) for index in now}):
                    held.enter_context(self._stripes[stripe])
                lost = self._update_round(items, rels, now, results)
            for index in lost:
                tries[index] += 1
                if tries[index] < _UPDATE_ATTEMPTS:
                    later.append(index)
                else:
                    results[index] = WriteConflict(rels[index], _UPDATE_ATTEMPTS)
            pending = sorted(later)  # submission order: a note's updates stay in order
        return results

    def _update_round(
        self,
        items: Sequence[_Update],
        rels: Mapping[int, str],
        indexes: Sequence[int],
        results: list[Note | BaseException],
    ) -> list[int]:
        """One round of :meth:`_update_many` (each note at most once, its lock held);
        the indexes of the updates that lost to a person's save, to be tried again."""
        edits: list[_Edit] = []
        lost: list[int] = []
        try:
            for index in indexes:
                _, fields, remove, append_once = items[index]
                try:
                    edit = self._stage_edit(index, rels[index], fields, remove, append_once)
                except Exception as exc:
                    results[index] = exc
                    continue
                if isinstance(edit, Note):
                    results[index] = edit  # nothing to change
                else:
                    edits.append(edit)
            if self._fsync:
                start_writeback(edit.fd for edit in edits)
            for edit in edits:
                fd, edit.fd = edit.fd, -1
                try:
                    if self._fsync:
                        os.fsync(fd)
                    edit.mtime = os.fstat(fd).st_mtime
                except OSError as exc:
                    edit.failed = _write_error(edit.rel, exc)
                finally:
                    os.close(fd)
            placed: list[_Edit] = []
            for edit in edits:
                if edit.failed is None:
                    try:
                        events = self._put_in(
                            edit.rel, edit.target, edit.scratch, edit.tmp, edit.raw
                        )
                        if events is None:
                            self._forget_temp(edit.scratch, edit.tmp)
                            lost.append(edit.index)
                            continue
                        edit.events = events
                        placed.append(edit)
                        continue
                    except OSError as exc:
                        edit.failed = _write_error(edit.rel, exc)
                    except Exception as exc:
                        edit.failed = exc
                if os.path.lexists(edit.tmp):
                    self._forget_temp(edit.scratch, edit.tmp)
                results[edit.index] = edit.failed
            # Renamed into place and indexed; durable once their folders are synced.
            unsynced = self._sync_folders({edit.target.parent for edit in placed})
            for edit in placed:
                failed = unsynced.get(edit.target.parent)
                results[edit.index] = failed or self._indexed(
                    edit.rel, edit.target, edit.note, edit.digest, edit.mtime, edit.events
                )
        finally:
            for edit in edits:
                if edit.fd >= 0:  # only if something above went badly wrong
                    os.close(edit.fd)
                self._clear_inflight(edit.rel, edit.digest)
        return lost

    def _stage_edit(
        self,
        index: int,
        rel: str,
        fields: dict[str, Any],
        remove: tuple[str, ...],
        append_once: tuple[str, str] | None,
    ) -> Note | _Edit:
        """Read ``rel``, apply one update and write the new version to a temp file (not
        yet synced; its fd stays open); the note as it is if the update changes nothing."""
        target = self.path_of(rel)
        raw, info = self._read_stat(rel, target)
        note = parse_note(rel, raw, info.st_mtime, max_bytes=self.max_note_bytes)
        text = raw.decode("utf-8-sig")
        edited = edit_fields(text, fields, remove, path=rel, before=note.frontmatter)
        new_text, body = edited.text, edited.body
        if append_once is not None and append_once[0] not in body:
            new_text = _append(new_text, append_once[1])
            body = _append(body, append_once[1])
        new = new_text.encode("utf-8")
        if new == raw:
            return note
        # The new frontmatter was checked by parsing it; what is left to check is
        # that the whole text splits where we think it does.
        if split_frontmatter(new_text, rel)[1] != body or b"\x00" in new:
            raise NoteParseError(rel, "the edited text would not read back as a note")
        expected = Note.model_construct(
            path=rel,
            frontmatter=edited.frontmatter,
            body=body,
            tags=normalize_tags(edited.frontmatter.get("tags")),
            mtime=0.0,
            content_hash="",
        )
        digest = content_hash(new)
        # A note that was just read has its folder: no need to look for it.
        scratch, fd, tmp = self._write_temp(
            rel, target, new, digest, exists=True, mode=info.st_mode & 0o7777
        )
        return _Edit(index, rel, target, raw, expected, digest, scratch, fd, tmp)

    def _write_temp(
        self, rel: str, target: Path, data: bytes, digest: str, *, exists: bool, mode: int | None
    ) -> tuple[Scratch | None, int, str]:
        """Mark ``digest`` in flight for ``rel`` and write ``data`` to a temp file for
        ``target`` (not yet synced; its fd stays open). ``mode``: the note's, for a
        new version; None for a new note (``0666 & ~umask``)."""
        self._mark_inflight(rel, digest)
        try:
            scratch, fd, tmp, fresh = self._temp_for(
                target,
                len(data),
                exists=exists,
                create_mode=_NEW_FILE_MODE if mode is None else 0o600,
            )
            try:
                if mode is not None or not fresh:
                    os.fchmod(fd, _NEW_FILE_MODE if mode is None else mode)
                fill(fd, data, empty=fresh)
            except BaseException:
                os.close(fd)
                self._forget_temp(scratch, tmp)
                raise
        except BaseException as exc:
            self._clear_inflight(rel, digest)
            if isinstance(exc, OSError):
                raise _write_error(rel, exc) from exc
            raise
        return scratch, fd, tmp

    @overload
    def _commit(
        self,
        rel: str,
        target: Path,
        data: bytes,
        *,
        allow_unparsed: bool = False,
        unchanged: None = None,
        parsed: Note | None = None,
        mode: int | None = None,
    ) -> Note: ...

    @overload
    def _commit(
        self,
        rel: str,
        target: Path,
        data: bytes,
        *,
        allow_unparsed: bool = False,
        unchanged: bytes,
        parsed: Note | None = None,
        mode: int | None = None,
    ) -> Note | None: ...

    def _commit(
        self,
        rel: str,
        target: Path,
        data: bytes,
        *,
        allow_unparsed: bool = False,
        unchanged: bytes | None = None,
        parsed: Note | None = None,
        mode: int | None = None,
    ) -> Note | None:
        """Write ``data`` atomically. With ``unchanged``, only if the note still holds
        exactly those bytes once the new version is ready to go; None if it does not.

        ``parsed`` is what ``data`` reads as, when the caller has already checked it;
        ``mode`` the note's file mode, when the caller has just read it."""
        digest, note = self._checked(rel, data, parsed, allow_unparsed=allow_unparsed)
        if mode is None:
            mode = _NEW_FILE_MODE
            with contextlib.suppress(FileNotFoundError):
                mode = target.stat().st_mode & 0o7777
        self._mark_inflight(rel, digest)
        try:
            # A note that was just read has its folder: no need to look for it.
            scratch, fd, tmp, _ = self._temp_for(target, len(data), exists=unchanged is not None)
            try:
                os.fchmod(fd, mode)
                written = write_over(fd, data, sync=self._fsync)
                events = self._put_in(rel, target, scratch, tmp, unchanged)
                if events is None:
                    self._forget_temp(scratch, tmp)
                    return None
            except BaseException:
                if os.path.lexists(tmp):
                    self._forget_temp(scratch, tmp)
                raise
            if self._fsync:
                self._fsync_dir(target.parent)
            if note is None:
                self.index.put_broken(rel, digest)
                raise NoteParseError(rel, "the rewritten text is not a valid note")
            return self._indexed(rel, target, note, digest, written.st_mtime, events)
        except OSError as exc:
            raise _write_error(rel, exc) from exc
        finally:
            self._clear_inflight(rel, digest)

    def _checked(
        self, rel: str, data: bytes, parsed: Note | None, *, allow_unparsed: bool = False
    ) -> tuple[str, Note | None]:
        """``data``'s hash, and the note it reads as (``parsed`` when the caller knows)."""
        digest = content_hash(data)
        if parsed is not None:
            return digest, parsed
        # What we are about to write must read back as a note: refuse it before
        # anything reaches the disk (a NUL in a field, say), never after.
        try:
            return digest, parse_note(rel, data, 0.0, max_bytes=len(data) + 1)
        except NoteParseError:
            if not allow_unparsed:
                raise
            return digest, None

    def _temp_for(
        self, target: Path, size: int, *, exists: bool, create_mode: int = 0o600
    ) -> tuple[Scratch | None, int, str, bool]:
        """``(scratch, fd, path, fresh)`` of a file to write ``target``'s next version in
        (``size`` bytes); ``fresh``: new, empty and made with ``create_mode`` (see
        :meth:`Scratch.open_temp`)."""
        scratch = self._scratch_for(target.parent, exists=exists)
        if scratch is not None:
            return scratch, *scratch.open_temp(size, create_mode)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        return None, fd, tmp, False

    def _indexed(
        self,
        rel: str,
        target: Path,
        note: Note,
        digest: str,
        mtime: float | None = None,
        events: int = 1,
    ) -> Note:
        """Index what was just written to ``target`` and remember the write as ours
        (it made ``events`` file events at ``target``)."""
        info: os.stat_result | None = None
        with contextlib.suppress(OSError):
            info = os.stat(target)  # after the rename (its ctime)
        if mtime is None:
            mtime = info.st_mtime if info is not None else 0.0
        note = note.model_copy(update={"mtime": mtime, "content_hash": digest})
        self.index.put(note)
        if info is not None:
            self._remember_write(rel, info, events)
        return note

    def _create_many(self, items: Sequence[_NewNote]) -> list[Note | BaseException]:
        """New notes, each exactly as :meth:`create` promises, written as one group:
        every file, its writeback started, then a sync of each, then every rename
        into place, then one sync per folder (see :mod:`vault_adapter.batches`).
        One note's failure (a bad path, a note already there) is its own."""
        results: list[Note | BaseException] = []
        staged: list[_Staged] = []
        folders_seen: set[Path] = set()
        resolve = self._new_note_resolver()
        for path, frontmatter, body in items:
            try:
                staged.append(
                    self._stage(len(results), path, frontmatter, body, folders_seen, resolve)
                )
                results.append(_PENDING)
            except Exception as exc:
                results.append(exc)
        if self._fsync:
            start_writeback(new.fd for new in staged)
        for new in staged:
            try:
                if self._fsync:
                    os.fsync(new.fd)
            except OSError as exc:
                new.failed = _write_error(new.rel, exc)
            finally:
                os.close(new.fd)
        for new in staged:
            if new.failed is None:
                with self._stripe(new.rel):
                    new.failed = self._link_new(new)
                    if new.failed is None:
                        new.note = self._indexed(new.rel, new.target, new.note, new.digest)
        # Named notes are on disk and indexed; they are durable once their folder is.
        unsynced = self._sync_folders({new.target.parent for new in staged if not new.failed})
        for new in staged:
            failed = new.failed or unsynced.get(new.target.parent)
            if new.failed is not None and os.path.lexists(new.tmp):
                self._forget_temp(new.scratch, new.tmp)
            results[new.index] = new.note if failed is None else failed
            self._clear_inflight(new.rel, new.digest)
        return results

    def _stage(
        self,
        index: int,
        path: str,
        frontmatter: Mapping[str, Any],
        body: str,
        folders_seen: set[Path],
        resolve: Callable[[str], Path],
    ) -> _Staged:
        """Write one new note's temp file (not yet synced; its fd stays open)."""
        rel, target, data, parsed = self._rendered(path, frontmatter, body, resolve)
        digest, note = self._checked(rel, data, parsed)
        assert note is not None
        scratch, fd, tmp = self._write_temp(
            rel, target, data, digest, exists=target.parent in folders_seen, mode=None
        )
        folders_seen.add(target.parent)
        return _Staged(index, rel, target, note, digest, scratch, fd, tmp)

    def _new_note_resolver(self) -> Callable[[str], Path]:
        """:meth:`path_of` for one group of new notes: each folder is checked for
        symlinks once. The note itself is not looked at: a new note must not exist,
        and a link never follows a symlink already at its name (it fails instead)."""
        plain: set[str] = set()

        def resolve(rel: str) -> Path:
            folder = rel.rpartition("/")[0]
            if folder in plain:
                return self.root / rel
            target = self.path_of(rel)  # refuses a path that leaves the vault
            if not folder or plain_below(self.root, folder):
                plain.add(folder)
            return target

        return resolve

    @staticmethod
    def _link_new(new: _Staged) -> VaultError | None:
        """Give a synced temp file its note's name, unless a note is there already."""
        try:
            move_new(new.tmp, new.target)
        except FileExistsError:
            return NoteExists(new.rel)
        except OSError as exc:
            return _write_error(new.rel, exc)
        return None

    def _sync_folders(self, folders: Iterable[Path]) -> dict[Path, VaultError]:
        """Sync each folder's entries; the folders that failed, with why."""
        failed: dict[Path, VaultError] = {}
        if self._fsync:
            for folder in folders:
                try:
                    self._fsync_dir(folder)
                except OSError as exc:
                    failed[folder] = _write_error(str(folder), exc)
        return failed

    def _scratch_for(self, folder: Path, *, exists: bool = False) -> Scratch | None:
        """The scratch folder, if ``folder``'s notes can be renamed in from it; makes
        ``folder`` if it is missing (unless the caller knows it ``exists``)."""
        key = str(folder)
        known = self._scratch_ok.get(key)
        if known is None or (not exists and not folder.is_dir()):
            folder.mkdir(parents=True, exist_ok=True)
            known = self.scratch is not None and folder.stat().st_dev == self.scratch.device
            self._scratch_ok[key] = known
        return self.scratch if known else None

    def _put_in(
        self, rel: str, target: Path, scratch: Scratch | None, tmp: str, unchanged: bytes | None
    ) -> int | None:
        """Put the written and synced ``tmp`` at ``target``, only if the note still holds
        ``unchanged`` (when given); the file events that made (see :meth:`_swap_in`),
        or None if a person saved the note since it was read: their edit wins and the
        caller applies its own to it again. Checked as late as possible, and once
        more by the swap. Bytes, not mtimes."""
        checked = None
        if unchanged is not None:
            checked = self._still(rel, target, unchanged)
            if checked is None:
                return None
        return self._swap_in(scratch, tmp, target, checked)

    @staticmethod
    def _swap_in(
        scratch: Scratch | None, tmp: str, target: Path, checked: os.stat_result | None
    ) -> int | None:
        """Put the new version ``tmp`` at ``target``; the file events that made there.

        ``checked``: the status of the version just read at ``target`` and found
        unchanged (None: there is nothing to check, replace whatever is there).
        The check and a rename are two steps, and a save landing between them
        would be lost: so the new version and the old swap names in one step, the
        old one is looked at, and if it is not the one checked (a save came in
        between) it goes back at once and this returns None (the caller applies
        its edit to it again). The old version stays in the scratch folder as a
        spare (or is freed, without one)."""
        swapped = False
        if checked is not None:
            try:
                swapped = exchange(tmp, target)
            except FileNotFoundError:
                return None  # deleted since the check: the caller looks again
        if not swapped or checked is None:  # nothing to check, or no exchange here
            held = scratch.hold(target) if scratch is not None else None
            try:
                os.replace(tmp, target)
            except BaseException:
                if held is not None:
                    Scratch.drop(held)  # the note still names that inode: nothing is freed
                raise
            if held is not None and scratch is not None:
                scratch.retire(held)
            return 1
        old = os.lstat(tmp)
        if _version(old) != _version(checked):
            try:
                exchange(tmp, target)  # theirs back; ours is at ``tmp`` again
            except OSError:
                os.replace(tmp, target)  # theirs back all the same; ours is dropped
            return None
        if scratch is not None:
            scratch.retire(tmp, old)
        else:
            Scratch.drop(tmp)
        return 2  # the move to ``target``, and the move away from it

    @staticmethod
    def _forget_temp(scratch: Scratch | None, tmp: str) -> None:
        if scratch is not None:
            scratch.retire(tmp)  # written, never a note: reuse it rather than free it
        else:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def _still(self, rel: str, target: Path, expected: bytes) -> os.stat_result | None:
        """The status of ``target`` if it still holds ``expected``; None if not."""
        if self._before_replace is not None:
            self._before_replace(rel)
        try:
            current, info = self._read_stat(rel, target)
        except (NoteNotFound, NoteParseError):
            return None
        # An editor that saves in place truncates first: an empty file is a save in
        # progress, never something to stamp over.
        if current != expected or not current:
            return None
        if self._after_check is not None:
            self._after_check(rel)
        return info

    def _delete(self, path: str) -> None:
        rel = normalize(path)
        target = self.path_of(rel)
        with self._stripe(rel):
            self.index.remove(rel)
            try:
                target.unlink()
            except FileNotFoundError as exc:
                raise NoteNotFound(rel) from exc

    # -- scanning and watching ----------------------------------------------

    async def rescan(self, wanted: Wanted | None = None) -> AsyncIterator[ScanItem]:
        """Every note in the vault, each read once; fills the index as it goes.

        With ``wanted``, every note is still indexed and every broken one yielded,
        but only the notes whose :class:`NoteSummary` ``wanted`` accepts (it is called
        in a worker thread) are read again, built and yielded. The others are never
        built, and on a big vault worker processes read them (:mod:`vault_adapter.scan`).
        """
        if wanted is not None:
            chunks = await asyncio.to_thread(
                lambda: chunked(rel for rel, _ in self._walk(self.root, True))
            )
            scan = scan_chunks(
                chunks,
                self.summarize,
                ScanSetup(str(self.root), self.max_note_bytes, self.index.fields),
                processes=self.scan_processes,
                parallel_from=self.parallel_scan_from,
            )
            async with contextlib.aclosing(scan):
                async for chunk in scan:
                    for item in await asyncio.to_thread(self._index_scanned, chunk, wanted):
                        yield item
            self.index.ready = True
            return
        walker = self._walk(self.root, True)
        while True:
            batch = await asyncio.to_thread(self._scan_batch, walker)
            if not batch:
                break
            for item in batch:
                yield item
        self.index.ready = True

    def watch(self) -> Watcher:
        """A watcher (start it, or use ``async with``) yielding settled :class:`VaultEvent`s."""
        return Watcher(
            self.root,
            self._settle,
            quiet_window_s=self.quiet_window_s,
            polling=self.watch_polling,
            poll_interval_s=self.poll_interval_s,
            known_under=self.index.under,
        )

    def _scan_batch(self, walker: Iterator[tuple[str, str]]) -> list[ScanItem]:
        items: list[ScanItem] = []
        for rel, target in walker:
            item = self._read_into_index(rel, target, recheck=False)
            if item is not None:
                items.append(item)
            if len(items) >= _SCAN_BATCH:
                break
        return items

    def summarize(self, paths: Iterable[str]) -> list[Scanned]:
        """What the index keeps of each of ``paths`` (as the walk found them), read and
        parsed without building a note or touching the index; a note that vanished
        is left out. Runs in a scan's worker processes, or in a thread."""
        found: list[Scanned] = []
        for rel in paths:
            try:
                raw, _ = self._read_raw(rel, self._file_of(rel), recheck=False)
            except NoteNotFound:
                continue
            except NoteParseError as exc:
                found.append((rel, "", (), (), exc.detail))
                continue
            digest = content_hash(raw)
            try:
                meta, _ = parse_parts(rel, raw, max_bytes=self.max_note_bytes)
            except NoteParseError as exc:
                found.append((rel, digest, (), (), exc.detail))
                continue
            fields = tuple((k, meta[k]) for k in self.index.fields if k in meta)
            found.append((rel, digest, normalize_tags(meta.get("tags")), fields, None))
        return found

    def _index_scanned(self, chunk: list[Scanned], wanted: Wanted) -> list[ScanItem]:
        items: list[ScanItem] = []
        for rel, digest, tags, fields, error in chunk:
            if error is not None:
                self.index.put_broken(rel, digest)
                items.append(ScanItem(rel, None, NoteParseError(rel, error)))
                continue
            summary = NoteSummary(rel, digest, tags, dict(fields))
            self.index.put(summary.index_note())
            if not wanted(summary):
                continue
            # Read again to build it: a note saved since is indexed as it is now.
            item = self._read_into_index(rel, self._file_of(rel))
            if item is not None:
                items.append(item)
        return items

    def _read_into_index(
        self, rel: str, target: Path | str, *, recheck: bool = True
    ) -> ScanItem | None:
        """Read, parse and index one note the walk found; None if it is gone."""
        try:
            raw, mtime = self._read_raw(rel, target, recheck=recheck)
        except NoteNotFound:
            return None
        except NoteParseError as exc:
            self.index.put_broken(rel, "")
            return ScanItem(rel, None, exc)
        return self._parse_into_index(rel, raw, mtime)

    def _parse_into_index(self, rel: str, raw: bytes, mtime: float) -> ScanItem:
        try:
            note = parse_note(rel, raw, mtime, max_bytes=self.max_note_bytes)
        except NoteParseError as exc:
            self.index.put_broken(rel, content_hash(raw))
            return ScanItem(rel, None, exc)
        self.index.put(note)
        return ScanItem(rel, note, None)

    def _remember_write(self, rel: str, info: os.stat_result, events: int = 1) -> None:
        with self._inflight_lock:
            if len(self._written) >= _WRITES_REMEMBERED:
                self._written.clear()  # only a shortcut: forgetting costs a read
            earlier = self._written.get(rel)
            self._written[rel] = (_identity(info), (earlier[1] if earlier else 0) + events)

    def _unchanged_since_written(self, rel: str, events: int) -> bool:
        """True when every event seen for ``rel`` was one of our writes (each raises a
        known number on the note's path: one for a rename or a link, two for an
        exchange, see :meth:`_swap_in`) and the file is still what the last one
        left: same inode, size, mtime and ctime.

        The event count is what makes this safe: timestamps are only as fine as the
        kernel's clock tick, so a person's same-length save in the same tick would
        look identical; its own event does not."""
        with self._inflight_lock:
            mine = self._written.pop(rel, None)
        if mine is None or mine[1] != events:
            return False
        try:
            return _identity(os.stat(self.path_of(rel))) == mine[0]
        except (OSError, VaultError):
            return False

    def _settle(self, rel: str, moved_from: str | None, events: int = 0) -> VaultEvent | None:
        """Called by the watcher (in a thread) once ``rel`` has stopped changing, with
        the number of raw events seen for it meanwhile."""
        # Polling can fold several changes into one event: there, always read.
        if (
            not self.watch_polling
            and moved_from is None
            and self._unchanged_since_written(rel, events)
        ):
            return None  # our own write, already in the index: no need to read it
        try:
            raw, mtime = self._read_raw(rel)
        except NoteNotFound:
            if rel in self.index:
                self.index.remove(rel)
                return VaultEvent("deleted", rel)
            return None
        except NoteParseError as exc:
            self.index.put_broken(rel, "")
            return VaultEvent("modified", rel, error=exc)
        digest = content_hash(raw)
        if digest == self.index.hash_of(rel) or self._is_inflight(rel, digest):
            return None
        kind: EventKind = (
            "moved" if moved_from else ("modified" if rel in self.index else "created")
        )
        item = self._parse_into_index(rel, raw, mtime)
        return VaultEvent(kind, rel, item.note, item.error, moved_from)

    # -- helpers ------------------------------------------------------------

    def _read_raw(
        self, rel: str, target: Path | str | None = None, *, recheck: bool = True
    ) -> tuple[bytes, float]:
        raw, info = self._read_stat(rel, target, recheck=recheck)
        return raw, info.st_mtime

    def _read_stat(
        self, rel: str, target: Path | str | None = None, *, recheck: bool = True
    ) -> tuple[bytes, os.stat_result]:
        """Bytes and mtime of a note. ``target`` skips path resolution for paths
        already resolved (or found by the scanner, never through a symlink that
        leaves the vault).

        A note can be replaced while we read it and the inode we read reused for
        another note's next version (a spare that has rested, see
        :mod:`vault_adapter.scratch`), so reads check that the path still names
        what they read. The start-up scan (``recheck=False``) relies on the rest."""
        recheck = recheck and self.scratch is not None
        if target is None:
            target = self.path_of(rel)
        limit = self.max_note_bytes + 1
        try:
            for _ in range(_UPDATE_ATTEMPTS):
                raw, info = _read_file(rel, target, limit)
                if not recheck or os.stat(target).st_ino == info.st_ino:
                    break
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise NoteNotFound(rel) from exc
        except IsADirectoryError as exc:
            raise NoteParseError(rel, "is a folder, not a note") from exc
        except OSError as exc:
            raise NoteParseError(rel, f"cannot read: {exc.strerror or exc}") from exc
        if len(raw) > self.max_note_bytes:
            raise NoteParseError(
                rel,
                f"note is {info.st_size} bytes, over the limit of {self.max_note_bytes} "
                "(max_note_bytes)",
            )
        return raw, info

    def _file_of(self, rel: str) -> str:
        """The file of a vault path the walk found (checked by the walk, not here)."""
        return os.path.join(self.root, *rel.split("/"))

    def _walk(self, start: Path, recursive: bool) -> Iterator[tuple[str, str]]:
        """``(vault path, absolute path)`` of every note under ``start``, dot-folders
        skipped, symlinked folders not followed, symlinked notes only if they stay inside."""
        root_prefix = str(self.root) + os.sep
        stack = [str(start)]
        while stack:
            folder = stack.pop()
            try:
                entries = list(os.scandir(folder))
            except (FileNotFoundError, NotADirectoryError, PermissionError):
                continue
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    if recursive:
                        stack.append(entry.path)
                elif entry.name.endswith(".md") and entry.is_file():
                    if entry.is_symlink() and not os.path.realpath(entry.path).startswith(
                        root_prefix
                    ):
                        continue
                    rel = entry.path[len(root_prefix) :].replace(os.sep, "/")
                    yield rel, entry.path

    def _stripe(self, rel: str) -> threading.Lock:
        return self._stripes[self._stripe_of(rel)]

    @staticmethod
    def _stripe_of(rel: str) -> int:
        return zlib.crc32(rel.encode()) % _LOCK_STRIPES

    def _mark_inflight(self, rel: str, digest: str) -> None:
        with self._inflight_lock:
            self._inflight.setdefault(rel, set()).add(digest)

    def _clear_inflight(self, rel: str, digest: str) -> None:
        with self._inflight_lock:
            hashes = self._inflight.get(rel)
            if hashes is not None:
                hashes.discard(digest)
                if not hashes:
                    del self._inflight[rel]

    def _is_inflight(self, rel: str, digest: str) -> bool:
        with self._inflight_lock:
            return digest in self._inflight.get(rel, ())

    @staticmethod
    def _fsync_dir(folder: Path) -> None:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


_NewNote = tuple[str, Mapping[str, Any], str]
"""What :meth:`FolderVault.create` is given: path, frontmatter, body."""

_Update = tuple[str, dict[str, Any], tuple[str, ...], tuple[str, str] | None]
"""What :meth:`FolderVault.update_fields` is given: path, fields, keys to drop, append_once."""

_PENDING = VaultError("not written")


@dataclass(slots=True)
class _Staged:
    """One note of a group being created: its temp file is written, not yet named."""

    index: int
    rel: str
    target: Path
    note: Note
    digest: str
    scratch: Scratch | None
    fd: int
    tmp: str
    failed: VaultError | None = None


@dataclass(slots=True)
class _Edit:
    """One update of a group: the note as read, its next version in a temp file."""

    index: int
    rel: str
    target: Path
    raw: bytes
    note: Note
    digest: str
    scratch: Scratch | None
    fd: int
    tmp: str
    mtime: float = 0.0
    events: int = 1
    failed: BaseException | None = None


def _write_error(rel: str, exc: OSError) -> VaultError:
    return VaultError(f"{rel}: cannot write note: {exc.strerror or exc}")


def _version(info: os.stat_result) -> tuple[int, int, int, int]:
    """One version of a note: the same file, with the same size and mtime (a rename
    changes its ctime)."""
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


def _identity(info: os.stat_result) -> tuple[int, int, int, int]:
    return (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _read_file(rel: str, target: Path | str, limit: int) -> tuple[bytes, os.stat_result]:
    """A regular file's bytes, at most ``limit`` of them, and its fstat."""
    fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise NoteParseError(rel, "is a folder, not a note")
        if not stat.S_ISREG(info.st_mode):
            raise NoteParseError(rel, "not a regular file")
        # Sized by fstat: asking for the whole limit at once allocates (and hands
        # back) 5 MB per note, which made reading a note cost more than parsing it.
        # Read on to the end in case the note grew since, never past the limit.
        raw = os.read(fd, min(info.st_size + 1, limit))
        # As long as fstat said (one byte more was asked for): that is the end.
        while len(raw) < limit and len(raw) != info.st_size:
            more = os.read(fd, limit - len(raw))
            if not more:
                break
            raw += more
    finally:
        os.close(fd)
    return raw, info


def _none(_: NoteSummary) -> bool:
    return False


def _append(text: str, addition: str) -> str:
    if text and not text.endswith("\n"):
        text += "\n"
    return text + addition
