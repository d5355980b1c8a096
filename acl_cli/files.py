"""Files acl reads and writes, made safe against what a sent file can be.

Reading: only regular files (a FIFO would block, ``/dev/zero`` never ends), never more than a cap checked
before reading. Writing: a temp file in the same folder, fsync, then rename, so a reader sees the old file or
the new one and a symbolic link at the destination is replaced, never written through.
"""
from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

from .errors import UserError

MAX_TEXT_BYTES = 16 << 20  # run.json, metrics.csv, params.json: a long run's are a few hundred KB


def _kind(mode: int) -> str:
    return ("a directory" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else
            "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else
            "not a regular file")


def check_regular(path: str | os.PathLike, what: str = "") -> os.stat_result:
    """``path``'s stat if it is a regular file (links followed); else a one-line error, without opening it."""
    label = f"{what} {path}".strip()
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UserError(f"{label} not found") from None
    except OSError as e:
        raise UserError(f"cannot read {label}: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"{label} is {_kind(st.st_mode)}, not a regular file")
    return st


def read_bytes(path: str | os.PathLike, limit: int, what: str = "") -> bytes:
    """The whole of a regular file of at most ``limit`` bytes. Opened non-blocking and checked on the open
    descriptor, so a file swapped for a FIFO after the check cannot hang the read."""
    label = f"{what} {path}".strip()
    check_regular(path, what)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise UserError(f"cannot read {label}: {e.strerror or e}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UserError(f"{label} is {_kind(st.st_mode)}, not a regular file")
        if st.st_size > limit:
            raise UserError(f"{label}: {st.st_size:,} bytes is too large (at most {limit:,})")
        data = f.read(limit + 1)
    if len(data) > limit:  # grew while we read
        raise UserError(f"{label}: more than {limit:,} bytes is too large")
    return data


def read_text(path: str | os.PathLike, limit: int = MAX_TEXT_BYTES, what: str = "") -> str:
    try:
        return read_bytes(path, limit, what).decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{f'{what} {path}'.strip()} is not a UTF-8 text file") from None


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def atomic_write(path: Path, write) -> None:
    """Write through a temp file in the same folder, fsync, then rename: a reader never sees half a file,
    and a link at ``path`` is replaced by the file, never followed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a plain open would honour the umask
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    """Replace a text file atomically (temp + fsync + rename): a kill leaves the old file or the new one."""
    try:
        atomic_write(Path(path), lambda f: f.write(text.encode()))
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None


def open_regular_no_follow(path: Path, what: str) -> int:
    """A descriptor on ``path`` for reading and writing, created if absent; refuses a symbolic link (never
    followed), a directory, a FIFO or a device, and says why in one line."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UserError(f"refusing to use {what} {path}: it is a symbolic link (acl never writes through "
                            "one); remove it") from None
        if e.errno == errno.EISDIR:
            raise UserError(f"{what} {path} is a directory; remove it") from None
        raise UserError(f"cannot open {what} {path}: {e.strerror or e}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise UserError(f"{what} {path} is {_kind(mode)}, not a regular file; remove it")
    return fd
