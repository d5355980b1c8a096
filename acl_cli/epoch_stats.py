"""The training loss and top-1/top-5 counts of an epoch's steps, summed without a host sync per step."""
from __future__ import annotations

import math

import torch

from .errors import UserError


class EpochStats:
    """The training loss and top-1/top-5 counts of each step, written into a device buffer (as many kernels
    per step as an argmax would take, no host sync) and read back where the loop syncs anyway: log points,
    checkpoints, the epoch's end. Reading back finds the first non-finite loss and names its step; since
    every checkpoint reads back first, a checkpoint never holds weights updated from a NaN loss."""

    def __init__(self, device: torch.device, steps_per_epoch: int, num_classes: int):
        self.k = min(5, num_classes)
        # loss, then the hits at each rank 1..k (top-1 = rank 1, top-5 = their sum); exact below 2**24
        self.buffer = torch.zeros(steps_per_epoch, 1 + self.k, device=device)
        self.steps_per_epoch = steps_per_epoch
        self.start([0.0, 0, 0, 0])

    def start(self, sums: list[float]) -> None:
        """An epoch (or the rest of one), continuing from its ``[loss sum, top-1, images, top-5]`` so far."""
        self.loss_sum, self.correct, self.images = float(sums[0]), int(sums[1]), int(sums[2])
        self.correct5 = int(sums[3]) if len(sums) > 3 else None  # None: resumed from a checkpoint without it
        self.pending: list[tuple[int, int]] = []  # (step, images) of the rows not read back yet

    def record(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, step: int) -> None:
        row = self.buffer[len(self.pending)]
        row[0] = loss.detach()
        row[1:] = (logits.topk(self.k, dim=1).indices == y[:, None]).sum(0)
        self.pending.append((step, y.numel()))

    def sync(self, last_good: str) -> list[float]:
        """Add the pending rows to the sums (in step order, so a resumed run sums exactly alike); a non-finite
        loss is one line naming its step and ``last_good``, the checkpoint to go back to."""
        if self.pending:
            rows = self.buffer[: len(self.pending)].tolist()
            for (step, images), (loss, *hits) in zip(self.pending, rows, strict=True):
                if not math.isfinite(loss):
                    raise UserError(f"loss is {loss} at step {step + 1} (epoch {step // self.steps_per_epoch + 1}); "
                                    f"{last_good}; lower optim.lr, or train.on_nonfinite: skip")
                self.loss_sum += loss * images
                self.correct += int(hits[0])
                self.images += images
                if self.correct5 is not None:
                    self.correct5 += int(sum(hits))
            self.pending = []
        return [self.loss_sum, self.correct, self.images] + ([] if self.correct5 is None else [self.correct5])
