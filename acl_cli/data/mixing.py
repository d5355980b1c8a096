"""MixUp and CutMix on training batches (``data.mixup``, ``data.cutmix``): torchvision's v2 transforms, each
batch mixed with itself rolled by one image, its labels turned into per-class probabilities (soft targets)."""
from __future__ import annotations

import torch
from torchvision.transforms import v2

from ..config import DataConfig

_MASK = (1 << 63) - 1  # a batch's seed is a non-negative int64, as manual_seed takes it


class BatchMixing:
    """Mixes a batch and its labels. Which of the two (``data.mixup_switch_prob`` with both on), the Beta draw
    and CutMix's box are drawn from a seed that is a function of ``(train.seed, rank, step)`` alone, with the
    process's own random state left as it was: a resumed run mixes exactly as an uninterrupted one would,
    whatever loader fed it and whatever else drew random numbers in between."""

    def __init__(self, cfg: DataConfig, num_classes: int, seed: int, rank: int = 0):
        parts = ([v2.MixUp(alpha=cfg.mixup, num_classes=num_classes)] if cfg.mixup else []) + \
            ([v2.CutMix(alpha=cfg.cutmix, num_classes=num_classes)] if cfg.cutmix else [])
        if not parts:
            raise ValueError("BatchMixing needs data.mixup or data.cutmix > 0")
        switch = cfg.mixup_switch_prob
        self.transform = parts[0] if len(parts) == 1 else v2.RandomChoice(parts, p=[1 - switch, switch])
        self.base_seed = (seed * 1_000_003 + rank) * 1_000_000_007

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mixed images, soft targets)`` of batch ``step``: targets ``(B, classes)``, rows summing to 1."""
        rng = torch.default_generator  # directly, as the datasets do: fork_rng costs far more per call
        saved = rng.get_state()
        rng.manual_seed((self.base_seed + step) & _MASK)
        try:
            mixed, targets = self.transform(images, labels)
        finally:
            rng.set_state(saved)
        return mixed, targets


def build_mixing(cfg: DataConfig, num_classes: int, seed: int, rank: int = 0) -> BatchMixing | None:
    """The run's batch mixing, or None when ``data.mixup`` and ``data.cutmix`` are both 0 (the default)."""
    return BatchMixing(cfg, num_classes, seed, rank) if cfg.mixup or cfg.cutmix else None


def dominant_labels(targets: torch.Tensor) -> torch.Tensor:
    """Each image's label: itself for class indices, the class of largest weight for soft targets (what the
    training top-1 of a mixed batch is counted against)."""
    return targets.argmax(dim=1) if targets.dim() == 2 else targets
