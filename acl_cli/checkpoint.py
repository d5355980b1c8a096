"""Checkpoints: plain data only (loads with ``weights_only=True``), written atomically."""
from __future__ import annotations

import errno
import io
import os
import pickle
import random
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import UserError
from .files import atomic_write, check_regular

FORMAT = "acl-checkpoint"
VERSION = 1


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


def check_zip_sizes(path: Path, size: int) -> None:
    """Refuse a zip whose entries declare more data than the file holds: torch.save stores its tensors
    uncompressed, so only a crafted file (one deflated 2 GB tensor in 2 MB) declares more, and torch.load
    would allocate all of it before noticing anything."""
    try:
        with zipfile.ZipFile(path) as archive:
            declared = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # not a zip (a legacy torch.save file, or no checkpoint at all): torch.load says which
    if declared > size:
        raise UserError(f"refusing to load {path}: its entries declare {declared:,} bytes in a {size:,}-byte file "
                        "(compressed data torch.save never writes: a zip bomb?)")


def torch_load(path: str | os.PathLike, what: str = "checkpoint") -> Any:
    """``torch.load`` of plain data (``weights_only``) from a regular file, never a FIFO or a device, with
    its declared sizes checked first; each failure is one line naming the file."""
    path = Path(path)
    size = check_regular(path, what).st_size
    check_zip_sizes(path, size)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's warnings about old or odd pickles would add lines
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if unsafe:
            raise UserError(f"refusing to load {path}: it would import {unsafe.group(1)} (checkpoints must be "
                            "plain data)") from None
        raise UserError(f"{path} is not a readable {what} (truncated or another format)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, TypeError, AttributeError, IndexError):
        raise UserError(f"{path} is not a readable {what} (truncated or another format)") from None
    except MemoryError:
        raise UserError(f"{path}: not enough memory to load it") from None
    except OSError as e:
        if e.errno == errno.EINVAL:  # torch's zip reader, on a file cut short
            raise UserError(f"{path} is not a readable {what} (truncated or another format)") from None
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None


def checkpoint_file(path: str | os.PathLike) -> Path:
    """The file a checkpoint argument reads: the file itself, or a run directory's best.pt, else last.pt."""
    path = Path(path)
    if path.is_dir():
        found = next((path / n for n in ("best.pt", "last.pt") if (path / n).exists()), None)
        if found is None:
            raise UserError(f"no checkpoint in {path} (looked for best.pt and last.pt)")
        return found
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load an acl checkpoint (a file, or a run directory: its best.pt, else last.pt) without running code."""
    path = checkpoint_file(path)
    if not path.exists() and not path.is_symlink():
        raise UserError(f"checkpoint not found: {path}")
    state = torch_load(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path} is not an acl checkpoint (no '{FORMAT}' marker); "
                        "files from the authors' code need converting first")
    config, weights = state.get("config"), state.get("model")
    if not isinstance(config, dict) or not isinstance(weights, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()):
        what = "config" if not isinstance(config, dict) else "weights"
        raise UserError(f"{path} is not a complete acl checkpoint (its {what} is missing or not what acl writes)")
    classes = state.get("classes")
    if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise UserError(f"{path} is not a complete acl checkpoint (its classes are not a list of names)")
    shape = state.get("input_shape")
    if shape is not None and not (isinstance(shape, list) and len(shape) == 3 and all(
            type(n) is int and n > 0 for n in shape)):
        raise UserError(f"{path} is not a complete acl checkpoint (its input_shape is not [channels, height, width])")
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
