"""Splits: the train / val / test views of a dataset (held-out parts and subsets carved class-balanced, each
with its preset's transform), and the checks made on them before a run writes anything."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch.utils.data import Dataset

from ..config import DataConfig, quote
from ..errors import UserError
from .datasets import load_raw_splits
from .image_folders import check_images
from .presets import DEVICE_PRESETS, build_transform

HEADER_CHECK_LIMIT = 200_000  # image-folder training splits up to this size have every header read first


def balanced_split(targets: Sequence[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Class-balanced (train, held-out) indices: ``round(fraction * n_c)`` of each class held out."""
    g = torch.Generator().manual_seed(seed)
    by_class: dict[int, list[int]] = {}
    for i, t in enumerate(targets):
        by_class.setdefault(int(t), []).append(i)
    train, held = [], []
    for c in sorted(by_class):
        idx = by_class[c]
        order = [idx[j] for j in torch.randperm(len(idx), generator=g).tolist()]
        k = round(fraction * len(idx))
        held += order[:k]
        train += order[k:]
    return sorted(train), sorted(held)


def balanced_subset(indices: Sequence[int], targets: Sequence[int], limit: int, seed: int) -> list[int]:
    """At most ``limit`` of ``indices``, as evenly spread over the classes as possible."""
    if limit >= len(indices):
        return list(indices)
    g = torch.Generator().manual_seed(seed + 1)
    shuffled = [indices[j] for j in torch.randperm(len(indices), generator=g).tolist()]
    by_class: dict[int, list[int]] = {}
    for i in shuffled:
        by_class.setdefault(int(targets[i]), []).append(i)
    picked, queues = [], [by_class[c] for c in sorted(by_class)]
    while len(picked) < limit:  # round-robin over classes
        for q in queues:
            if q and len(picked) < limit:
                picked.append(q.pop(0))
    return sorted(picked)


class SplitDataset(Dataset):
    """A view of a raw dataset: some indices, one transform.

    A key may be ``(position, seed)``: the transform then draws its randomness from ``seed`` alone (the
    process's own RNG is left as it was), which makes augmentation reproducible on resume.
    """

    def __init__(self, base: Dataset, indices: Sequence[int], transform: Callable, preset: str | None = None):
        self.base, self.indices, self.transform, self.preset = base, list(indices), transform, preset
        targets = base.targets
        self.targets = [int(targets[i]) for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key):
        if isinstance(key, tuple):
            position, seed = key
            image, target = self.base[self.indices[position]]
            rng = torch.default_generator  # directly: torch.manual_seed / fork_rng cost ~50x more per sample
            saved = rng.get_state()
            rng.manual_seed(seed)
            try:
                return self.transform(image), target
            finally:
                rng.set_state(saved)
        image, target = self.base[self.indices[key]]
        return self.transform(image), target


@dataclass
class DataSplits:
    train: SplitDataset | None
    val: SplitDataset | None  # what training evaluates on, every epoch, and picks best.pt by
    test: SplitDataset | None
    preset: str
    classes: list[str]
    sources: dict[str, str]  # split -> what it is ("10% of train held out ...", "data/val/", "CIFAR-10 test set")
    notes: list[str]  # warnings worth a line at the start of a run
    missing: dict[str, str] = field(default_factory=dict)  # split -> why it is absent, when more can be said

    def get(self, split: str) -> SplitDataset:
        ds = getattr(self, split)
        if ds is None:
            raise UserError(self.missing.get(split) or f"this dataset has no {split} split" +
                            ("; use --split val" if split == "test" else ""))
        return ds


def carve(cfg: DataConfig, targets: Sequence[int]) -> tuple[list[int], list[int] | None]:
    """(training indices, held-out indices or None) of a training set under ``cfg``'s split settings: the
    one place a run's training images are chosen (``acl eval`` asks it which images a run trained on)."""
    if cfg.val_split > 0:
        train_idx, val_idx = balanced_split(targets, cfg.val_split, cfg.split_seed)
    else:
        train_idx, val_idx = list(range(len(targets))), None
    if cfg.train_subset is not None:
        train_idx = balanced_subset(train_idx, targets, cfg.train_subset, cfg.split_seed)
    return train_idx, val_idx


def build_splits(cfg: DataConfig, num_classes: int) -> DataSplits:
    """train / val / test views. ``val`` is carved from train when ``val_split > 0``; else it is the dataset's
    validation set (``val/``), else its test set (selection on the test set, as the authors' CIFAR runs did).
    ``test`` is always the dataset's own test set (``test/``), never its ``val/``."""
    raw = load_raw_splits(cfg, num_classes)
    if len(raw.classes) > num_classes:
        raise UserError(f"{cfg.name} has {len(raw.classes)} classes but model.num_classes is {num_classes}")
    notes = []
    if len(raw.classes) < num_classes:
        notes.append(f"model.num_classes is {num_classes} but {cfg.name} has {len(raw.classes)} classes: "
                     f"{num_classes - len(raw.classes)} outputs are never a target")
    preset = raw.preset if cfg.preset == "auto" else cfg.preset
    train_tf = build_transform(preset, True, cfg.image_size, cfg.augment, cfg.random_erasing)
    eval_tf = build_transform(preset, False, cfg.image_size)
    held_out = {s: SplitDataset(ds, range(len(ds)), eval_tf, preset) for s, ds in (("val", raw.val), ("test", raw.test))
                if ds is not None}
    sources = dict(raw.names)
    if raw.train is None:  # evaluation-only folder
        if cfg.val_split > 0:  # its val split was part of a training folder; its test split needs none
            why = f"data.val_split needs a training folder, and {Path(cfg.root) / 'train'} does not exist"
            return DataSplits(None, None, held_out.get("test"), preset, raw.classes, sources, notes, {"val": why})
        val_name = "val" if "val" in held_out else "test"
        sources["val"] = sources[val_name]
        return DataSplits(None, held_out[val_name], held_out.get("test"), preset, raw.classes, sources, notes)
    train_idx, val_idx = carve(cfg, raw.train.targets)
    if cfg.val_split > 0:
        sources["val"] = (f"{cfg.val_split:.0%} of {sources['train']} held out (class-balanced, split_seed "
                          f"{cfg.split_seed})")
        sources["train"] = f"{sources['train']} less the held-out part"
    elif held_out:
        sources["val"] = sources["val"] if "val" in held_out else f"{sources['test']} (selection on the test set)"
    else:
        raise UserError(f"{cfg.name} at {cfg.root} has no held-out split: set data.val_split (e.g. 0.1)")
    if cfg.train_subset is not None:
        sources["train"] += f", a class-balanced subset of {len(train_idx):,}"
    val = SplitDataset(raw.train, val_idx, eval_tf, preset) if val_idx is not None else \
        held_out.get("val", held_out.get("test"))
    return DataSplits(SplitDataset(raw.train, train_idx, train_tf, preset), val, held_out.get("test"), preset,
                      raw.classes, sources, notes)


def check_classes(trained: list[str] | None, found: list[str], source: str, where: str) -> None:
    """A model's outputs mean the classes it was trained on, in that order: refuse data whose classes (an
    image folder's sorted subfolders) differ, naming the first difference. ``trained`` None: a checkpoint
    from before class names were recorded."""
    if trained is None or list(trained) == list(found):
        return
    if len(trained) != len(found):
        raise UserError(f"{source} was trained on {len(trained)} classes; {where} has {len(found)}: the labels "
                        "would not mean the same")
    i = next(i for i, (a, b) in enumerate(zip(trained, found)) if a != b)
    raise UserError(f"{source} was trained with class {i} = {quote(trained[i])}; in {where} class {i} is "
                    f"{quote(found[i])}: the labels would not mean the same (a renamed or another class folder?)")


def sample_fingerprint(ds: SplitDataset) -> str | None:
    """A digest of which files a split holds and their labels (paths relative to the folder's root), for
    image folders; None for in-memory datasets. Cheap: names only, no image is read."""
    samples = getattr(ds.base, "samples", None)
    if samples is None:
        return None
    import hashlib

    root = str(getattr(ds.base, "root", ""))
    digest = hashlib.sha256()
    for i in ds.indices:
        path, label = samples[i]
        digest.update(f"{label}\t{os.path.relpath(path, root)}\n".encode())
    return digest.hexdigest()


def check_split_images(splits: DataSplits, cfg: DataConfig) -> None:
    """Before a run writes anything: every validation image, and the training images when there are not too
    many, readable and of sizes the preset can batch."""
    padding = DEVICE_PRESETS[splits.preset][0] if splits.preset in DEVICE_PRESETS else None
    resizes = padding is None  # the imagenet preset resizes and crops any image to one size
    check_images(splits.val, cfg.workers, "validation", one_size=not resizes)
    if splits.train is not None and len(splits.train) <= HEADER_CHECK_LIMIT:
        crop = (cfg.image_size or 32) if padding else 0  # the cifar and digits presets crop; none keeps the image
        check_images(splits.train, cfg.workers, "training", min_side=max(0, crop - 2 * (padding or 0)),
                     one_size=not resizes and not padding)
