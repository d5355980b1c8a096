"""The training sampler: the order of an epoch and the augmentation seed of every sample are pure functions
of ``(seed, epoch)``, so a run resumed mid-epoch sees exactly the batches and crops an uninterrupted run
would, whatever the number of loader workers."""
from __future__ import annotations

import torch
from torch.utils.data import Sampler

from ..errors import UserError


class EpochBatchSampler(Sampler):
    """Training batches of ``(position, sample_seed)``; deterministic per ``(seed, epoch)``, resumable.

    Incomplete last batches are dropped (BatchNorm needs more than one sample). With ``world_size > 1``
    every rank takes an equal, disjoint share of each epoch's permutation.
    """

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start = 0, 0
        if len(self) == 0:
            raise UserError(f"the training set has {size} images, fewer than one batch of {batch_size} per "
                            f"process; lower data.batch_size")

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start = epoch, start_batch

    def batches_per_epoch(self) -> int:
        return self.size // (self.batch_size * self.world_size)

    def __len__(self) -> int:
        return self.batches_per_epoch() - self.start

    def plan(self) -> torch.Tensor:
        """The rest of this epoch as ``(batches, batch_size, 2)`` int64: each sample's position and seed."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=g)
        seeds = torch.randint(0, 2**62, (self.size,), generator=g)
        n = self.batches_per_epoch() * self.batch_size
        mine = torch.stack([order[self.rank :: self.world_size][:n], seeds[self.rank :: self.world_size][:n]], 1)
        return mine.view(-1, self.batch_size, 2)[self.start:]

    def __iter__(self):
        for batch in self.plan().tolist():
            yield [tuple(sample) for sample in batch]
