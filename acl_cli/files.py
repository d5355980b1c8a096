"""Files acl reads and writes, made safe against what a sent file can be.

Reading: only regular files (a FIFO would block, ``/dev/zero`` never ends), never more than a cap checked
before reading. Writing: a temp file in the same folder, fsync, then rename, so a reader sees the old file or
the new one and a symbolic link at the destination is replaced, never written through.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import UserError

MAX_TEXT_BYTES = 16 << 20  # run.json, metrics.csv, params.json: a long run's are a few hundred KB


def describe_kind(mode: int) -> str:
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
        raise UserError(f"{label} is {describe_kind(st.st_mode)}, not a regular file")
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
            raise UserError(f"{label} is {describe_kind(st.st_mode)}, not a regular file")
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


def read_json(path: str | os.PathLike, what: str = "") -> Any:
    """A JSON file of at most ``MAX_TEXT_BYTES`` as plain data; anything else (not JSON, nested thousands
    deep) is one line naming the file."""
    label = f"{what} {path}".strip()
    text = read_text(path, what=what)
    try:  # strict: NaN and Infinity are not JSON (a record that held them would be rewritten with them)
        return json.loads(text, parse_constant=_not_json)
    except RecursionError:
        raise UserError(f"{label}: JSON nested too deeply") from None
    except ValueError:
        raise UserError(f"{label} is not valid JSON") from None


def _not_json(constant: str):
    raise ValueError(f"{constant} is not JSON")


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


# acl's temp files: ``.NAME.XXXXXXXX.tmp``, mkstemp's eight random characters; cleanup removes these only
TEMP_NAME = re.compile(r"\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp")


def temp_target(name: str) -> str | None:
    """The file an acl temp file named ``name`` was to become, or None if acl did not make ``name``."""
    match = TEMP_NAME.fullmatch(name)
    return match.group("target") if match else None


@contextlib.contextmanager
def _parents_made(path: Path) -> Iterator[None]:
    """The folders above ``path``, made if missing; those made are removed again if the block fails (a file
    name too long, an export that fails): a failed write leaves nothing behind."""
    made = []
    for parent in path.parents:
        if parent.is_dir():
            break
        made.append(parent)
    if made and ".." in path.parent.parts:  # x/../y: as for any program, only through an x that exists
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path.parent))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield
    except BaseException:
        for folder in made:  # deepest first; one that holds something now stays
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def _temp_beside(path: Path) -> tuple[int, str]:
    """A fresh temp file beside ``path``, created exclusively under an unpredictable name (a planted link or
    file is never written through), with the permissions a plain open would give."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600
    return fd, tmp


def atomic_write(path: Path, write) -> None:
    """Write through a temp file in the same folder, fsync, then rename: a reader never sees half a file,
    and a link at ``path`` is replaced by the file, never followed."""
    with _parents_made(path):
        _atomic_write(path, write)


def _atomic_write(path: Path, write) -> None:
    fd, tmp = _temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """:func:`atomic_write` for writers that take a file name (the ONNX exporter): the temp file's path,
    renamed over ``path`` when the block ends, removed if it fails."""
    with _parents_made(path):
        fd, tmp = _temp_beside(path)
        os.close(fd)
        try:
            yield Path(tmp)
            fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
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
        raise UserError(f"{what} {path} is {describe_kind(mode)}, not a regular file; remove it")
    return fd
