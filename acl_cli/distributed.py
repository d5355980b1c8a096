"""Several processes through torchrun: DistributedDataParallel with NCCL on GPUs, gloo on CPUs.

``torchrun --nproc_per_node=N -m acl_cli train --config X.yaml`` sets RANK, WORLD_SIZE and LOCAL_RANK; without
them everything here is a no-op for a single process.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .config import quote
from .errors import UserError


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over processes (a copy; the input is left alone)."""
        values = values.clone()
        if self.enabled:
            dist.all_reduce(values)
        return values

    def broadcast_buffers(self, model: torch.nn.Module) -> None:
        """Rank 0's BatchNorm statistics everywhere: evaluation then matches the checkpoint rank 0 writes."""
        if self.enabled:
            for buffer in model.buffers():
                dist.broadcast(buffer, 0)

    def any(self, flag: bool, device: torch.device) -> bool:
        if not self.enabled:
            return flag
        return bool(self.sum(torch.tensor([float(flag)], device=device)).item())


SINGLE_PROCESS = DistEnv()


def setup(device: torch.device) -> tuple[DistEnv, torch.device]:
    """Join the process group torchrun describes (if any); returns the env and this process's device."""
    world = _env_int("WORLD_SIZE", "1")
    if world <= 1:
        return DistEnv(), device
    if "RANK" not in os.environ:
        raise UserError(f"WORLD_SIZE={world} but RANK is not set: start several processes with torchrun "
                        "(torchrun --nproc_per_node=N -m acl_cli train ...), which sets both")
    env = DistEnv(_env_int("RANK"), world, _env_int("LOCAL_RANK", "0"))
    if not 0 <= env.rank < world:
        raise UserError(f"RANK={env.rank} is outside 0..{world - 1} (WORLD_SIZE={world})")
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
    if missing and not dist.is_initialized():
        raise UserError(f"WORLD_SIZE={world} but {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
                        "not set: start the processes with torchrun, which sets them")
    if device.type == "cuda":
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return env, device


def _env_int(name: str, default: str | None = None) -> int:
    text = os.environ.get(name, default)
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise UserError(f"environment variable {name}={quote(text)}: expected a whole number (torchrun sets it)"
                        ) from None
    if not 0 <= value < 2**20:
        raise UserError(f"environment variable {name}={value}: out of range")
    return value


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
