"""wasi:filesystem for wasi:http guests: WasmDir and WasmMapDir as preopened directories.

The filesystem shares wasi:io's streams, so a host that defines those in Python must define
the filesystem too (see wasi_http.py). A path resolves beneath its preopened directory one
component at a time: '..' cannot climb out of it and symbolic links are not followed (their
use is refused with 'loop'), so a guest reaches nothing outside the mounted tree. A mount that
is not 'rw' refuses every change with 'read-only'. Files a request opened are closed when the
guest drops them, and all of them when the request ends.
"""

from __future__ import annotations

import errno
import functools
import os
import stat
import time
from collections.abc import Callable, Sequence
from typing import Any, Self

from .component_host import Err, Implementation

Mount = tuple[str, str, bool]  # host directory, guest path, writable

_ERRORS = {
    errno.EACCES: "access", errno.EAGAIN: "would-block", errno.EALREADY: "already", errno.EBADF: "bad-descriptor",
    errno.EBUSY: "busy", errno.EDQUOT: "quota", errno.EEXIST: "exist", errno.EFBIG: "file-too-large",
    errno.EINVAL: "invalid", errno.EISDIR: "is-directory", errno.ELOOP: "loop", errno.EMLINK: "too-many-links",
    errno.ENAMETOOLONG: "name-too-long", errno.ENOENT: "no-entry", errno.ENOMEM: "insufficient-memory",
    errno.ENOSPC: "insufficient-space", errno.ENOTDIR: "not-directory", errno.ENOTEMPTY: "not-empty",
    errno.EOPNOTSUPP: "unsupported", errno.EPERM: "not-permitted", errno.EROFS: "read-only",
    errno.ESPIPE: "invalid-seek", errno.ETXTBSY: "text-file-busy", errno.EXDEV: "cross-device",
    errno.EMFILE: "insufficient-memory", errno.ENFILE: "insufficient-memory",
}
_TYPES = {stat.S_IFDIR: "directory", stat.S_IFREG: "regular-file", stat.S_IFLNK: "symbolic-link",
          stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket", stat.S_IFCHR: "character-device",
          stat.S_IFBLK: "block-device"}
_OPEN = os.O_CLOEXEC | os.O_NOFOLLOW


def _errors(function: Callable[..., Any]) -> Callable[..., Any]:
    """An OSError becomes the error-code the guest gets."""
    @functools.wraps(function)
    def call(*args: Any) -> Any:
        try:
            return function(*args)
        except OSError as e:
            raise Err(_ERRORS.get(e.errno or 0, "io")) from None
    return call


class Descriptor:
    """An open directory or file of one mount."""

    __slots__ = ("fd", "flags", "open_files", "writable")

    def __init__(self, fd: int, writable: bool, flags: frozenset[str], open_files: set[int]) -> None:
        self.fd = fd
        self.writable = writable  # the mount's: may anything beneath it change
        self.flags = flags  # descriptor-flags it was opened with
        self.open_files = open_files
        open_files.add(fd)

    def release(self) -> None:
        if self.fd in self.open_files:
            self.open_files.discard(self.fd)
            os.close(self.fd)

    def changing(self) -> None:
        if not self.writable:
            raise Err("read-only")


class FileInput:
    """A file as wasi:io's input-stream (read as wasi_http_resources.InputStream reads)."""

    __slots__ = ("fd", "pos")

    def __init__(self, fd: int, offset: int) -> None:
        self.fd = fd
        self.pos = offset

    def read(self, n: int) -> bytes:
        data = os.pread(self.fd, min(n, 1 << 20), self.pos)
        if not data and n:
            raise Err("closed")
        self.pos += len(data)
        return data


class FileSink:
    """Where an output-stream over a file writes (as wasi_http_resources.Sink takes writes)."""

    __slots__ = ("closed", "fd", "pos")

    def __init__(self, fd: int, offset: int | None) -> None:
        self.fd = fd
        self.pos = offset  # None: append
        self.closed = False

    def write(self, data: bytes) -> None:
        pos = os.fstat(self.fd).st_size if self.pos is None else self.pos
        written = os.pwrite(self.fd, data, pos)
        if self.pos is not None:
            self.pos += written


def _components(path: str) -> list[str]:
    """The path's components with '.' and '..' resolved; Err if it is absolute or climbs out."""
    if not path or path.startswith("/") or "\0" in path:
        raise Err("not-permitted" if path.startswith("/") else "invalid")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise Err("not-permitted")
            parts.pop()
        else:
            parts.append(part)
    return parts


class _Parent:
    """The directory holding a path's last component, opened beneath `base` without following
    symbolic links; `name` is that component ('.' for the base itself)."""

    def __init__(self, base: Descriptor, path: str) -> None:
        parts = _components(path)
        self.name = parts.pop() if parts else "."
        self.fd = base.fd
        self._owned: list[int] = []
        try:
            for part in parts:
                self.fd = os.open(part, os.O_PATH | os.O_DIRECTORY | _OPEN, dir_fd=self.fd)
                self._owned.append(self.fd)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for fd in self._owned:
            os.close(fd)
        self._owned.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _stat(st: os.stat_result) -> tuple[Any, ...]:
    def when(ns: int) -> tuple[int, int]:
        return (ns // 1_000_000_000, ns % 1_000_000_000)
    return (_TYPES.get(stat.S_IFMT(st.st_mode), "unknown"), st.st_nlink, st.st_size,
            when(st.st_atime_ns), when(st.st_mtime_ns), when(st.st_ctime_ns))


def _hash(st: os.stat_result) -> tuple[int, int]:
    return (st.st_ino & (2**64 - 1), st.st_dev & (2**64 - 1))


class Filesystem:
    """The mounts of the request in flight, opened when the guest first asks for them.
    `output_stream` makes wasi:io's output-stream around a FileSink."""

    def __init__(self, output_stream: Callable[[FileSink], Any]) -> None:
        self.output_stream = output_stream
        self.mounts: Sequence[Mount] = ()
        self.open_files: set[int] = set()

    def begin(self, mounts: Sequence[Mount]) -> None:
        self.mounts = mounts

    def end(self) -> None:
        """Close what the request left open."""
        for fd in self.open_files:
            os.close(fd)
        self.open_files.clear()

    def get_directories(self) -> list[tuple[Descriptor, str]]:
        found = []
        for host, guest, writable in self.mounts:
            try:
                fd = os.open(host, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError as e:
                raise OSError(
                    e.errno, f"cannot open WasmDir/WasmMapDir {host} (guest path {guest}): {e.strerror}"
                ) from None
            found.append((Descriptor(fd, writable, frozenset({"read"} | ({"mutate-directory"} if writable else set())),
                                     self.open_files), guest))
        return found

    @_errors
    def open_at(self, base: Descriptor, path_flags: frozenset[str], path: str, open_flags: frozenset[str],
                flags: frozenset[str]) -> Descriptor:
        changes = "write" in flags or bool(open_flags & {"create", "truncate"})
        if changes:
            base.changing()
        mode = os.O_RDWR if {"read", "write"} <= flags else os.O_WRONLY if "write" in flags else os.O_RDONLY
        for name, bit in (("create", os.O_CREAT), ("exclusive", os.O_EXCL), ("truncate", os.O_TRUNC),
                          ("directory", os.O_DIRECTORY)):
            if name in open_flags:
                mode |= bit
        with _Parent(base, path) as parent:
            fd = os.open(parent.name, mode | _OPEN, 0o644, dir_fd=parent.fd)
        return Descriptor(fd, base.writable, flags, self.open_files)

    @_errors
    def stat_at(self, base: Descriptor, path_flags: frozenset[str], path: str) -> tuple[Any, ...]:
        with _Parent(base, path) as parent:
            return _stat(os.stat(parent.name, dir_fd=parent.fd, follow_symlinks=False))

    @_errors
    def metadata_hash_at(self, base: Descriptor, path_flags: frozenset[str], path: str) -> tuple[int, int]:
        with _Parent(base, path) as parent:
            return _hash(os.stat(parent.name, dir_fd=parent.fd, follow_symlinks=False))

    @_errors
    def read_directory(self, base: Descriptor) -> list[tuple[str, str]]:
        with os.scandir(base.fd) as entries:
            found = []
            for entry in entries:
                mode = entry.stat(follow_symlinks=False).st_mode
                found.append((_TYPES.get(stat.S_IFMT(mode), "unknown"), entry.name))
        return found

    @staticmethod
    def next_entry(entries: list[tuple[str, str]]) -> tuple[str, str] | None:
        return entries.pop(0) if entries else None

    @_errors
    def read(self, file: Descriptor, length: int, offset: int) -> tuple[bytes, bool]:
        data = os.pread(file.fd, min(length, 1 << 20), offset)
        return data, len(data) < length

    @_errors
    def write(self, file: Descriptor, data: bytes, offset: int) -> int:
        file.changing()
        return os.pwrite(file.fd, data, offset)

    def write_via_stream(self, file: Descriptor, offset: int | None) -> Any:
        file.changing()
        return self.output_stream(FileSink(file.fd, offset))

    @_errors
    def changed_at(self, base: Descriptor, path: str, change: Callable[[str, int], None]) -> None:
        base.changing()
        with _Parent(base, path) as parent:
            change(parent.name, parent.fd)

    @_errors
    def rename_at(self, base: Descriptor, old: str, target: Descriptor, new: str) -> None:
        base.changing()
        target.changing()
        with _Parent(base, old) as source, _Parent(target, new) as destination:
            os.rename(source.name, destination.name, src_dir_fd=source.fd, dst_dir_fd=destination.fd)

    @_errors
    def readlink_at(self, base: Descriptor, path: str) -> str:
        with _Parent(base, path) as parent:
            return os.readlink(parent.name, dir_fd=parent.fd)

    def implementations(self) -> dict[str, Implementation]:
        d = "[method]descriptor."

        def refused(*args: Any) -> None:
            raise Err("not-permitted")

        def fstat(f: Descriptor) -> os.stat_result:
            return os.fstat(f.fd)

        def sync(f: Descriptor) -> None:
            if f.writable:
                os.fsync(f.fd)

        def set_size(f: Descriptor, size: int) -> None:
            f.changing()
            os.ftruncate(f.fd, size)

        def set_times(f: Descriptor, atime: Any, mtime: Any) -> None:
            f.changing()
            os.utime(f.fd, ns=_times(os.fstat(f.fd), atime, mtime))

        def set_times_at(base: Descriptor, flags: frozenset[str], path: str, atime: Any, mtime: Any) -> None:
            def change(name: str, fd: int) -> None:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                os.utime(name, ns=_times(st, atime, mtime), dir_fd=fd, follow_symlinks=False)
            self.changed_at(base, path, change)

        types: dict[str, Callable[..., Any]] = {
            d + "read-via-stream": lambda f, offset: FileInput(f.fd, offset),
            d + "write-via-stream": self.write_via_stream,
            d + "append-via-stream": lambda f: self.write_via_stream(f, None),
            d + "advise": lambda f, offset, length, advice: None,
            d + "sync-data": _errors(sync),
            d + "sync": _errors(sync),
            d + "get-flags": lambda f: f.flags,
            d + "get-type": _errors(lambda f: _stat(fstat(f))[0]),
            d + "set-size": _errors(set_size),
            d + "set-times": _errors(set_times),
            d + "read": self.read,
            d + "write": self.write,
            d + "read-directory": self.read_directory,
            d + "create-directory-at": lambda f, p: self.changed_at(f, p, lambda n, fd: os.mkdir(n, 0o755, dir_fd=fd)),
            d + "stat": _errors(lambda f: _stat(fstat(f))),
            d + "stat-at": self.stat_at,
            d + "set-times-at": set_times_at,
            d + "link-at": refused,
            d + "open-at": self.open_at,
            d + "readlink-at": self.readlink_at,
            d + "remove-directory-at": lambda f, p: self.changed_at(f, p, lambda n, fd: os.rmdir(n, dir_fd=fd)),
            d + "rename-at": self.rename_at,
            d + "symlink-at": refused,
            d + "unlink-file-at": lambda f, p: self.changed_at(f, p, lambda n, fd: os.unlink(n, dir_fd=fd)),
            d + "is-same-object": lambda f, g: _hash(fstat(f)) == _hash(fstat(g)),
            d + "metadata-hash": _errors(lambda f: _hash(fstat(f))),
            d + "metadata-hash-at": self.metadata_hash_at,
            "[method]directory-entry-stream.read-directory-entry": self.next_entry,
            "filesystem-error-code": lambda error: None,
        }
        return {"wasi:filesystem/types": types, "wasi:filesystem/preopens": {"get-directories": self.get_directories}}


def _times(st: os.stat_result, atime: Any, mtime: Any) -> tuple[int, int]:
    """wasi new-timestamps ('no-change', 'now', ('timestamp', (s, ns))) as os.utime's ns pair."""
    now = time.time_ns()

    def pick(value: Any, current: int) -> int:
        if value == "no-change":
            return current
        if value == "now":
            return now
        seconds, nanoseconds = value[1]
        return int(seconds) * 1_000_000_000 + int(nanoseconds)
    return pick(atime, st.st_atime_ns), pick(mtime, st.st_mtime_ns)
