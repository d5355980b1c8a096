"""The loaders a run reads its splits through: torch's DataLoader (worker processes) or the device loader."""
from __future__ import annotations

import os
from typing import Any

import torch
from torch.utils.data import DataLoader

from ..config import DataConfig
from .device_loader import DeviceLoader, use_device_loader
from .sampler import EpochBatchSampler
from .splits import SplitDataset


def usable_workers(cfg: DataConfig) -> int:
    """``data.workers``, at most the cores this process may use: more only contend for them (and torch warns
    about it on every loader)."""
    return min(cfg.workers, len(os.sched_getaffinity(0)))


def loader_kwargs(cfg: DataConfig, device: torch.device) -> dict[str, Any]:
    workers = usable_workers(cfg)
    kwargs: dict[str, Any] = {"num_workers": workers, "pin_memory": device.type == "cuda"}
    if workers > 0:
        kwargs.update(persistent_workers=True, prefetch_factor=4)
    return kwargs


def train_loader(ds: SplitDataset, cfg: DataConfig, seed: int, device: torch.device, rank: int = 0,
                 world_size: int = 1, began_with: str | None = None) -> DataLoader | DeviceLoader:
    sampler = EpochBatchSampler(len(ds), cfg.batch_size, seed, rank, world_size)
    if use_device_loader(ds, cfg, device, began_with):
        return DeviceLoader(ds, device, sampler, workers=usable_workers(cfg))
    return DataLoader(ds, batch_sampler=sampler, **loader_kwargs(cfg, device))


def eval_loader(ds: SplitDataset, cfg: DataConfig, device: torch.device, rank: int = 0, world_size: int = 1,
                began_with: str | None = None) -> DataLoader | DeviceLoader:
    """Every sample exactly once over all processes: rank r takes positions r, r + N, ... (no padding)."""
    batch = cfg.eval_batch_size or 2 * cfg.batch_size
    positions = range(rank, len(ds), world_size)
    if use_device_loader(ds, cfg, device, began_with):
        return DeviceLoader(ds, device, positions=positions, batch_size=batch, workers=usable_workers(cfg))
    return DataLoader(ds, batch_size=batch, sampler=list(positions), **loader_kwargs(cfg, device))
