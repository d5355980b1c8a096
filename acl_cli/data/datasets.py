"""Datasets, preprocessing presets and loaders.

Training batches come from :class:`EpochBatchSampler`: the order of an epoch and the augmentation seed of
every sample are pure functions of ``(seed, epoch)``, so a run resumed mid-epoch sees exactly the batches
and crops an uninterrupted run would, whatever the number of loader workers.
"""
from __future__ import annotations

import os
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision import datasets
from torchvision.transforms import v2

from ..config import DataConfig, quote
from ..errors import UserError
from ..files import check_regular

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)  # the authors' values
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


# --------------------------------------------------------------------------------------------------
# Preprocessing presets


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


# --------------------------------------------------------------------------------------------------
# Raw datasets (images without transforms; ``targets`` lists every label)


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
    cls = datasets.CIFAR10 if cfg.name == "cifar10" else datasets.CIFAR100
    try:
        return cls(cfg.root, train=train, download=cfg.download)
    except RuntimeError:
        folder = Path(cfg.root) / cls.base_folder
        raise UserError(f"{cfg.name} not found in {folder}: set data.download: true to fetch it, "
                        f"or data.root to the folder that holds {cls.base_folder}") from None


def _image_header(path: str) -> tuple[str | None, tuple[int, int] | None]:
    """Why the image file at ``path`` cannot be read (its header; cheap), or None; and its (width, height)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's own warnings would add lines to our one-line error
            with open_image_file(path) as f, Image.open(f) as image:
                return None, image.size
    except UnidentifiedImageError:
        return "not an image PIL can read", None
    except (OSError, SyntaxError, ValueError) as e:
        return (str(e).splitlines()[0] if str(e) else type(e).__name__), None


def open_image_file(path: str):
    """``path`` opened for reading if it is a regular file, else a one-line error. Opened non-blocking and
    checked on the descriptor: a file swapped for a FIFO after the listing cannot block a loader forever."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        refuse_image(path)
    return os.fdopen(fd, "rb")


def refuse_image(path: str) -> None:
    """The one-line error for an image path that is not a regular file (links followed)."""
    if os.path.islink(path) and not os.path.exists(path):
        raise UserError(f"image {path} is a broken link (to {os.readlink(path)})")
    check_regular(path, "image")  # says what it is: a FIFO, a device, a socket
    raise UserError(f"image {path} is not a regular file")  # it was one a moment ago


def load_image(path: str):
    """ImageFolder's loader, naming the file when it cannot be decoded (a truncated or corrupt image stops
    the run: silently skipping it would change the numbers)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with open_image_file(path) as f:
                return _to_rgb(Image.open(f), path)
    except (OSError, SyntaxError, ValueError) as e:
        raise UserError(f"cannot read image {path}: {_image_header(path)[0] or str(e).splitlines()[0]}") from None


def _to_rgb(image, path: str):
    """8-bit RGB. PIL's own convert clips 16-bit grey to white (two different images would load the same):
    scale those to 8 bits; 32-bit integer and float images have no range to scale by, so refuse them."""
    from PIL import Image

    if image.mode.startswith("I;16"):
        wide = np.asarray(image, dtype=np.uint32)
        return Image.fromarray(((wide + 128) // 257).astype(np.uint8), "L").convert("RGB")
    if image.mode in ("I", "F"):
        raise UserError(f"cannot read image {path}: a 32-bit {'float' if image.mode == 'F' else 'integer'} image "
                        "has no range acl can scale to 8 bits; save it as an 8- or 16-bit image")
    return image.convert("RGB")


HEADER_CHECK_LIMIT = 200_000  # image-folder training splits up to this size have every header read first


def check_images(ds: Dataset, workers: int = 0, what: str = "", min_side: int = 0, one_size: bool = False) -> None:
    """Open the header of every image file of an image-folder split: the first unreadable one, one smaller
    than ``min_side`` (a crop could not be taken), or, with ``one_size``, one whose size differs from the
    first (a preset that does not resize cannot stack them in a batch) is an error naming the file. Headers
    only (a few seconds for 50,000 images); a file corrupt past its header is named when it is decoded."""
    samples = getattr(getattr(ds, "base", None), "samples", None)
    if samples is None:
        return
    from concurrent.futures import ThreadPoolExecutor

    paths, first = [samples[i][0] for i in ds.indices], None
    with ThreadPoolExecutor(max(1, min(workers, 16))) as pool:
        for path, (problem, size) in zip(paths, pool.map(_image_header, paths, chunksize=64)):
            if problem:
                raise UserError(f"cannot read image {path}: {problem}")
            if min(size) < min_side:
                raise UserError(f"image {path} is {size[0]}x{size[1]}: the {what} crop needs at least {min_side}x"
                                f"{min_side} (data.preset: imagenet resizes any image)")
            if one_size:
                first = first or (path, size)
                if size != first[1]:
                    raise UserError(f"{what} images of two sizes: {first[0]} is {first[1][0]}x{first[1][1]}, {path} is "
                                    f"{size[0]}x{size[1]}; this preset does not resize (data.preset: imagenet does)")


def check_split_images(splits: "DataSplits", cfg: DataConfig) -> None:
    """Before a run writes anything: every validation image, and the training images when there are not too
    many, readable and of sizes the preset can batch."""
    padding = DEVICE_PRESETS[splits.preset][0] if splits.preset in DEVICE_PRESETS else None
    resizes = padding is None  # the imagenet preset resizes and crops any image to one size
    check_images(splits.val, cfg.workers, "validation", one_size=not resizes)
    if splits.train is not None and len(splits.train) <= HEADER_CHECK_LIMIT:
        crop = (cfg.image_size or 32) if padding else 0  # the cifar and digits presets crop; none keeps the image
        check_images(splits.train, cfg.workers, "training", min_side=max(0, crop - 2 * (padding or 0)),
                     one_size=not resizes and not padding)


FolderId = tuple[int, int]  # (st_dev, st_ino): one folder, whatever the links that lead to it


def _folder_id(entry: os.DirEntry | str) -> FolderId:
    st = entry.stat() if isinstance(entry, os.DirEntry) else os.stat(entry)
    return st.st_dev, st.st_ino


def _scan_folder(folder: str) -> tuple[list[str], list[tuple[str, FolderId]]]:
    """The image file names in ``folder``, sorted, and its subfolders (links followed). Costs no stat per
    file but the one a link needs; an image-named entry that is not a regular file is an error."""
    names, below = [], []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                try:
                    is_dir, is_file = entry.is_dir(), entry.is_file()
                except OSError:  # a link in a loop of links: os.walk takes it for a file
                    is_dir, is_file = False, False
                if is_dir:
                    below.append((entry.path, _folder_id(entry)))
                elif entry.name.lower().endswith(IMAGE_EXTENSIONS):
                    if not is_file:
                        refuse_image(entry.path)
                    names.append(entry.name)
    except OSError as e:
        raise UserError(f"cannot list the image folder {folder}: {e.strerror or e}") from None
    return sorted(names), below


def _list_tree(top: str, seen: dict[FolderId, str], above_top: tuple[FolderId, ...]) -> list[tuple[str, list[str]]]:
    """(folder, its image file names) for ``top`` and every folder under it. Each folder is listed once
    (``seen``, shared by a split's classes): a link back to a folder above it (a loop: three ``ln -s .``
    would make 3^40 paths) or a second way to a listed folder (its images would count twice) is an error."""
    listed, stack = [], [(top, _folder_id(top), above_top)]
    while stack:  # a stack, not recursion: a deep tree cannot overflow Python's
        folder, folder_id, above = stack.pop()
        if folder_id in above:
            raise UserError(f"{folder} leads back to {seen[folder_id]}, a folder that holds it: a loop of "
                            "folder links (acl follows links to folders but lists each folder once)")
        if folder_id in seen:
            raise UserError(f"{folder} and {seen[folder_id]} are one folder (through a link): its images "
                            "would count twice")
        seen[folder_id] = folder
        names, below = _scan_folder(folder)
        listed.append((folder, names))
        stack += [(path, sub_id, above + (folder_id,)) for path, sub_id in below]
    return listed


def list_images(root: str, class_to_idx: dict[str, int]) -> list[tuple[str, int]]:
    """(path, class index) of every image file under ``root/<class>/``, the files torchvision's ImageFolder
    lists in its order (a run's sample fingerprint stays the same), without its hangs: links to folders
    are followed (``train/cat -> /big/disk/cats``) but never around a loop, and an image-named FIFO, device
    or socket is refused by name (opening a FIFO blocks forever)."""
    root_id = _folder_id(root)
    seen, samples = {root_id: root}, []
    for name in sorted(class_to_idx):
        for folder, names in sorted(_list_tree(os.path.join(root, name), seen, (root_id,))):
            samples += [(os.path.join(folder, n), class_to_idx[name]) for n in names]
    return samples


class _ImageFolder(datasets.ImageFolder):
    """torchvision's ImageFolder listed by :func:`list_images` (its own uses os.walk(followlinks=True))."""

    @staticmethod
    def make_dataset(directory, class_to_idx, extensions=None, is_valid_file=None, allow_empty=False):
        samples = list_images(str(directory), class_to_idx)
        found = {label for _, label in samples}
        empty = [c for c in sorted(class_to_idx) if class_to_idx[c] not in found]
        if empty and not allow_empty:  # torchvision's words
            raise FileNotFoundError(f"Found no valid file for the classes {', '.join(empty)}. "
                                    f"Supported extensions are: {', '.join(IMAGE_EXTENSIONS)}")
        return samples


def _image_folder(root: Path, what: str) -> datasets.ImageFolder:
    try:
        return _ImageFolder(str(root), loader=load_image)
    except (FileNotFoundError, OSError) as e:
        raise UserError(f"cannot read the {what} image folder {root}: {e}".split("\n")[0]) from None


@dataclass
class RawSplits:
    train: Dataset | None  # None: an image folder with only held-out splits (evaluation only)
    val: Dataset | None  # the dataset's own validation set (an image folder's val/), if it has one
    test: Dataset | None  # its test set (test/, or CIFAR's test batch), if it has one
    preset: str
    classes: list[str]
    names: dict[str, str]  # what each split is, for every line that reports on one


def _image_side(path: str) -> int:
    problem, size = _image_header(path)
    if problem:
        raise UserError(f"cannot read image {path}: {problem}")
    return max(size)


def _first_image_side(folder: Path) -> int | None:
    """The longer side of the first image an image-folder split lists, or None if it has none."""
    try:
        _, class_to_idx = datasets.folder.find_classes(str(folder))
    except OSError:  # no class folder: building the split says so
        return None
    samples = list_images(str(folder), class_to_idx)
    return _image_side(samples[0][0]) if samples else None


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
    sets = {s: _image_folder(path, what[s]) for s, path in folders.items()}
    first = next(iter(sets))
    for s, ds in sets.items():
        if ds.classes != sets[first].classes:
            raise UserError(f"{folders[s]} has classes {ds.classes[:5]}... that differ from {folders[first]}")
    if name == "imagenet":
        preset = "imagenet"
    else:  # small images (CIFAR-like folders) get the CIFAR recipe
        side = _image_side(sets[first].samples[0][0])  # ImageFolder refuses a class without images
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
    side = _first_image_side(folders[0]) if folders else None
    if side is None:
        return None
    return (side, f"the images in {folders[0]}") if side <= 64 or preset != "auto" else (224, "the imagenet preset's crop")


# --------------------------------------------------------------------------------------------------
# Splits


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
    train_tf, eval_tf = build_transform(preset, True, cfg.image_size), build_transform(preset, False, cfg.image_size)
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


# --------------------------------------------------------------------------------------------------
# Sampling and loading


class EpochBatchSampler(Sampler):
    """Training batches of ``(position, sample_seed)``; deterministic per ``(seed, epoch)``, resumable.

    Incomplete last batches are dropped (BatchNorm needs more than one sample). With ``world_size > 1``
    every rank takes an equal, disjoint share of each epoch's permutation.
    """

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start = 0, 0
        if len(self) == 0:
            raise UserError(f"the training set has {size} images, fewer than one batch of {batch_size} per "
                            f"process; lower data.batch_size")

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start = epoch, start_batch

    def batches_per_epoch(self) -> int:
        return self.size // (self.batch_size * self.world_size)

    def __len__(self) -> int:
        return self.batches_per_epoch() - self.start

    def plan(self) -> torch.Tensor:
        """The rest of this epoch as ``(batches, batch_size, 2)`` int64: each sample's position and seed."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=g)
        seeds = torch.randint(0, 2**62, (self.size,), generator=g)
        n = self.batches_per_epoch() * self.batch_size
        mine = torch.stack([order[self.rank :: self.world_size][:n], seeds[self.rank :: self.world_size][:n]], 1)
        return mine.view(-1, self.batch_size, 2)[self.start:]

    def __iter__(self):
        for batch in self.plan().tolist():
            yield [tuple(sample) for sample in batch]


def usable_workers(cfg: DataConfig) -> int:
    """``data.workers``, at most the cores this process may use: more only contend for them (and torch warns
    about it on every loader)."""
    return min(cfg.workers, len(os.sched_getaffinity(0)))


def loader_kwargs(cfg: DataConfig, device: torch.device) -> dict[str, Any]:
    workers = usable_workers(cfg)
    kwargs: dict[str, Any] = {"num_workers": workers, "pin_memory": device.type == "cuda"}
    if workers > 0:
        kwargs.update(persistent_workers=True, prefetch_factor=4)
    return kwargs


def train_loader(ds: SplitDataset, cfg: DataConfig, seed: int, device: torch.device, rank: int = 0,
                 world_size: int = 1, began_with: str | None = None):
    sampler = EpochBatchSampler(len(ds), cfg.batch_size, seed, rank, world_size)
    if use_device_loader(ds, cfg, device, began_with):
        return DeviceLoader(ds, device, sampler, workers=usable_workers(cfg))
    return DataLoader(ds, batch_sampler=sampler, **loader_kwargs(cfg, device))


def eval_loader(ds: SplitDataset, cfg: DataConfig, device: torch.device, rank: int = 0, world_size: int = 1,
                began_with: str | None = None):
    """Every sample exactly once over all processes: rank r takes positions r, r + N, ... (no padding)."""
    batch = cfg.eval_batch_size or 2 * cfg.batch_size
    positions = range(rank, len(ds), world_size)
    if use_device_loader(ds, cfg, device, began_with):
        return DeviceLoader(ds, device, positions=positions, batch_size=batch, workers=usable_workers(cfg))
    return DataLoader(ds, batch_size=batch, sampler=list(positions), **loader_kwargs(cfg, device))


# --------------------------------------------------------------------------------------------------
# GPU-resident loading for datasets that fit in device memory

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
        return True
    if cfg.loader == "torch" or preset not in DEVICE_PRESETS:
        return False
    if began_with is not None:
        return began_with == "device"
    free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else _available_ram()
    return len(ds) * 3 * 64 * 64 < 0.25 * free  # a generous bound for images of at most 64x64


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
