"""Image folders (``root/<class>/<image>``): listed without hanging on links, FIFOs or loops, read as 8-bit
RGB, and their headers checked before a run writes anything."""
from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import find_classes

from ..errors import UserError
from ..files import check_regular

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


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


def open_image_file(path: str) -> BinaryIO:
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


class _ImageFolder(ImageFolder):
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


def image_folder(root: Path, what: str) -> ImageFolder:
    try:
        return _ImageFolder(str(root), loader=load_image)
    except (FileNotFoundError, OSError) as e:
        raise UserError(f"cannot read the {what} image folder {root}: {e}".split("\n")[0]) from None


def image_side(path: str) -> int:
    problem, size = _image_header(path)
    if problem:
        raise UserError(f"cannot read image {path}: {problem}")
    return max(size)


def first_image_side(folder: Path) -> int | None:
    """The longer side of the first image an image-folder split lists, or None if it has none."""
    try:
        _, class_to_idx = find_classes(str(folder))
    except OSError:  # no class folder: building the split says so
        return None
    samples = list_images(str(folder), class_to_idx)
    return image_side(samples[0][0]) if samples else None
