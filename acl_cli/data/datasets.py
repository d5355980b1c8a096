"""The raw datasets (images without transforms; ``targets`` lists every label): CIFAR, scikit-learn's digits,
synthetic images and image folders, and the side of the images each gives a model."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision.datasets import CIFAR10, CIFAR100

from ..config import DataConfig
from ..errors import UserError
from .image_folders import first_image_side, image_folder, image_side


class TensorImages(Dataset):
    """Images held in memory as a uint8 ``(N, 3, H, W)`` tensor."""

    def __init__(self, images: torch.Tensor, targets: Sequence[int], classes: list[str]):
        self.images, self.targets, self.classes = images, list(targets), classes

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return self.images[i], self.targets[i]


class SyntheticImages(Dataset):
    """Random images whose label is learnable: each class adds its own fixed pattern to the noise."""

    def __init__(self, size: int, image_size: int, num_classes: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        coarse = torch.randn(num_classes, 3, 4, 4, generator=g) * 50  # low-frequency class signatures
        self.patterns = F.interpolate(coarse, size=(image_size, image_size), mode="bilinear", align_corners=False)
        self.targets = [i % num_classes for i in range(size)]
        self.classes = [f"class{i}" for i in range(num_classes)]
        self.seed, self.image_size = seed, image_size

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        noise = torch.randn(3, self.image_size, self.image_size, generator=g) * 40 + 128
        return (noise + self.patterns[self.targets[i]]).clamp(0, 255).to(torch.uint8), self.targets[i]


def load_digits_images() -> TensorImages:
    """scikit-learn's bundled handwritten digits (1,797 real 8x8 images) as 32x32 RGB uint8."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) * (255.0 / 16.0)
    images = F.interpolate(images, size=(32, 32), mode="bilinear", align_corners=False)
    images = images.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    return TensorImages(images, digits.target.tolist(), [str(c) for c in range(10)])


def _torchvision_cifar(cfg: DataConfig, train: bool):
    cls = CIFAR10 if cfg.name == "cifar10" else CIFAR100
    try:
        return cls(cfg.root, train=train, download=cfg.download)
    except RuntimeError:
        folder = Path(cfg.root) / cls.base_folder
        raise UserError(f"{cfg.name} not found in {folder}: set data.download: true to fetch it, "
                        f"or data.root to the folder that holds {cls.base_folder}") from None


@dataclass
class RawSplits:
    train: Dataset | None  # None: an image folder with only held-out splits (evaluation only)
    val: Dataset | None  # the dataset's own validation set (an image folder's val/), if it has one
    test: Dataset | None  # its test set (test/, or CIFAR's test batch), if it has one
    preset: str
    classes: list[str]
    names: dict[str, str]  # what each split is, for every line that reports on one


def load_raw_splits(cfg: DataConfig, num_classes: int) -> RawSplits:
    name = cfg.name
    if name in ("cifar10", "cifar100"):
        train = _torchvision_cifar(cfg, True)
        label = "CIFAR-10" if name == "cifar10" else "CIFAR-100"
        return RawSplits(train, None, _torchvision_cifar(cfg, False), "cifar", list(train.classes),
                         {"train": f"{label} train", "test": f"{label} test set"})
    if name == "digits":
        return RawSplits(load_digits_images(), None, None, "digits", [str(c) for c in range(10)],
                         {"train": "digits"})
    if name == "synthetic":
        side = cfg.image_size or 32
        train = SyntheticImages(cfg.synthetic_size, side, num_classes, seed=1)
        test = SyntheticImages(max(1, cfg.synthetic_size // 4), side, num_classes, seed=2)
        test.patterns = train.patterns  # same classes, fresh noise
        return RawSplits(train, None, test, "none", train.classes, {"train": "synthetic", "test": "synthetic test"})
    root = Path(cfg.root)
    folders = {s: root / s for s in ("train", "val", "test") if (root / s).is_dir()}
    if not folders:
        raise UserError(f"{name}: no training folder at {root / 'train'} (expected {root}/train/<class>/<image>, "
                        f"and {root}/val or {root}/test for evaluation); where the data is elsewhere (a run made on "
                        "another machine), give its folder: --set data.root=DIR")
    what = {"train": "training", "val": "validation", "test": "test"}
    sets = {s: image_folder(path, what[s]) for s, path in folders.items()}
    first = next(iter(sets))
    for s, ds in sets.items():
        if ds.classes != sets[first].classes:
            raise UserError(f"{folders[s]} has classes {ds.classes[:5]}... that differ from {folders[first]}")
    if name == "imagenet":
        preset = "imagenet"
    else:  # small images (CIFAR-like folders) get the CIFAR recipe
        side = image_side(sets[first].samples[0][0])  # ImageFolder refuses a class without images
        preset = "cifar" if side <= 64 else "imagenet"
    return RawSplits(sets.get("train"), sets.get("val"), sets.get("test"), preset, list(sets[first].classes),
                     {s: f"{path}/" for s, path in folders.items()})


def input_side(cfg: DataConfig) -> tuple[int, str] | None:
    """The side of the images the data gives a model, without loading it, and why: the crop
    (``image_size``), CIFAR-like data's 32, the imagenet preset's 224, or an image folder's first image.
    None when that needs a folder that is not there."""
    if cfg.image_size:
        return cfg.image_size, "data.image_size"
    preset = cfg.preset
    if cfg.name in ("cifar10", "cifar100", "digits", "synthetic") and preset in ("auto", "cifar", "digits", "none"):
        return 32, f"{cfg.name} images"
    if cfg.name == "imagenet" or preset == "imagenet":
        return 224, "the imagenet preset's crop"
    folders = [Path(cfg.root) / s for s in ("train", "val", "test") if (Path(cfg.root) / s).is_dir()]
    side = first_image_side(folders[0]) if folders else None
    if side is None:
        return None
    return (side, f"the images in {folders[0]}") if side <= 64 or preset != "auto" else (224, "the imagenet preset's crop")
