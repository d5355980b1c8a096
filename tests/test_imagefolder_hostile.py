"""Image folders that would hang acl (issue 31): a FIFO, device or socket named like an image blocks the
open forever, and links to folders that loop make torchvision's os.walk(followlinks=True) list ~3^40 paths.
acl refuses both in one line before a run folder exists; links to image files and to class folders work.
The hang tests run the CLI in a subprocess with a timeout, so a regression fails instead of hanging."""
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from torchvision.datasets.folder import find_classes, make_dataset

from acl_cli.config import load_config
from acl_cli.data import (IMAGE_EXTENSIONS, build_splits, check_images, check_split_images, list_images,
                          load_image)
from acl_cli.errors import UserError
from acl_cli.training import train

ROOT = Path(__file__).resolve().parents[1]
HANG_S = 120  # far more than acl needs on a loaded machine; a hang is forever
CLASSES = [str(c) for c in range(10)]  # digits' classes, so a digits checkpoint can evaluate the folder


def _image_folder(root: Path, splits=("train",), per_class: int = 2) -> Path:
    from PIL import Image

    for split in splits:
        for c in CLASSES:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (8, 8), (20 * int(c), i, 0)).save(root / split / c / f"{i}.png")
    return root


def _acl(*args, cwd: Path) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([sys.executable, "-m", "acl_cli", *map(str, args)], cwd=cwd, capture_output=True,
                              text=True, timeout=HANG_S, env={**os.environ, "PYTHONPATH": str(ROOT)})
    except subprocess.TimeoutExpired:
        pytest.fail(f"acl {' '.join(map(str, args))} hung (over {HANG_S} s)")


def _one_line_exit_2(res: subprocess.CompletedProcess, *needles: str) -> str:
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), res.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _train(tmp_path: Path, data: Path) -> subprocess.CompletedProcess:
    return _acl("train", "--config", ROOT / "configs/quickstart.yaml", "--out", tmp_path / "new",
                "--set", "data.name=imagefolder", "--set", f"data.root={data}", "--set", "data.val_split=0.5",
                "--set", "train.epochs=1", "--set", "train.device=cpu", cwd=tmp_path)


# ---- files that are not files


def _plant(path: Path, kind: str) -> None:
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "link to a fifo":
        os.mkfifo(path.with_name("pipe"))
        path.symlink_to("pipe")
    elif kind == "link to a device":
        path.symlink_to("/dev/zero")  # reading it never ends
    elif kind == "socket":
        with socket.socket(socket.AF_UNIX) as s:  # bound relative to its folder: AF_UNIX paths are short
            cwd = os.getcwd()
            os.chdir(path.parent)
            try:
                s.bind(path.name)
            finally:
                os.chdir(cwd)
    elif kind == "broken link":
        path.symlink_to("gone.png")


@pytest.mark.parametrize("kind, says", [("fifo", "is a FIFO"), ("link to a fifo", "is a FIFO"),
                                        ("link to a device", "is a device")])
def test_train_refuses_an_image_that_would_block(tmp_path, kind, says):
    data = _image_folder(tmp_path / "data")
    _plant(data / "train/3/zz.png", kind)
    _one_line_exit_2(_train(tmp_path, data), f"image {data}/train/3/zz.png {says}")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("kind, says", [("socket", "is a socket"), ("broken link", "is a broken link (to gone.png)")])
def test_train_names_an_image_that_is_not_a_file(tmp_path, cli, kind, says):  # these fail at once: in-process
    data = _image_folder(tmp_path / "data")
    _plant(data / "train/3/zz.png", kind)
    res = cli("train", "--config", ROOT / "configs/quickstart.yaml", "--out", tmp_path / "new", "--set",
              "data.name=imagefolder", "--set", f"data.root={data}", "--set", "data.val_split=0.5")
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1, res.stderr
    assert lines[0] == f"error: image {data}/train/3/zz.png {says}" + (", not a regular file" * (kind == "socket"))
    assert not (tmp_path / "new").exists()


def test_an_image_swapped_for_a_fifo_after_the_listing_is_refused_when_opened(tmp_path):
    fifo = tmp_path / "zz.png"
    os.mkfifo(fifo)
    for read in (load_image, check_images_of):
        errors = []
        reader = threading.Thread(target=lambda: errors.append(_error_of(read, str(fifo))), daemon=True)
        reader.start()
        reader.join(HANG_S / 4)
        if reader.is_alive():
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # a writer frees the blocked open
            pytest.fail(f"{read.__name__} blocked on a FIFO")
        assert errors == [f"image {fifo} is a FIFO (named pipe), not a regular file"]


def check_images_of(path: str) -> None:
    check_images(SimpleNamespace(base=SimpleNamespace(samples=[(path, 0)]), indices=[0]))


def _error_of(read, path: str) -> str | None:
    try:
        read(path)
    except UserError as e:
        return str(e)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("digits") / "run"
    small = ["model.arch=resnet20", "model.csg={slice_shape: [16, 16, 3, 3], code_size: 72}", "data.name=digits",
             "data.val_split=0.2", "data.train_subset=64", "data.batch_size=32", "data.workers=0", "train.epochs=1",
             "train.progress=false", "train.device=cpu"]
    train(load_config(None, small), run, log=lambda *a, **k: None)
    return run


def test_eval_refuses_a_fifo_among_the_images(tmp_path, digits_run):
    data = _image_folder(tmp_path / "data", splits=("val",))
    os.mkfifo(data / "val/3/zz.png")
    res = _acl("eval", digits_run, "--device", "cpu", "--set", "data.name=imagefolder", "--set", f"data.root={data}",
               "--set", "data.val_split=0", cwd=tmp_path)
    _one_line_exit_2(res, f"image {data}/val/3/zz.png is a FIFO")


def test_a_fifo_not_named_like_an_image_is_never_opened(tmp_path):
    data = _image_folder(tmp_path / "data")
    os.mkfifo(data / "train/3/README")  # ImageFolder skips it by its name, as torchvision does
    cfg = load_config(None, ["data.name=imagefolder", f"data.root={data}", "data.val_split=0.5"]).data
    assert len(build_splits(cfg, 10).train) == 10


# ---- links to folders


@pytest.mark.parametrize("links, back_to", [
    ({"a": ".", "b": ".", "c": "."}, "train/3"),  # 3^40 paths through os.walk
    ({"up": ".."}, "train"),
    ({"deep/x/top": "../../.."}, "train"),
])
def test_a_loop_of_folder_links_is_one_line_not_a_hang(tmp_path, links, back_to):
    data = _image_folder(tmp_path / "data")
    for name, target in links.items():
        (data / "train/3" / name).parent.mkdir(parents=True, exist_ok=True)
        (data / "train/3" / name).symlink_to(target)
    line = _one_line_exit_2(_train(tmp_path, data), f"leads back to {data}/{back_to}, a folder that holds it",
                            "a loop of folder links")
    assert line.split(" leads back")[0].removeprefix("error: ") in [str(data / "train/3" / n) for n in links]
    assert not (tmp_path / "new").exists()


def test_two_links_to_one_folder_would_count_its_images_twice(tmp_path):
    data = _image_folder(tmp_path / "data")
    (data / "train/3/more").symlink_to(data / "train/4")
    cfg = load_config(None, ["data.name=imagefolder", f"data.root={data}", "data.val_split=0.5"]).data
    twice = r"train/4 and \S+/train/3/more are one folder \(through a link\): its images would count twice"
    with pytest.raises(UserError, match=twice):
        build_splits(cfg, 10)


def test_links_to_images_and_to_class_folders_work_as_torchvision_lists_them(tmp_path):
    from PIL import Image

    data = _image_folder(tmp_path / "data")
    elsewhere = _image_folder(tmp_path / "big_disk")
    (data / "train/9").rename(tmp_path / "old9")
    (data / "train/9").symlink_to(elsewhere / "train/9")  # train/cat -> /big/disk/cats
    (data / "train/3/linked.png").symlink_to(data / "train/2/0.png")
    (data / "train/3/nested/more").mkdir(parents=True)
    (data / "train/3/nested/more/x.png").symlink_to(data / "train/2/1.png")
    (data / "train/3/nested.png").mkdir()  # a folder named like an image is a folder
    Image.new("RGB", (8, 8)).save(data / "train/3/nested.png/y.PNG")
    (data / "train/5/shared").symlink_to(tmp_path / "old9")  # a link to a folder listed nowhere else
    root = str(data / "train")
    listed = list_images(root, find_classes(root)[1])
    assert listed == make_dataset(root, find_classes(root)[1], extensions=IMAGE_EXTENSIONS)  # same order
    assert f"{root}/9/0.png" in [p for p, _ in listed] and len(listed) == 25
    cfg = load_config(None, ["data.name=imagefolder", f"data.root={data}", "data.val_split=0.5",
                             "data.image_size=8"]).data
    splits = build_splits(cfg, 10)
    check_split_images(splits, cfg)
    assert len(splits.train) + len(splits.val) == 25 and splits.preset == "cifar"
