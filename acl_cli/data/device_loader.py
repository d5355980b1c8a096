"""The device loader: a split that fits in device memory (the GPU's, or RAM on a CPU) held there decoded,
each batch augmented there."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from ..config import DataConfig
from ..errors import UserError
from .datasets import TensorImages
from .presets import DEVICE_PRESETS
from .sampler import EpochBatchSampler
from .splits import SplitDataset


def _preset_of(ds: SplitDataset) -> str | None:
    return getattr(ds, "preset", None)


def use_device_loader(ds: SplitDataset, cfg: DataConfig, device: torch.device, began_with: str | None = None) -> bool:
    """Whether ``ds`` is fed by the device loader. ``auto`` picks it wherever the decoded split fits comfortably
    in the device's memory (the GPU's, or RAM on a CPU: there too it keeps training at the step's speed). A
    resumed run keeps the loader it began with (``began_with``: "device" or "torch"): the two draw their
    augmentation differently, so switching would change the run's data stream."""
    preset = _preset_of(ds)
    if cfg.loader == "device":
        if preset not in DEVICE_PRESETS:
            raise UserError(f"data.loader: device supports the {', '.join(DEVICE_PRESETS)} presets (small images), "
                            f"not {preset}; use data.loader: torch")
        if cfg.per_image_augment:  # the config refuses this; a DataConfig built in Python skips that check
            raise UserError(f"{cfg.per_image_augment.split(':')[0]}: not on the device loader yet; use data.loader: "
                            "torch (or auto, which then picks it)")
        return True
    if cfg.loader == "torch" or preset not in DEVICE_PRESETS or cfg.per_image_augment:
        return False
    if began_with is not None:
        return began_with == "device"
    free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else _available_ram()
    return len(ds) * 3 * 64 * 64 < 0.25 * free  # a generous bound for images of at most 64x64


def device_loader_declined(ds: SplitDataset, cfg: DataConfig) -> str | None:
    """Why ``data.loader: auto`` did not pick the device loader for data it could hold (its per-image recipe
    parts, which only the DataLoader path has), for the run's banner; None otherwise."""
    if cfg.loader == "auto" and _preset_of(ds) in DEVICE_PRESETS and cfg.per_image_augment:
        return f"{cfg.per_image_augment} needs it: the device loader has crop and flip only"
    return None


def _available_ram() -> int:
    """Bytes of memory available to new allocations (MemAvailable), or 0 where that cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


class _Decoded(Dataset):
    """The split's images as uint8 ``(C, H, W)`` tensors, untransformed (what the device loader starts from)."""

    def __init__(self, ds: SplitDataset):
        self.base, self.indices, self.to_image = ds.base, ds.indices, v2.ToImage()

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> torch.Tensor:
        image = self.to_image(self.base[self.indices[i]][0])
        return image.expand(3, -1, -1) if image.shape[0] == 1 else image


def _stack_or_none(images: list[torch.Tensor]) -> torch.Tensor | None:
    return torch.stack(images) if len({t.shape for t in images}) == 1 else None


def decode_all(ds: SplitDataset, workers: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The split's images as one uint8 ``(N, 3, H, W)`` tensor (decoded once, by ``workers`` processes) and
    its labels."""
    base, idx = ds.base, torch.as_tensor(ds.indices, dtype=torch.long)
    if isinstance(base, TensorImages):
        images = base.images[idx]
    elif isinstance(getattr(base, "data", None), np.ndarray):  # torchvision CIFAR: (N, H, W, 3) uint8
        images = torch.from_numpy(base.data[idx.numpy()]).permute(0, 3, 1, 2).contiguous()
    else:
        # one stacked tensor per batch: a tensor per image would pass a file descriptor each between processes
        batches = list(DataLoader(_Decoded(ds), batch_size=256, num_workers=workers, collate_fn=_stack_or_none))
        if any(b is None for b in batches) or len({b.shape[1:] for b in batches}) > 1:
            raise UserError("data.loader: device needs images of one size; use data.loader: torch")
        images = torch.cat(batches)
    return images, torch.as_tensor(ds.targets, dtype=torch.long)


class DeviceLoader:
    """The whole split on the device as uint8; each batch is cropped, flipped and normalised there.

    No worker processes and no host-device traffic per step: an epoch's positions and per-sample seeds are
    copied to the device once, and each sample's crop offset and flip are arithmetic on its seed (a
    uniform 62-bit draw), so the crops depend only on ``(seed, epoch)`` and resuming mid-epoch repeats them.
    The images are stored padded, so a batch's crops and flips are one gather: a handful of kernels a step.
    """

    def __init__(self, ds: SplitDataset, device: torch.device, batch_sampler: EpochBatchSampler | None = None,
                 positions: Sequence[int] | None = None, batch_size: int = 256, workers: int = 0):
        padding, flip, mean, std = DEVICE_PRESETS[_preset_of(ds)]
        images, targets = decode_all(ds, workers)
        self.dataset, self.device, self.batch_sampler = ds, device, batch_sampler
        p = self.padding = padding
        self.padded = F.pad(images.to(device), (p, p, p, p))  # zero border for the random crops
        self.images = self.padded[:, :, p:self.padded.shape[2] - p, p:self.padded.shape[3] - p]  # a view
        self.targets = targets.to(device)
        self.flip = flip
        mean, std = (torch.tensor(v, device=device).view(1, 3, 1, 1) for v in (mean, std))
        self.scale, self.shift = 1 / (255 * std), -mean / std  # (x / 255 - mean) / std as x * scale + shift
        self.positions = list(positions) if positions is not None else None
        self.batch_size = batch_size
        _, c, h, w = images.shape
        self._rows = torch.arange(h, device=device).view(1, 1, h, 1)  # index grids for the crop gather
        self._columns = torch.stack([torch.arange(w, device=device), torch.arange(w - 1, -1, -1, device=device)])
        self._chans = torch.arange(c, device=device).view(1, c, 1, 1)

    def __len__(self) -> int:
        if self.batch_sampler is not None:
            return len(self.batch_sampler)
        return -(-len(self.positions) // self.batch_size)

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift, x, self.scale)

    def _draw(self, seeds: torch.Tensor) -> torch.Tensor:
        """Each sample's crop offsets and flip, ``(..., 3)``: row, column, 1 if mirrored."""
        span = 2 * self.padding + 1
        oy, ox = seeds % span, seeds // span % span
        flip = (seeds >> 32) & 1 if self.flip else torch.zeros_like(seeds)  # bits the offsets hardly depend on
        return torch.stack([oy, ox, flip], dim=-1)

    def _gather(self, pos: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
        """The crops (mirrored where drawn) of the padded images at ``pos``, as uint8: one indexing kernel."""
        b = pos.shape[0]
        rows = draws[:, 0].view(b, 1, 1, 1) + self._rows
        cols = (self._columns[draws[:, 2]] + draws[:, 1:2]).view(b, 1, 1, -1)
        return self.padded[pos.view(b, 1, 1, 1), self._chans, rows, cols]

    def augment(self, pos: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """Random crop of the zero-padded image and horizontal flip, drawn from each sample's seed."""
        pos, seeds = pos.to(self.device), seeds.to(self.device)
        return self._gather(pos, self._draw(seeds))

    def _epoch_plan(self) -> torch.Tensor:
        """The rest of the epoch as ``(batches, batch_size, 4)``: position and draws, on the device."""
        plan = self.batch_sampler.plan()
        if self.device.type == "cuda":
            plan = plan.pin_memory()
        plan = plan.to(self.device, non_blocking=True)
        return torch.cat([plan[..., :1], self._draw(plan[..., 1])], dim=-1)

    def __iter__(self):
        if self.batch_sampler is not None:
            for batch in self._epoch_plan():
                pos = batch[:, 0]
                yield self._normalise(self._gather(pos, batch[:, 1:])), self.targets[pos]
            return
        pos_all = torch.tensor(self.positions, dtype=torch.long).to(self.device, non_blocking=True)
        for start in range(0, len(pos_all), self.batch_size):
            pos = pos_all[start:start + self.batch_size]
            yield self._normalise(self.images[pos]), self.targets[pos]
