"""Helpers for tests on the real JPEG CIFAR-10 in ../shared/data (skipped when it is absent)."""
import tarfile
from pathlib import Path

SHARED_TAR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-jpeg-train.tar"


def extract_balanced(dest: Path, per_class: int, tar_path: Path = SHARED_TAR) -> Path:
    """Write the first ``per_class`` images of each class to ``dest/train/<class>/`` (an image folder)."""
    counts: dict[str, int] = {}
    with tarfile.open(tar_path) as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 3 or parts[0] != "train":
                continue
            cls = parts[1]
            if counts.get(cls, 0) >= per_class:
                continue
            counts[cls] = counts.get(cls, 0) + 1
            out = dest / "train" / cls / parts[2]
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(tar.extractfile(member).read())
    return dest
