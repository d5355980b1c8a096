"""Several processes through torchrun: DistributedDataParallel with NCCL on GPUs, gloo on CPUs.

``torchrun --nproc_per_node=N -m acl_cli train --config X.yaml`` sets RANK, WORLD_SIZE and LOCAL_RANK; without
them everything here is a no-op for a single process.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


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
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv(), device
    env = DistEnv(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return env, device


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
