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


def augment_policy(augment: str, preset: str) -> list:
    """``data.augment`` as a torchvision v2 transform on uint8 images (none: an empty list). AutoAugment takes
    the policy learned for images like these: ImageNet's for the imagenet preset, CIFAR-10's for small ones."""
    if augment == "none":
        return []
    if augment == "autoaugment":
        policy = v2.AutoAugmentPolicy.IMAGENET if preset == "imagenet" else v2.AutoAugmentPolicy.CIFAR10
        return [v2.AutoAugment(policy)]
    return [{"randaugment": v2.RandAugment, "trivialaugment": v2.TrivialAugmentWide}[augment]()]


def build_transform(preset: str, train: bool, image_size: int | None = None, augment: str = "none",
                    random_erasing: float = 0.0) -> Callable:
    """The preset's transform; a training one adds ``augment``'s policy after the crop and flip and random
    erasing (probability ``random_erasing``) after normalisation, where torchvision's reference puts them."""
    extra = augment_policy(augment, preset) if train else []
    erasing = [v2.RandomErasing(random_erasing)] if train and random_erasing else []
    if preset == "imagenet":
        size = image_size or 224
        if train:
            geometry = [v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()]
        else:
            geometry = [v2.Resize(round(size * 256 / 224), antialias=True), v2.CenterCrop(size)]
        return _to_normalised_float(geometry + extra, IMAGENET_MEAN, IMAGENET_STD, erasing)
    padding, flip, mean, std = DEVICE_PRESETS[preset]
    geometry = []
    if train and padding:
        geometry.append(v2.RandomCrop(image_size or 32, padding=padding))
    if train and flip:
        geometry.append(v2.RandomHorizontalFlip())
    return _to_normalised_float(geometry + extra, mean, std, erasing)


def _to_normalised_float(geometry: list, mean, std, after: list = ()) -> Callable:
    """uint8 image -> geometry (on uint8, cheaper) -> float in [0, 1] -> normalised -> ``after``."""
    return v2.Compose([v2.ToImage(), *geometry, v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std),
                       *after])
