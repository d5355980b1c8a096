"""Checkpoints: plain data only (loads with ``weights_only=True``), written atomically."""
from __future__ import annotations

import io
import os
import pickle
import random
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import UserError

FORMAT = "acl-checkpoint"
VERSION = 1


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def atomic_write(path: Path, write) -> None:
    """Write through a temp file in the same folder, fsync, then rename: a reader never sees half a file."""
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


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    state = {"format": FORMAT, "version": VERSION, **state}
    # serialised in memory first: torch.save writing to a full disk fails inside C++ with an unreadable
    # message; a plain write fails with the OSError (ENOSPC, EFBIG) a user can act on
    buffer = io.BytesIO()
    torch.save(state, buffer)
    try:
        atomic_write(Path(path), lambda f: f.write(buffer.getbuffer()))
    except OSError as e:
        raise UserError(f"cannot write checkpoint {path}: {e.strerror or e}; the previous one is untouched") from None


def copy_checkpoint(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    def copy(f) -> None:
        with open(src, "rb") as source:
            shutil.copyfileobj(source, f)

    try:
        atomic_write(Path(dst), copy)
    except OSError as e:
        raise UserError(f"cannot write checkpoint {dst}: {e.strerror or e}; the previous one is untouched") from None


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load an acl checkpoint (a file, or a run directory: its best.pt, else last.pt) without running code."""
    path = Path(path)
    if path.is_dir():
        found = next((path / n for n in ("best.pt", "last.pt") if (path / n).is_file()), None)
        if found is None:
            raise UserError(f"no checkpoint in {path} (looked for best.pt and last.pt)")
        path = found
    if not path.exists():
        raise UserError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if unsafe:
            raise UserError(f"refusing to load {path}: it would import {unsafe.group(1)} (checkpoints must be "
                            "plain data)") from None
        raise UserError(f"{path} is not a readable checkpoint (truncated or another format)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError):
        raise UserError(f"{path} is not a readable checkpoint (truncated or another format)") from None
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path} is not an acl checkpoint (no '{FORMAT}' marker); "
                        "files from the authors' code need converting first")
    return state


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state(legacy=True)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
