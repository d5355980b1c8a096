"""Data: datasets, their splits, and the loaders a run reads them through.

- ``datasets``: the raw datasets (CIFAR, digits, synthetic, image folders) and the side of their images
- ``image_folders``: listing, reading and checking image folders' files
- ``presets``: each preprocessing preset's normalisation and augmentation
- ``mixing``: MixUp and CutMix on training batches, their labels made soft targets
- ``splits``: train / val / test views, class-balanced held-out parts and subsets, their checks
- ``sampler``: the training sampler, deterministic per ``(seed, epoch)`` and resumable mid-epoch
- ``loaders``: torch's DataLoader or the device loader, as a run asks
- ``device_loader``: the decoded split held in device memory and augmented there
"""
from .datasets import SyntheticImages, TensorImages, input_side, load_digits_images
from .device_loader import DeviceLoader, decode_all, device_loader_declined, use_device_loader
from .image_folders import IMAGE_EXTENSIONS, check_images, list_images, load_image
from .loaders import eval_loader, loader_kwargs, train_loader, usable_workers
from .mixing import BatchMixing, build_mixing, dominant_labels
from .presets import DEVICE_PRESETS, augment_policy, build_transform
from .sampler import EpochBatchSampler
from .splits import (DataSplits, SplitDataset, balanced_split, balanced_subset, build_splits, carve, check_classes,
                     check_split_images, sample_fingerprint)

__all__ = ["BatchMixing", "DEVICE_PRESETS", "DataSplits", "DeviceLoader", "EpochBatchSampler",
           "IMAGE_EXTENSIONS", "SplitDataset", "SyntheticImages", "TensorImages", "augment_policy",
           "balanced_split", "balanced_subset", "build_mixing", "build_splits", "build_transform", "carve",
           "check_classes", "check_images", "check_split_images", "decode_all", "device_loader_declined",
           "dominant_labels", "eval_loader", "input_side", "list_images", "load_digits_images",
           "load_image", "loader_kwargs", "sample_fingerprint", "train_loader", "usable_workers",
           "use_device_loader"]
