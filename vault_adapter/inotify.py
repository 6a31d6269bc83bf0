"""Linux inotify read on the event loop: raw note changes for the :class:`Watcher`.

watchdog reads inotify on threads of its own and builds an event object per
change, pairing moves on a timer; at a hundred turns a second, with a handful
of file changes per turn (most of them the gateway's own, in ``.vaultgate/``),
that bookkeeping cost more than the turns. This reads the inotify descriptor
straight from the event loop (``add_reader``), never watches dot-folders (the
gateway's state, ``.obsidian``, ``.git``), and hands each change to a ``.md``
note to ``touch(path, moved_from)``, which only arms the watcher's timer.

Folders are watched one by one. A folder that appears (made, or moved in) is
watched and then listed, so notes written into it before its watch existed
are reported too; a folder that moves away takes its notes with it (each one
is reported, and reads as deleted once it settles). If the kernel's queue
overflows, ``rescan`` is called: changes were lost and only a full look finds
them. Elsewhere than Linux, or with polling, the watcher uses watchdog.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import logging
import os
import stat
import struct
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path

from vault_adapter.errors import VaultError

log = logging.getLogger(__name__)

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_EXCL_UNLINK = 0x04000000
IN_ISDIR = 0x40000000

_MASK = (
    IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_ONLYDIR
    | IN_DONT_FOLLOW
    | IN_EXCL_UNLINK
)
_HEADER = struct.Struct("iIII")
_READ_SIZE = 256 * 1024
_COOKIES = 1024
"""Moves whose source is remembered, waiting for their destination."""

Touch = Callable[[str, str | None], None]

_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL | None:
    global _libc
    if _libc is None and sys.platform.startswith("linux"):
        name = ctypes.util.find_library("c")
        try:
            lib = ctypes.CDLL(name or "libc.so.6", use_errno=True)
            lib.inotify_init1.argtypes = [ctypes.c_int]
            lib.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
            lib.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
        except (OSError, AttributeError):
            return None
        _libc = lib
    return _libc


def available() -> bool:
    """Whether this system has inotify (Linux with a C library that offers it)."""
    return _lib() is not None


def _hidden(name: str) -> bool:
    return name.startswith(".")


class InotifyTree:
    """Watches ``root`` and every folder under it but dot-folders, on the running loop."""

    def __init__(
        self,
        root: Path,
        touch: Touch,
        rescan: Callable[[], None],
        known_under: Callable[[str], Iterable[str]],
    ) -> None:
        self._root = os.fsencode(root)
        self._touch = touch
        self._rescan = rescan
        self._known_under = known_under
        self._fd = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dirs: dict[int, str] = {}
        """Watch descriptor -> vault-relative folder ("" for the root)."""
        self._wds: dict[str, int] = {}
        self._moves: OrderedDict[int, str] = OrderedDict()
        self.overflows = 0

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        lib = _lib()
        if lib is None:
            raise VaultError("inotify is not available on this system")
        fd = lib.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            raise VaultError(_limit_hint(os.fsdecode(self._root), ctypes.get_errno()))
        self._fd = fd
        try:
            self._watch_tree("", strict=True)
        except BaseException:
            os.close(fd)
            self._fd = -1
            raise
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(fd, self._readable)

    def stop(self) -> None:
        if self._fd < 0:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._fd)
        os.close(self._fd)
        self._fd = -1
        self._dirs.clear()
        self._wds.clear()

    def is_alive(self) -> bool:
        return self._fd >= 0

    @property
    def watched(self) -> int:
        """Folders watched now."""
        return len(self._dirs)

    # -- watches ---------------------------------------------------------------

    def _watch_tree(self, top: str, *, strict: bool = False) -> list[str]:
        """Watch ``top`` and the folders under it; the notes found in them."""
        lib = _lib()
        assert lib is not None
        notes: list[str] = []
        pending = [top]
        while pending:
            rel = pending.pop()
            full = os.path.join(self._root, os.fsencode(rel)) if rel else self._root
            wd = lib.inotify_add_watch(self._fd, full, _MASK)
            if wd < 0:
                code = ctypes.get_errno()
                if code == errno.ENOSPC:
                    message = _limit_hint(os.fsdecode(full), code)
                    if strict:
                        raise VaultError(message)
                    log.warning("%s", message)
                elif strict and not rel:
                    raise VaultError(f"cannot watch {os.fsdecode(full)}: {os.strerror(code)}")
                continue  # gone already, or not a folder we may read: nothing to watch
            old = self._wds.get(rel)
            if old is not None and old != wd:
                self._dirs.pop(old, None)
            self._dirs[wd] = rel
            self._wds[rel] = wd
            try:
                entries = list(os.scandir(full))
            except OSError:
                continue
            for entry in entries:
                name = os.fsdecode(entry.name)
                if _hidden(name):
                    continue
                child = f"{rel}/{name}" if rel else name
                try:
                    mode = entry.stat(follow_symlinks=False).st_mode
                except OSError:
                    continue
                if stat.S_ISDIR(mode):
                    pending.append(child)
                elif name.endswith(".md"):
                    notes.append(child)
        return notes

    def _unwatch_tree(self, top: str) -> None:
        lib = _lib()
        assert lib is not None
        prefix = top + "/"
        for rel in [r for r in self._wds if r == top or r.startswith(prefix)]:
            wd = self._wds.pop(rel)
            self._dirs.pop(wd, None)
            lib.inotify_rm_watch(self._fd, wd)

    # -- events ----------------------------------------------------------------

    def _readable(self) -> None:
        while self._fd >= 0:
            try:
                data = os.read(self._fd, _READ_SIZE)
            except BlockingIOError:
                return
            except OSError as exc:
                log.error("reading inotify failed (%s); rescanning the vault", exc)
                self._overflowed()
                return
            self._handle(data)

    def _handle(self, data: bytes) -> None:
        offset, end = 0, len(data)
        while offset < end:
            wd, mask, cookie, size = _HEADER.unpack_from(data, offset)
            start = offset + _HEADER.size
            raw = data[start : start + size].rstrip(b"\0")
            offset = start + size
            if mask & IN_Q_OVERFLOW:
                self._overflowed()
                continue
            folder = self._dirs.get(wd)
            if folder is None:
                continue
            if mask & IN_IGNORED:
                # The folder is gone (its notes were reported one by one as it emptied).
                del self._dirs[wd]
                if self._wds.get(folder) == wd:
                    del self._wds[folder]
                continue
            if not raw:
                continue  # about the folder itself (IN_DELETE_SELF): IN_IGNORED follows
            name = os.fsdecode(raw)
            if _hidden(name):
                continue
            rel = f"{folder}/{name}" if folder else name
            if mask & IN_ISDIR:
                self._folder_event(mask, rel)
            elif name.endswith(".md"):
                self._note_event(mask, cookie, rel)

    def _note_event(self, mask: int, cookie: int, rel: str) -> None:
        if mask & IN_MOVED_FROM:
            self._moves[cookie] = rel
            if len(self._moves) > _COOKIES:
                self._moves.popitem(last=False)
            self._touch(rel, None)
        elif mask & IN_MOVED_TO:
            self._touch(rel, self._moves.pop(cookie, None))
        else:
            self._touch(rel, None)

    def _folder_event(self, mask: int, rel: str) -> None:
        if mask & (IN_CREATE | IN_MOVED_TO):
            for note in self._watch_tree(rel):
                self._touch(note, None)
        elif mask & IN_MOVED_FROM:
            # Moved out of the vault, or elsewhere in it (then its IN_MOVED_TO
            # watches it again under the new name): its notes are gone from here.
            self._unwatch_tree(rel)
            for note in self._known_under(rel):
                self._touch(note, None)

    def _overflowed(self) -> None:
        self.overflows += 1
        log.warning("the kernel dropped file events (inotify queue overflow); rescanning")
        if self._fd >= 0:
            self._watch_tree("")
        self._rescan()


def _limit_hint(path: str, code: int) -> str:
    return (
        f"cannot watch {path}: {os.strerror(code)}. If inotify watches ran out, raise "
        "fs.inotify.max_user_watches (or max_user_instances) or set watch_polling = true"
    )
