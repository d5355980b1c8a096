"""Where a run computes: the device a config or the command line names, and the autocast precision on it."""
from __future__ import annotations

import re

import torch

from .config import DEVICE_PATTERN, quote
from .errors import UserError


def resolve_device(name: str) -> torch.device:
    if not re.fullmatch(DEVICE_PATTERN, name):
        raise UserError(f"device {quote(name)}: expected auto, cpu, cuda or cuda:N")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name!r}: no CUDA device is available; use auto or cpu")
    if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
        raise UserError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA devices")
    return torch.device(name)


def autocast(device: torch.device, amp: str):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
