"""Files someone sent (a config, a run folder, a checkpoint) and files in a run's way: acl never writes
through a link, never runs code they name without being told to, never hangs on them or reads them whole
when they are huge, and never loses a user's file."""
import errno
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from acl_cli.config import load_config
from acl_cli.training import train
from conftest import SMALL_RUN

SMALL = ["model.arch=resnet20", "model.csg={slice_shape: [16, 16, 3, 3], code_size: 72}", "data.name=digits",
         "data.val_split=0.2", "data.train_subset=64", "data.batch_size=32", "data.workers=0", "train.epochs=1",
         "train.progress=false"]
SETS = [a for s in SMALL for a in ("--set", s)]
ROOT = Path(__file__).resolve().parents[1]


def quiet(*args, **kwargs):
    pass


def _one_line_exit_2(res, *needles):
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def finished_run(small_run):
    assert SMALL == SMALL_RUN  # what the shared run was trained with
    return small_run


def _copy_run(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for p in src.iterdir():
        if p.is_file() and p.name != ".lock":
            (dst / p.name).write_bytes(p.read_bytes())
    return dst


# ---- data loss


@pytest.mark.parametrize("how", ["new", "resume", "overwrite"])
def test_a_link_at_the_lock_is_never_written_through(tmp_path, cli, finished_run, how):
    thesis = tmp_path / "thesis.tex"
    thesis.write_text("three years of work\n")
    run = tmp_path / "r"
    if how == "new":
        run.mkdir()
        args = ("train", "--config", ROOT / "configs/quickstart.yaml", "--out", run, *SETS)
    else:
        _copy_run(finished_run, run)
        args = (("train", "--resume", run, "--set", "train.epochs=2") if how == "resume" else
                ("train", "--config", ROOT / "configs/quickstart.yaml", "--out", run, "--overwrite", *SETS))
    (run / ".lock").symlink_to(thesis)
    _one_line_exit_2(cli(*args), ".lock: it is a symbolic link")
    assert thesis.read_text() == "three years of work\n"


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_a_lock_that_is_not_a_file_is_one_line(tmp_path, cli, kind):
    run = tmp_path / "r"
    run.mkdir()
    (run / ".lock").mkdir() if kind == "directory" else os.mkfifo(run / ".lock")
    line = _one_line_exit_2(cli("train", "--config", ROOT / "configs/quickstart.yaml", "--out", run, *SETS))
    assert ("is a directory" if kind == "directory" else "is a FIFO") in line
    assert sorted(p.name for p in run.iterdir()) == [".lock"]


def test_a_read_only_run_directory_is_one_line(tmp_path, cli, monkeypatch):
    import acl_cli.files

    real_open = os.open

    def read_only(path, flags, *args):  # what a read-only mount answers (root ignores chmod)
        if str(path).endswith(".lock") and flags & os.O_CREAT:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(acl_cli.files.os, "open", read_only)
    _one_line_exit_2(cli("train", "--config", ROOT / "configs/quickstart.yaml", "--out", tmp_path / "r", *SETS),
                     "cannot open the run's lock file", "Read-only file system")


def test_never_replaces_the_config_it_reads(tmp_path, cli):
    exp = tmp_path / "exp1"
    exp.mkdir()
    mine = "# my experiment: keep these notes\nbase: " + str(ROOT / "configs/quickstart.yaml") + "\n"
    (exp / "config.yaml").write_text(mine)
    for extra in ((), ("--overwrite",)):
        line = _one_line_exit_2(cli("train", "--config", exp / "config.yaml", "--out", exp, *extra, *SETS))
        assert "not an acl run" in line and ("--overwrite" not in line or extra)
        assert (exp / "config.yaml").read_text() == mine and sorted(p.name for p in exp.iterdir()) == ["config.yaml"]


def test_report_never_replaces_a_plot_without_overwrite(tmp_path, cli, finished_run):
    pytest.importorskip("matplotlib")
    paper = tmp_path / "paper.pdf"
    paper.write_text("my paper")
    _one_line_exit_2(cli("report", finished_run, "--plot", paper), "already exists")
    assert paper.read_text() == "my paper"
    res = cli("report", finished_run, "--plot", paper, "--overwrite")
    assert res.exit_code == 0, res.output
    assert paper.read_bytes().startswith(b"%PDF")


def test_an_image_that_fails_to_decode_at_the_first_step_leaves_no_run_folder(tmp_path, cli):
    """The header reads fine, the data is cut short: found only when the first batch is decoded."""
    from PIL import Image

    from acl_cli.data import EpochBatchSampler, build_splits

    data = tmp_path / "data"
    for i in range(16):
        (data / "train" / "ab"[i % 2]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
            data / "train" / "ab"[i % 2] / f"{i}.jpg", quality=95)
    sets = ["data.name=imagefolder", f"data.root={data}", "data.val_split=0.25", "data.batch_size=8",
            "data.workers=0", "model.num_classes=2", "train.epochs=1", "train.progress=false"]
    cfg = load_config(ROOT / "configs/quickstart.yaml", sets)
    splits = build_splits(cfg.data, 2)
    first_batch = EpochBatchSampler(len(splits.train), 8, cfg.train.seed).plan()[0, :, 0].tolist()
    victim = Path(splits.train.base.samples[splits.train.indices[first_batch[5]]][0])  # past the images checked first
    victim.write_bytes(victim.read_bytes()[:400])
    run = tmp_path / "run"
    _one_line_exit_2(cli("train", "--config", ROOT / "configs/quickstart.yaml", "--out", run,
                         *[a for s in sets for a in ("--set", s)]), str(victim))
    assert not run.exists()  # the rerun needs no --overwrite


def test_a_kill_between_the_last_checkpoint_and_its_records_is_mended_by_resume(tmp_path, cli, finished_run):
    """The state a kill -9 leaves after the last epoch's last.pt: metrics.csv without that epoch's row and no
    final.json (every file is replaced atomically, so this is the only in-between state)."""
    run = _copy_run(finished_run, tmp_path / "run")
    rows = (run / "metrics.csv").read_text().splitlines()
    (run / "metrics.csv").write_text(rows[0] + "\n")
    (run / "final.json").unlink()
    res = cli("train", "--resume", run)
    assert res.exit_code == 0, res.output
    assert (run / "metrics.csv").read_text().splitlines() == rows
    assert json.loads((run / "final.json").read_text())["best_val_top1"] == json.loads(
        (finished_run / "final.json").read_text())["best_val_top1"]
    _one_line_exit_2(cli("train", "--resume", run), "already finished 1 epochs")


# ---- code from data files


FACTORY = '''
import pathlib, torch.nn as nn
pathlib.Path(__file__).with_name("imported.marker").touch()  # the proof that this module's code ran


def tiny(num_classes=10):
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))
'''


@pytest.fixture
def factory_run(tmp_path, monkeypatch):
    """A run of a user's factory module, trained by its owner (who named it: an import by request)."""
    (tmp_path / "sentmods").mkdir()
    (tmp_path / "sentmods" / "tinynet.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path / "sentmods"))
    from acl_cli.models.external import external_entry

    def forget():  # a fresh process: the module not imported yet
        sys.modules.pop("tinynet", None)
        external_entry.cache_clear()

    forget()
    run = tmp_path / "run"
    train(load_config(None, SMALL + ["model.arch=tinynet:tiny", "model.csg=null"]), run, log=quiet)
    forget()
    marker = tmp_path / "sentmods" / "imported.marker"
    marker.unlink()
    yield run, marker
    forget()


def test_report_and_config_show_import_nothing(factory_run, cli):
    run, marker = factory_run
    res = cli("report", run)
    assert res.exit_code == 0, res.output
    assert "tinynet:tiny" in res.output
    res = cli("config", "show", "--config", run / "config.yaml")
    assert res.exit_code == 0, res.output
    assert not marker.exists()


@pytest.mark.parametrize("command", ["eval", "export", "resume"])
def test_a_module_named_by_a_checkpoint_is_imported_only_when_allowed(factory_run, cli, command, tmp_path):
    run, marker = factory_run
    args = {"eval": ("eval", run), "export": ("export", run, "--out", tmp_path / "plain.pt"),
            "resume": ("train", "--resume", run, "--set", "train.epochs=2")}[command]
    _one_line_exit_2(cli(*args), "names model.arch 'tinynet:tiny'", "--allow-import tinynet")
    assert not marker.exists()
    res = cli(*args, "--allow-import", "tinynet")
    assert res.exit_code == 0, res.output
    assert marker.exists()


def test_python_dash_m_does_not_import_from_the_working_directory(tmp_path):
    (tmp_path / "shadow.py").write_text(FACTORY)  # lying beside a run someone sent
    (tmp_path / "c.yaml").write_text("model: {arch: 'shadow:tiny'}\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(ROOT)
    res = subprocess.run([sys.executable, "-m", "acl_cli", "count-params", "--config", "c.yaml"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 2 and "cannot import shadow" in res.stderr, res.stderr
    assert not (tmp_path / "imported.marker").exists()


# ---- bounded memory, no hangs


def _acl(*args, cwd=None, timeout=60):
    """The real acl in a subprocess: a regression that blocks on a FIFO fails the test instead of hanging it."""
    return subprocess.run([sys.executable, "-m", "acl_cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def test_fifos_and_devices_are_refused_without_blocking(tmp_path, finished_run):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    cases = [(("eval", fifo), "is a FIFO"), (("config", "show", "--config", fifo), "is a FIFO"),
             (("config", "show", "--config", tmp_path / "zero.yaml"), "/dev/zero is a device")]
    (tmp_path / "zero.yaml").write_text("base: /dev/zero\n")
    cases.append((("train", "--config", ROOT / "configs/quickstart.yaml", "--out", tmp_path / "r", *SETS, "--set",
                   f"model.csg.init_from={fifo}"), "is a FIFO"))
    for args, needle in cases:
        res = _acl(*args)
        assert res.returncode == 2 and needle in res.stderr, (args, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (tmp_path / "r").exists()
    run = _copy_run(finished_run, tmp_path / "sent")
    for target in (fifo, Path("/dev/zero")):  # run.json as a FIFO or an endless device
        (run / "run.json").unlink()
        (run / "run.json").symlink_to(target)
        res = _acl("report", run)
        assert res.returncode == 0 and "| sent |" in res.stdout, res.stderr


def test_a_hostile_bare_pickle_is_one_line_with_no_warnings(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump(Evil(), f)
    res = _acl("eval", tmp_path / "evil.pkl")  # a fresh process: torch's warnings would show on first use
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'evil.pkl'} is not a readable checkpoint (truncated or another format)"], res.stderr
    assert not (tmp_path / "pwned").exists()


def test_a_zip_bomb_checkpoint_is_refused_by_name(tmp_path, finished_run, cli):
    """A checkpoint whose tensor data is deflated: a few hundred KB that would unpack to 400 MB."""
    state = torch.load(finished_run / "best.pt", weights_only=True)
    state["model"]["fc.bias"] = torch.zeros(100_000_000)
    plain = tmp_path / "plain.pt"
    torch.save(state, plain)
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    plain.unlink()
    assert bomb.stat().st_size < 2_000_000
    _one_line_exit_2(cli("eval", bomb), "refusing to load", "zip bomb")


# ---- silently wrong data


def test_16_bit_images_are_scaled_not_clipped(tmp_path):
    from PIL import Image

    from acl_cli.data import load_image

    dark, light = (np.full((8, 8), v, dtype=np.uint16) for v in (1000, 60000))
    for name, a in (("dark", dark), ("light", light)):
        Image.fromarray(a).save(tmp_path / f"{name}.png")
        assert Image.open(tmp_path / f"{name}.png").mode.startswith("I;16")
    got = {name: np.asarray(load_image(str(tmp_path / f"{name}.png"))) for name in ("dark", "light")}
    assert got["dark"].max() == round(1000 / 257) and got["light"].min() == round(60000 / 257)


def test_renamed_or_swapped_class_folders_are_refused_by_resume_and_eval(tmp_path, cli):
    from PIL import Image

    data = tmp_path / "data"
    for cls in ("cat", "dog", "emu"):
        for i in range(12):
            (data / "train" / cls).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((32, 32, 3), 20 * i, dtype=np.uint8)).save(data / "train" / cls / f"{cls}{i}.png")
    sets = ["data.name=imagefolder", f"data.root={data}", "data.val_split=0.25", "data.batch_size=9",
            "data.workers=0", "model.num_classes=3", "train.epochs=1", "train.progress=false"]
    run = tmp_path / "run"
    res = cli("train", "--config", ROOT / "configs/quickstart.yaml", "--out", run, *[a for s in sets for a in ("--set", s)])
    assert res.exit_code == 0, res.output
    (data / "train" / "cat").rename(data / "train" / "zebra")  # every label moves down by one
    _one_line_exit_2(cli("eval", run), "class 0 = 'cat'", "class 0 is 'dog'")
    _one_line_exit_2(cli("train", "--resume", run, "--set", "train.epochs=2"), "class 0 = 'cat'")
    (data / "train" / "zebra").rename(data / "train" / "tmp")
    (data / "train" / "emu").rename(data / "train" / "cat")
    (data / "train" / "tmp").rename(data / "train" / "emu")  # the same names, cats and emus swapped
    _one_line_exit_2(cli("train", "--resume", run, "--set", "train.epochs=2"),
                     "are not those the run was trained on")
