"""Preprocessing presets: each one's normalisation and augmentation, as torchvision transforms."""
from __future__ import annotations

from typing import Callable

import torch
from torchvision.transforms import v2

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)  # the authors' values
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


# Small-image recipes, shared by the torch path's transforms and the GPU-resident loader:
# preset -> (random-crop padding, horizontal flip, mean, std)
DEVICE_PRESETS = {
    "cifar": (4, True, CIFAR_MEAN, CIFAR_STD),
    "digits": (2, False, (0.5,) * 3, (0.5,) * 3),  # no flips: a mirrored digit is another glyph
    "none": (0, False, (0.0,) * 3, (1.0,) * 3),
}


def build_transform(preset: str, train: bool, image_size: int | None = None) -> Callable:
    if preset == "imagenet":
        size = image_size or 224
        if train:
            geometry = [v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()]
        else:
            geometry = [v2.Resize(round(size * 256 / 224), antialias=True), v2.CenterCrop(size)]
        return _to_normalised_float(geometry, IMAGENET_MEAN, IMAGENET_STD)
    padding, flip, mean, std = DEVICE_PRESETS[preset]
    geometry = []
    if train and padding:
        geometry.append(v2.RandomCrop(image_size or 32, padding=padding))
    if train and flip:
        geometry.append(v2.RandomHorizontalFlip())
    return _to_normalised_float(geometry, mean, std)


def _to_normalised_float(geometry: list, mean, std) -> Callable:
    """uint8 image -> geometry (on uint8, cheaper) -> float in [0, 1] -> normalised."""
    return v2.Compose([v2.ToImage(), *geometry, v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])
