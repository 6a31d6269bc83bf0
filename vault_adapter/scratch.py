"""Where new note versions are written before they replace the old, and old ones are reused.

Every note write is a new file renamed over the old one, so the old version's
blocks are freed. On a filesystem mounted with online discard (``-o discard``,
common on cloud disks) freeing a block is a synchronous TRIM: about 1 ms,
and the disk does them one at a time, so a gateway stamping notes spends
most of its time freeing the versions it just replaced. Measured here
(ext4, ``discard``): replacing a 300-byte note took 1.15 ms; writing a new file
and renaming it 0.2 ms; unlinking a synced file 1.0 to 1.4 ms, in 1 or 4 threads.

So the old version is not freed: before the rename, a second name for it is
made here (a hard link), and the rename only drops the note's name. Its
inode becomes a *spare*. The next write takes a spare, writes the new text
over it in place (its blocks are reused, so nothing is freed, nothing is
trimmed), syncs it, and renames it over its note. A rename is still the only
way a note changes, so readers still see one whole version or the other.

A reader that opened a note just before it was replaced still holds the old
inode. So a spare is reused only once it has rested ``rest_s`` seconds, and
the adapter's own reads check that the path still names the inode they read
(see ``FolderVault._read_raw``). A spare with another name somewhere (someone
hard-linked the note) is never written over. At most ``keep`` spares are kept;
beyond that the oldest is freed. Spares left by a previous run are reused.

A spare is only reused for a version that needs at least as many blocks as it
holds. Cutting a spare down to a shorter version frees its last blocks, and
that is the same synchronous TRIM: when a 12 KB thread note's old version was
reused for a 1 KB stamp, the truncate took 1 ms (1.5 µs when no block is
freed). Under ``perf trace``, ten threads whose notes grew to 6 to 12 KB spent
0.6 ms a turn in truncates that way, nearly thirty times what 3,000 threads of
small notes did. So spares are kept by the blocks they hold; a write takes one that holds
exactly what it needs, or else the largest that holds fewer (growing a file
frees nothing), or else a new file.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import itertools
import os
import secrets
import stat
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

_PREFIX = "v-"


class Scratch:
    """A folder of spare inodes, next to the vault, on the same filesystem."""

    def __init__(self, folder: Path, *, rest_s: float = 2.0, keep: int = 4096) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        info = folder.stat()
        self.device = info.st_dev
        self._block = max(_SECTOR, getattr(info, "st_blksize", 0) or 4096)
        """The filesystem's block: what a file's size is rounded up to on disk."""
        self.rest_s = rest_s
        self.keep = keep
        self._lock = threading.Lock()
        self._spares: dict[int, deque[tuple[float, str]]] = {}
        """By how much each spare holds on disk (512-byte units, as ``st_blocks``), each
        bucket oldest first."""
        self._count = 0
        self._names = itertools.count()
        self._stem = f"{_PREFIX}{os.getpid()}-{secrets.token_hex(3)}-"
        for entry in os.scandir(folder):
            if entry.name.startswith(_PREFIX) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    held = _held(entry.stat(follow_symlinks=False))
                    self._spares.setdefault(held, deque()).append((float("-inf"), entry.path))
                    self._count += 1

    def __len__(self) -> int:
        return self._count

    def open_temp(self, size: int, create_mode: int = 0o600) -> tuple[int, str, bool]:
        """``(fd, path, fresh)``: a rested spare opened for writing ``size`` bytes (one
        that holds no more blocks than they need), or (``fresh``) a new empty file
        made with ``create_mode`` (under the umask).

        Write a spare from offset 0, truncate it to the new length and set its mode
        (see :func:`write_over`); a fresh file needs neither."""
        need = -(-size // self._block) * (self._block // _SECTOR)
        while (path := self._take(need)) is not None:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                continue
            info = os.fstat(fd)
            if info.st_nlink == 1 and stat.S_ISREG(info.st_mode):
                return fd, path, False
            # Another name points at this inode (a person's hard link): not ours to write.
            os.close(fd)
            _unlink(path)
        while True:
            path = str(self.folder / f"{self._stem}{next(self._names)}")
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, create_mode)
            except FileExistsError:
                continue
            except FileNotFoundError:
                self.folder.mkdir(parents=True, exist_ok=True)  # someone removed it
                continue
            return fd, path, True

    def hold(self, target: Path) -> str | None:
        """Give the current version of ``target`` a second name here; None if there is none.

        Call just before renaming over ``target``; then :meth:`retire` the name
        (the rename went through) or :meth:`drop` it (it did not)."""
        while True:
            path = str(self.folder / f"{self._stem}{next(self._names)}")
            try:
                os.link(target, path, follow_symlinks=False)
            except FileExistsError:
                continue
            except OSError:
                return None  # no old version, or a filesystem without hard links
            return path

    def _take(self, need: int) -> str | None:
        """A rested spare holding exactly ``need`` units, or else the largest rested one
        holding fewer; None if there is none."""
        rested = time.monotonic() - self.rest_s
        with self._lock:
            if self._count:
                for held in sorted((h for h in self._spares if h <= need), reverse=True):
                    bucket = self._spares[held]
                    if bucket[0][0] <= rested:
                        _, path = bucket.popleft()
                        if not bucket:
                            del self._spares[held]
                        self._count -= 1
                        return path
        return None

    def retire(self, path: str, info: os.stat_result | None = None) -> None:
        """``path`` is now an old version nothing else names: keep it as a spare.
        ``info``: its status, if the caller has it at hand."""
        try:
            held = _held(info if info is not None else os.lstat(path))
        except OSError:
            return  # gone already: nothing to keep
        oldest = None
        with self._lock:
            self._spares.setdefault(held, deque()).append((time.monotonic(), path))
            self._count += 1
            if self._count > self.keep:
                first = min(self._spares, key=lambda h: self._spares[h][0][0])
                _, oldest = self._spares[first].popleft()
                if not self._spares[first]:
                    del self._spares[first]
                self._count -= 1
        if oldest is not None:
            _unlink(oldest)

    @staticmethod
    def drop(path: str) -> None:
        """Forget a temp file or a held name that will not be used."""
        _unlink(path)


def write_over(fd: int, data: bytes, *, sync: bool) -> os.stat_result:
    """Write ``data`` as the whole content of ``fd`` (from offset 0), sync it, close it.

    Returns the file's status once written."""
    try:
        fill(fd, data)
        if sync:
            os.fsync(fd)
        return os.fstat(fd)
    finally:
        os.close(fd)


def fill(fd: int, data: bytes, *, empty: bool = False) -> None:
    """Make ``data`` the whole content of ``fd``: written from offset 0, then cut to its
    length (a spare held a longer version) unless the file was ``empty``."""
    view = memoryview(data)
    offset = 0
    while offset < len(view):
        offset += os.pwrite(fd, view[offset:], offset)
    if not empty:
        os.ftruncate(fd, len(data))


def _libc(name: str, *argtypes: type[ctypes._SimpleCData[Any]]) -> Any | None:
    """``name`` from the C library, taking ``argtypes`` and returning an int; None
    where there is no such function."""
    try:
        call = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    call.argtypes = list(argtypes)
    call.restype = ctypes.c_int
    return call


def _renameat2(flags: int) -> Callable[[bytes, bytes], int] | None:
    """renameat2(..., flags) from the C library, where there is one."""
    path, fd = ctypes.c_char_p, ctypes.c_int
    renameat2 = _libc("renameat2", fd, path, fd, path, ctypes.c_uint)
    if renameat2 is None:
        return None
    at_fdcwd = -100
    return lambda src, dst: int(renameat2(at_fdcwd, src, at_fdcwd, dst, flags))


_LINUX = sys.platform.startswith("linux")
_RENAME_NOREPLACE = _renameat2(1) if _LINUX else None
_RENAME_EXCHANGE = _renameat2(2) if _LINUX else None


def _writeback() -> Callable[[int], object] | None:
    """sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE) from the C library (Linux)."""
    call = _libc(
        "sync_file_range", ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint
    )
    if call is None:
        return None
    return lambda fd: call(fd, 0, 0, 2)


_START_WRITEBACK = _writeback() if _LINUX else None


def start_writeback(fds: Iterable[int]) -> None:
    """Start writing these files' data out, without waiting (a hint: errors are the
    fsync's to report). Syncing a group of new files one after another otherwise
    allocates and commits each file's blocks in a journal commit of its own: 50 new
    notes took 3.0 to 3.4 ms to sync here, 1.8 ms with their writeback started first."""
    if _START_WRITEBACK is not None:
        for fd in fds:
            _START_WRITEBACK(fd)


def move_new(src: str, dst: str | os.PathLike[str]) -> None:
    """Give ``src`` the name ``dst`` and drop ``src``, unless ``dst`` exists
    (:class:`FileExistsError`, and ``src`` stays): one rename that refuses to
    replace, where the system has it; a hard link and an unlink elsewhere."""
    global _RENAME_NOREPLACE
    if _RENAME_NOREPLACE is not None:
        if _RENAME_NOREPLACE(os.fsencode(src), os.fsencode(dst)) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), os.fspath(dst))
        _RENAME_NOREPLACE = None  # a filesystem without it: link and unlink from now on
    os.link(src, dst)
    with contextlib.suppress(OSError):
        os.unlink(src)  # the new name keeps the inode: only a name goes


def exchange(first: str, second: str | os.PathLike[str]) -> bool:
    """Swap the files two names point at, in one step (both must exist); False where
    the system or the filesystem cannot, and then nothing happened."""
    global _RENAME_EXCHANGE
    if _RENAME_EXCHANGE is None:
        return False
    if _RENAME_EXCHANGE(os.fsencode(first), os.fsencode(second)) == 0:
        return True
    err = ctypes.get_errno()
    if err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        raise OSError(err, os.strerror(err), os.fspath(second))
    _RENAME_EXCHANGE = None  # a filesystem without it: plain renames from now on
    return False


_SECTOR = 512
"""The unit of ``st_blocks``."""


def _held(info: os.stat_result) -> int:
    """What a file holds on disk, in 512-byte units (its size rounded up where the
    system does not say)."""
    blocks = getattr(info, "st_blocks", None)
    return int(blocks) if blocks is not None else -(-info.st_size // _SECTOR)


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
