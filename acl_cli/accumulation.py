"""Gradient accumulation (``train.accumulate_steps``): the optimizer steps once per group of N batches, so a
recipe's global batch fits a small device. The schedule counts optimizer steps: an epoch's schedule is the
one a batch N times larger would have. A group that the epoch's end cuts short (the epoch's batches not a
multiple of N) steps with the batches it has, its loss the mean over them, as a smaller last batch would.

Groups are counted from each epoch's first batch; the state's ``batch`` (within the epoch) and ``step`` (over
the run) count batches, not optimizer steps. Checkpoints are written at a group's end only (see
:meth:`Accumulation.group_done`): there no gradient is held, so a resume needs nothing but the optimizer.
"""
from __future__ import annotations


class Accumulation:
    """Where each batch of an epoch falls in its group; ``every`` 1 is a group per batch (no accumulation)."""

    def __init__(self, every: int, batches_per_epoch: int):
        self.every, self.batches_per_epoch = every, batches_per_epoch

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps in an epoch: what the schedule counts."""
        return -(-self.batches_per_epoch // self.every)

    def group_size(self, batch: int) -> int:
        """How many batches the group of ``batch`` has: ``every``, or fewer for the epoch's cut-short last."""
        start = batch - batch % self.every
        return min(self.every, self.batches_per_epoch - start)

    def starts_group(self, batch: int) -> bool:
        return batch % self.every == 0

    def ends_group(self, batch: int) -> bool:
        """Whether the optimizer steps after ``batch``: the group's last batch, or the epoch's."""
        return self.group_done(batch + 1)

    def group_done(self, batches_done: int) -> bool:
        """Whether ``batches_done`` batches of the epoch end a group (0 included): no gradient is held there."""
        return batches_done % self.every == 0 or batches_done == self.batches_per_epoch

    def optimizer_steps(self, step: int) -> int:
        """Optimizer steps taken after ``step`` batches of the run (``step`` at a group's end)."""
        epochs, batches = divmod(step, self.batches_per_epoch)
        return epochs * self.steps_per_epoch + -(-batches // self.every)
