"""The run directory: what acl writes there, what ``--overwrite`` may remove, and one writer at a time.

``--overwrite`` never removes a directory, only the entries acl itself writes (``RUN_ENTRIES``); a folder
holding anything else, the working directory or one of its parents, the home directory or a symbolic link
is refused before anything is touched. A run holds an OS lock on ``.lock`` for its whole life: the kernel
releases it when the process ends, however it ends, so a killed run never leaves a stale lock.
"""
from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

from .errors import UserError

LOCK = ".lock"
RUN_ENTRIES = frozenset({"config.yaml", "params.json", "metrics.csv", "final.json", "run.json", "last.pt", "best.pt",
                         "tb", LOCK})


def _is_temp(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")  # an atomic write cut short (checkpoint.atomic_write)


def foreign_entries(run_dir: Path) -> list[str]:
    """Names in ``run_dir`` that acl did not write, sorted."""
    return sorted(p.name for p in run_dir.iterdir() if p.name not in RUN_ENTRIES and not _is_temp(p.name))


def _protected(path: Path) -> str | None:
    """Why ``path`` must never be emptied, or None."""
    real, cwd = path.resolve(), Path.cwd().resolve()
    if real == cwd:
        return "it is the current directory"
    if real in cwd.parents:
        return "it holds the current directory"
    if real == Path.home().resolve():
        return "it is the home directory"
    if real == Path(real.anchor):
        return "it is the filesystem root"
    return None


def check_replaceable(run_dir: Path) -> None:
    """Refuse (changing nothing) unless ``--overwrite`` may clear ``run_dir``: absent, empty, or an acl run."""
    if run_dir.is_symlink():
        raise UserError(f"refusing to overwrite {run_dir}: it is a symbolic link; give the directory it points to")
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} is a file")
    why = _protected(run_dir)
    if why:
        raise UserError(f"refusing to overwrite {run_dir}: {why}; give --out a run directory of its own")
    foreign = foreign_entries(run_dir)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise UserError(f"refusing to overwrite {run_dir}: it is not an acl run directory (it holds {shown}); "
                        "--overwrite only replaces what acl wrote")


def clear(run_dir: Path) -> None:
    """Remove what acl wrote in ``run_dir`` (checked by :func:`check_replaceable`), keeping the lock we hold."""
    for entry in run_dir.iterdir():
        if entry.name == LOCK or not (entry.name in RUN_ENTRIES or _is_temp(entry.name)):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def remove_stale_temps(run_dir: Path) -> None:
    for stale in run_dir.glob(".*.tmp"):  # left by a process killed while writing
        stale.unlink()


class RunLock:
    """An exclusive ``flock`` on ``run_dir/.lock`` holding the owner's pid; refuses a second writer."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / LOCK
        self.file = None

    def __enter__(self) -> RunLock:
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            f.close()
            raise UserError(f"{self.path.parent} is in use by another acl process (pid {holder}); wait for it to "
                            "end or stop it first") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self.file = f
        return self

    def __exit__(self, *exc) -> None:
        if self.file is not None:
            self.file.close()  # closing releases the lock
            self.file = None


def check_output_file(out: Path, overwrite: bool, reads: Path | None = None) -> None:
    """Refuse (changing nothing) to write ``out`` unless it is new, or an ordinary file ``--overwrite`` may
    replace: never a directory, a symbolic link, the file being read, or a file of an acl run directory."""
    if out.is_symlink():
        raise UserError(f"refusing to write {out}: it is a symbolic link; give the file it points to")
    if out.is_dir():
        raise UserError(f"{out} is a directory; --out names the file to write")
    if reads is not None and out.exists() and reads.exists() and out.resolve() == reads.resolve():
        raise UserError(f"refusing to write {out}: it would replace the checkpoint it reads")
    if out.exists() and not overwrite:
        raise UserError(f"{out} already exists; choose another --out or add --overwrite")
    parent = out.parent
    if out.name in RUN_ENTRIES and (parent / "config.yaml").is_file() and (parent / "last.pt").is_file():
        raise UserError(f"refusing to write {out}: it is a file of the acl run directory {parent}")
