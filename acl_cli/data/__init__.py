"""Datasets, splits, loaders (interim: the whole module moved here as it is, to be split next)."""
from .datasets import (DEVICE_PRESETS, IMAGE_EXTENSIONS, DataSplits, DeviceLoader, EpochBatchSampler, SplitDataset,
                       balanced_split, balanced_subset, build_splits, build_transform, carve, check_classes,
                       check_images, check_split_images, decode_all, eval_loader, input_side, list_images,
                       load_digits_images, load_image, loader_kwargs, sample_fingerprint, train_loader,
                       usable_workers, use_device_loader)

__all__ = ["DEVICE_PRESETS", "DataSplits", "DeviceLoader", "EpochBatchSampler", "IMAGE_EXTENSIONS", "SplitDataset",
           "balanced_split", "balanced_subset", "build_splits", "build_transform", "carve", "check_classes",
           "check_images", "check_split_images", "decode_all", "eval_loader", "input_side", "list_images",
           "load_digits_images", "load_image", "loader_kwargs", "sample_fingerprint", "train_loader",
           "usable_workers", "use_device_loader"]
