"""The run directory: what acl writes there, whether a run may start, be replaced or resume there, and one
writer at a time.

A folder is an acl run only if acl made it: it holds the run record ``run.json`` (the first file a run
writes) or a checkpoint that loads. A user's folder that merely holds a ``config.yaml`` is not one.
``--overwrite`` never removes a directory, only the entries acl itself writes (``RUN_ENTRIES``) in a run;
a folder that is not a run, holds anything else, is the working directory or one of its parents, the home
directory or a symbolic link is refused before anything is touched. A run holds an OS lock on ``.lock`` for
its whole life: the kernel releases it when the process ends, however it ends, so a killed run never leaves
a stale lock. A resume may change only what does not alter the run it continues (``RESUMABLE``).
"""
from __future__ import annotations

import fcntl
import os
import re
import shlex
import shutil
import stat
from pathlib import Path
from typing import Any

from .checkpoint import load_checkpoint
from .config import (NOT_COMPUTATIONAL, Config, ConfigError, apply_overrides, build_config, flatten, lookup,
                     quote)
from .errors import UserError
from .files import check_regular, describe_kind, open_regular_no_follow, read_json, temp_target
from .models.external import check_import_allowed

LOCK = ".lock"
RECORD = "run.json"  # written first when acl takes a folder: the mark of a run
RUN_ENTRIES = frozenset({"config.yaml", "params.json", "metrics.csv", "final.json", "run.json", "last.pt", "best.pt",
                         "tb", LOCK})


def _is_temp(name: str) -> bool:
    """An atomic write of one of the run's files, cut short (files.atomic_write's exact names): a user's
    ``.notes.tmp`` is not one, and is never removed."""
    return temp_target(name) in RUN_ENTRIES


def foreign_entries(run_dir: Path) -> list[str]:
    """Names in ``run_dir`` that acl did not write, sorted: a folder named like one of the run's files
    (``best.pt/``) is not acl's either, nor a file named ``tb``."""
    return sorted(p.name for p in run_dir.iterdir() if not _is_temp(p.name) and (
        p.name not in RUN_ENTRIES or (p.is_dir() and not p.is_symlink()) != (p.name == "tb")))


def check_no_missing_walk(path: Path) -> None:
    """Refuse a path that goes up (``..``) out of a folder that does not exist: it would be created on the way
    (``--out junk/..``), and until then the path cannot be compared with what acl reads or may replace."""
    parts = path.parts
    for i, part in enumerate(parts):
        if part == ".." and i and not Path(*parts[:i]).is_dir():
            raise UserError(f"{path}: {Path(*parts[:i])} does not exist, so '..' after it cannot be followed; give "
                            "the folder without it")


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


def is_acl_run(run_dir: Path) -> bool:
    """Whether acl made ``run_dir``: its run record reads as one, or one of its checkpoints loads."""
    try:
        record = read_json(run_dir / RECORD, what="run record")
        if isinstance(record, dict) and isinstance(record.get("sessions"), list):
            return True
    except UserError:
        pass
    for name in ("last.pt", "best.pt"):
        if (run_dir / name).is_file():
            try:
                load_checkpoint(run_dir / name)
                return True
            except UserError:
                pass
    return False


def loader_began_with(run_dir: Path, device) -> str | None:
    """The loader a run began with, "device" or "torch", from its run record, so that a resume keeps it. A run
    recorded before acl wrote that down began under the rule of then: ``auto`` meant the device loader only
    on CUDA (None: the rule of now, which on CUDA is the same)."""
    try:
        first = read_json(run_dir / RECORD, what="run record")["sessions"][0]
        loader = first.get("loader") if isinstance(first, dict) else None
    except (UserError, KeyError, IndexError, TypeError):
        loader = None
    if loader is None:
        return None if device.type == "cuda" else "torch"
    return "device" if str(loader).startswith("device") else "torch"


def _entries(run_dir: Path) -> list[str]:
    """What ``run_dir`` holds, less our lock and the temps of cut-short writes, sorted."""
    return sorted(p.name for p in run_dir.iterdir() if p.name != LOCK and not _is_temp(p.name))


def _shown(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def check_new_run(run_dir: Path) -> None:
    """Refuse (changing nothing) to start a run in ``run_dir`` without ``--overwrite``: it must be absent or empty."""
    check_no_missing_walk(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} is a file")
    entries = _entries(run_dir) if run_dir.is_dir() else []
    if not entries:
        return
    if not is_acl_run(run_dir):  # not ours: --overwrite would refuse it too, so never advise it
        raise UserError(f"run directory {run_dir} is not empty and is not an acl run (it holds {_shown(entries)}); "
                        "give --out a new or empty folder")
    if (run_dir / "final.json").is_file() and (run_dir / "last.pt").is_file():  # finished: resume only for more
        how = (f"it finished; to train it longer, --resume {shlex.quote(str(run_dir))} --set train.epochs=N (more "
               "epochs than it had); --overwrite to replace it")
    elif (run_dir / "last.pt").is_file():
        how = f"use --resume {shlex.quote(str(run_dir))} to continue it, --overwrite to replace it"
    else:  # it stopped before its first checkpoint: there is nothing to resume
        how = "it has no checkpoint to resume; use --overwrite to start it again"
    raise UserError(f"run directory {run_dir} already exists; {how}, or --out for another folder")


def check_replaceable(run_dir: Path) -> None:
    """Refuse (changing nothing) unless ``--overwrite`` may clear ``run_dir``: absent, empty, or an acl run."""
    check_no_missing_walk(run_dir)
    if run_dir.is_symlink():
        raise UserError(f"refusing to overwrite {run_dir}: it is a symbolic link; give the directory it points to")
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} is a file")
    why = _protected(run_dir)
    if why:
        raise UserError(f"refusing to overwrite {run_dir}: {why}; give --out a run directory of its own")
    entries = _entries(run_dir)
    if entries and not is_acl_run(run_dir):
        raise UserError(f"refusing to overwrite {run_dir}: it is not an acl run directory (acl did not make it; it "
                        f"holds {_shown(entries)}); --overwrite only replaces acl's own runs")
    foreign = foreign_entries(run_dir)
    if foreign:  # an acl run, with files beside it that the run did not write (an export, notes)
        raise UserError(f"refusing to overwrite {run_dir}: besides the run it holds {_shown(foreign)}, which the "
                        "run did not write and --overwrite never removes; move them out of the folder, or give --out "
                        "another folder")


def check_not_reading(run_dir: Path, path: str | os.PathLike | None) -> None:
    """Refuse to clear ``run_dir`` when ``path`` (the config being read) lies inside it: acl never replaces
    the file it is reading (a hand-written config with its comments would be lost)."""
    if path is None or not run_dir.is_dir():
        return
    real = Path(path).resolve()
    if run_dir.resolve() in real.parents:
        raise UserError(f"refusing to overwrite {run_dir}: --config {path} lies inside it and would be replaced; "
                        "copy the config out of the run directory first")


def check_tb_not_a_link(run_dir: Path) -> None:
    """Run files are replaced by rename (a link there is replaced, never followed), but TensorBoard writes
    new files inside ``tb/``: a link there would be written through, so it is refused by name."""
    if (run_dir / "tb").is_symlink():
        raise UserError(f"refusing to write into {run_dir / 'tb'}: it is a symbolic link (acl never writes through "
                        "one); remove it")


def clear(run_dir: Path) -> None:
    """Remove what acl wrote in ``run_dir`` (checked by :func:`check_replaceable`), keeping the lock we hold."""
    for entry in run_dir.iterdir():
        if entry.name == LOCK or not (entry.name in RUN_ENTRIES or _is_temp(entry.name)):
            continue
        if entry.name == "tb" and entry.is_dir() and not entry.is_symlink():  # the only folder a run writes
            shutil.rmtree(entry)
        elif not entry.is_dir() or entry.is_symlink():
            entry.unlink()


def remove_if_only_lock(run_dir: Path) -> None:
    """Remove a folder this process created, if nothing but the lock is left in it."""
    try:
        if [p.name for p in run_dir.iterdir()] in ([], [LOCK]):
            (run_dir / LOCK).unlink(missing_ok=True)
            run_dir.rmdir()
    except OSError:
        pass  # best effort: a folder left behind holds nothing of the user's


def remove_stale_temps(run_dir: Path) -> None:
    for stale in run_dir.iterdir():  # left by a process killed while writing
        if _is_temp(stale.name):
            stale.unlink()


class RunLock:
    """An exclusive ``flock`` on ``run_dir/.lock`` holding the owner's pid; refuses a second writer."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / LOCK
        self.file = None

    def __enter__(self) -> RunLock:
        # never through a link (a .lock pointing at a user's file would be truncated), never a FIFO or folder
        f = os.fdopen(open_regular_no_follow(self.path, "the run's lock file"), "r+")
        try:
            self._check_ours(f)
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read(64).strip() or "unknown"
            f.close()
            raise UserError(f"{self.path.parent} is in use by another acl process (pid {holder}); wait for it to "
                            "end or stop it first") from None
        except BaseException:
            f.close()
            raise
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self.file = f
        return self

    def _check_ours(self, f) -> None:
        """Truncate only a lock acl made: one link (a hard link to a user's file has two) holding a pid or
        nothing. Checked on the open descriptor, before anything is written."""
        st = os.fstat(f.fileno())
        if st.st_nlink > 1:
            raise UserError(f"refusing to use {self.path}: it is a hard link ({st.st_nlink} names for one file, so "
                            "writing the lock would change another file); remove it")
        text = f.read(65)
        if not re.fullmatch(r"\d{0,20}\n?", text):
            raise UserError(f"refusing to use {self.path}: it holds something other than an acl process id (acl "
                            "did not write it); move it away")

    def __exit__(self, *exc) -> None:
        if self.file is not None:
            self.file.close()  # closing releases the lock
            self.file = None


def lock_holder(run_dir: Path) -> str | None:
    """The pid of a live acl process training in ``run_dir`` (it holds the lock), or None. Only looks: the lock
    file is opened read-only, never created or followed through a link."""
    try:
        fd = os.open(run_dir / LOCK, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None  # no lock file (or a link, a folder): no acl process holds it
    with os.fdopen(fd, "r") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return f.read(64).strip() or "unknown"
        return None


def check_output_file(out: Path, overwrite: bool, reads: Path | None = None) -> None:
    """Refuse (changing nothing) to write ``out`` unless it is new, or a regular file ``--overwrite`` may
    replace: never a directory, a link, a FIFO or device, the file being read, or a file of an acl run."""
    try:
        _check_output_file(out, overwrite, reads)
    except OSError as e:  # a folder on the way that cannot be searched
        raise UserError(f"cannot write {out}: {e.strerror or e}") from None


def _check_output_file(out: Path, overwrite: bool, reads: Path | None) -> None:
    check_no_missing_walk(out)
    if out.is_symlink():
        raise UserError(f"refusing to write {out}: it is a symbolic link; give the file it points to")
    if out.is_dir() or out.name in ("", ".", ".."):  # a/.. would make a/ before the write fails
        raise UserError(f"{out} is a directory; --out names the file to write")
    exists = out.exists()
    if exists and not stat.S_ISREG(out.stat().st_mode):
        raise UserError(f"refusing to write {out}: it is {describe_kind(out.stat().st_mode)}, and acl replaces only a "
                        "regular file; give another path")
    if reads is not None and exists and reads.exists() and out.resolve() == reads.resolve():
        raise UserError(f"refusing to write {out}: it would replace the checkpoint it reads")
    run = _run_holding(out)
    if run is not None:
        raise UserError(f"refusing to write {out}: it is a file of the acl run directory {run}; give a path "
                        "outside it")
    if exists and not overwrite:
        raise UserError(f"{out} already exists; give another path or add --overwrite")


def _run_holding(out: Path) -> Path | None:
    """The acl run ``out`` would be a file of (one of the names a run writes, or anything under its tb/)."""
    parent = out.parent
    if out.name in RUN_ENTRIES and parent.is_dir() and is_acl_run(parent):
        return parent
    if parent.name == "tb" and parent.parent.is_dir() and is_acl_run(parent.parent):
        return parent.parent
    return None


# --------------------------------------------------------------------------------------------------
# Which runs may start or resume here, and what a resume may change


def check_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse before anything is built or written."""
    if resume:
        check_no_missing_walk(run_dir)
        if not (run_dir / "last.pt").is_file():
            if (run_dir / "last.pt").exists():  # a FIFO, a device, a folder: say what it is
                check_regular(run_dir / "last.pt", "cannot resume:")
            raise UserError(f"cannot resume: {run_dir / 'last.pt'} does not exist")
        check_tb_not_a_link(run_dir)
    elif overwrite:
        check_replaceable(run_dir)
    else:
        check_new_run(run_dir)


# What a resume may change: none of these alters the model, the data stream or the updates already
# applied. The learning rate and schedule are rebuilt at the step reached, as a fresh run would have them.
# A distillation teacher may be found at another path: its weights are checked against the run's record.
RESUMABLE = ("train.epochs", *NOT_COMPUTATIONAL, "optim.lr", "schedule", "distill.teacher", "distill.pretrained")


def _under(key: str, sections: tuple[str, ...]) -> bool:
    """Whether a dotted key is one of ``sections`` or lies inside one (``schedule`` holds ``schedule.name``)."""
    return any(key == s or key.startswith(s + ".") for s in sections)


def changed_settings(old: Config, new: Config, ignoring: tuple[str, ...] = ()) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (old, new)}`` for every setting that differs, but those under ``ignoring``. A block
    that is null on one side (``model.csg``, ``distill``) is one change of the whole block, not one per key."""
    a_tree, b_tree = old.to_dict(), new.to_dict()
    a, b = flatten(a_tree), flatten(b_tree)
    changes: dict[str, tuple[Any, Any]] = {}
    for leaf in sorted(a.keys() | b.keys()):
        key = _null_block(leaf, a, b) or leaf
        if key in changes or _under(key, ignoring):
            continue
        before, after = lookup(a_tree, key), lookup(b_tree, key)
        if before != after:
            changes[key] = (before, after)
    return changes


def _null_block(leaf: str, a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """The outermost section above (or at) ``leaf`` that one side has as null, if any."""
    parts = leaf.split(".")
    for n in range(1, len(parts) + 1):
        section = ".".join(parts[:n])
        if (section in a and a[section] is None) != (section in b and b[section] is None):
            return section
    return None


def shown(value: Any, limit: int = 60) -> str:
    """A setting's value in a one-line message: ``null``, ``{…}`` for a whole block, else its quoted repr."""
    return "null" if value is None else "{…}" if isinstance(value, dict) else quote(value, limit)


def resume_config(run_dir: str | Path, overrides: tuple[str, ...] = (), allow_imports: tuple[str, ...] = ()) -> Config:
    """The config stored in a run's ``last.pt`` with overrides applied; refuses changes a resume cannot honour,
    and a factory module the run names unless ``allow_imports`` lists it."""
    check_run_dir(Path(run_dir), resume=True, overwrite=False)
    state = load_checkpoint(Path(run_dir) / "last.pt")
    old, new = build_config(state["config"]), build_config(apply_overrides(state["config"], overrides))
    check_import_allowed(state["config"], new.to_dict(), str(run_dir), allow_imports)
    refused = changed_settings(old, new, ignoring=RESUMABLE)
    if refused:
        key, (before, after) = next(iter(refused.items()))  # the first, in key order
        raise ConfigError(f"--resume cannot change {key} ({shown(before)} -> {shown(after)}): the run would not "
                          f"continue as it began; resume may change {', '.join(RESUMABLE)}.*; start a new run "
                          "with --config for anything else")
    return new
