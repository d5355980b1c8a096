"""Every command, for bad input: one line on stderr, exit status 2, no traceback, no file created or changed."""
import pickle
from pathlib import Path

import pytest
import torch

from acl_cli.training import train
from acl_cli.config import load_config

SMALL = ["model.arch=resnet20", "model.csg={slice_shape: [16, 16, 3, 3], code_size: 72}", "data.name=digits",
         "data.val_split=0.2", "data.train_subset=64", "data.batch_size=32", "data.workers=0", "train.epochs=1",
         "train.progress=false"]


class Evil:
    """Unpickling this would create a file: the proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    ws = tmp_path_factory.mktemp("ws")
    train(load_config(None, SMALL), ws / "run", log=lambda *a: None)
    (ws / "good.yaml").write_text("\n".join(["model:", "  arch: resnet20", "data:", "  name: digits",
                                             "  val_split: 0.2", "train:", "  epochs: 1"]) + "\n")
    (ws / "syntax.yaml").write_text("model:\n  arch: resnet20\n  csg: {slice_shape: [16, 16\n")
    (ws / "notes.yaml").write_text("just some text\n")
    data = (ws / "run" / "last.pt").read_bytes()
    (ws / "truncated.pt").write_bytes(data[: len(data) // 2])
    (ws / "text.pt").write_text("model: resnet20\n")
    torch.save({"net": {"conv_1_3x3.weight": torch.zeros(1)}, "acc": 90.0, "epoch": 3}, ws / "authors.t7")
    torch.save({"model": Evil(str(ws / "pwned"))}, ws / "evil.pt")
    (ws / "empty_run").mkdir()
    (ws / "partial").mkdir()
    (ws / "partial" / "notes.txt").write_text("keep")
    # hostile or broken inputs
    (ws / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    (ws / "deep.yaml").write_text("a: " + "[" * 20000 + "]" * 20000 + "\n")
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x]"] + [
        f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 9)]
    (ws / "bomb.yaml").write_text("\n".join(lines) + "\n")  # 500 bytes, 9**9 values expanded
    (ws / "huge.yaml").write_text("# padding\n" * 200_000)
    (ws / "cfgdir.yaml").mkdir()
    (ws / "link").symlink_to(ws / "run")
    torch.save({"net": {"conv_1_3x3.weight": torch.zeros(16, 3, 3, 3), "linear.weight": torch.zeros(0, 64)},
                "acc": 90.0}, ws / "authors0.t7")
    torch.save({"net": {"linear.weight": torch.zeros(10, 64)}, "acc": "ninety"}, ws / "authors_acc.t7")
    for name, metrics in (("garbage_run", "epoch,val_top1\n1,banana\n"), ("emptycfg_run", None)):
        (ws / name).mkdir()
        (ws / name / "params.json").write_text((ws / "run" / "params.json").read_text())
        (ws / name / "config.yaml").write_text((ws / "run" / "config.yaml").read_text() if metrics else "")
        (ws / name / "metrics.csv").write_text(metrics or "")
    from PIL import Image

    for split, cls, i in [("train", c, i) for c in "ab" for i in range(4)] + [("val", "a", 0), ("val", "b", 0)]:
        (ws / "badimg" / split / cls).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(ws / "badimg" / split / cls / f"{i}.png")
    (ws / "badimg" / "val" / "b" / "broken.png").write_bytes(b"\x89PNG not really")
    # image folders a model cannot be trained on, each refused before a run folder exists
    for name, sizes in (("tiny", {"train": (1, 1), "val": (1, 1)}), ("mixed", {"train": (32, 32), "val": None})):
        for split, cls, i in [(sp, c, i) for sp in ("train", "val") for c in "ab" for i in range(4)]:
            size = sizes[split] or ((32, 32) if i % 2 else (40, 40))  # mixed: two sizes among the val images
            (ws / name / split / cls).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", size, (i * 40, 0, 0)).save(ws / name / split / cls / f"{i}.png")
    (ws / "textjpg" / "train" / "a").mkdir(parents=True)
    (ws / "textjpg" / "train" / "a" / "0.jpg").write_text("not a picture\n")
    (ws / "digits.yaml").write_text("train:\n  epochs: " + "9" * 5000 + "\n")
    (ws / "paper.pdf").write_text("the user's own plot")
    with open(ws / "evil.pkl", "wb") as f:  # a bare pickle, not even a torch zip file
        pickle.dump(Evil(str(ws / "pwned")), f)
    (ws / "sent").mkdir()  # a run folder someone sent: its config names a module whose import acts
    for name in ("config.yaml", "params.json", "metrics.csv"):
        text = (ws / "run" / name).read_text()
        (ws / "sent" / name).write_text(text.replace("arch: resnet20", "arch: venv.__main__:main"))
    (ws / "exp1").mkdir()
    (ws / "exp1" / "config.yaml").write_text("# my experiment, with my comments\n" + (ws / "good.yaml").read_text())
    return ws


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


CASES = [
    # acl train
    ("train",), "give --config FILE",
    ("train", "--config", "missing.yaml"), "config file not found: missing.yaml",
    ("train", "--config", "syntax.yaml"), "syntax.yaml:4:1: YAML syntax error",
    ("train", "--config", "notes.yaml"), "top level must be a mapping",
    ("train", "--config", "good.yaml", "--set", "modle.arch=resnet20"), "did you mean 'model'?",
    ("train", "--config", "good.yaml", "--set", "train.epochs=many"), "train.epochs: expected an int",
    ("train", "--config", "good.yaml", "--set", "optim.lr=-0.1"), "optim.lr: must be > 0",
    ("train", "--config", "good.yaml", "--set", "model.csg={slice_shape: [16,16,3], code_size: 8}"),
    "expected 4 positive ints",
    ("train", "--config", "good.yaml", "--set", "model.csg.code_size=64"), "model.csg: missing slice_shape",
    ("train", "--config", "good.yaml", "--set", "model.csg={slice_shape: [8,8,3,3], code_size: 0}"),
    "code_size: must be a positive int",
    ("train", "--config", "good.yaml", "--set", "model.arch=resnet21"), "unknown arch 'resnet21'; valid: densenet121",
    ("train", "--config", "good.yaml", "--set", "data.name=mnist"), "data.name: expected 'cifar10' or 'cifar100'",
    ("train", "--config", "good.yaml", "--set", "optim.lr"), "expected key=value",
    ("train", "--config", "good.yaml", "--set", "data.name=imagefolder", "--set", "data.root=nowhere"),
    "/nowhere/train (expected",
    ("train", "--config", "good.yaml", "--set", "data.name=cifar10", "--set", "data.val_split=0"),
    "/data/cifar-10-batches-py: set data.download: true",
    ("train", "--config", "good.yaml", "--set", "data.batch_size=5000"), "fewer than one batch",
    ("train", "--config", "good.yaml", "--out", "partial"),
    "partial is not empty and is not an acl run (it holds notes.txt); give --out a new or empty folder",
    ("train", "--config", "good.yaml", "--out", "good.yaml"), "is a file",
    ("train", "--resume", "empty_run"), "cannot resume: empty_run/last.pt does not exist",
    ("train", "--resume", "run", "--config", "good.yaml"), "--resume takes the config from the run",
    ("train", "--resume", "run"), "already finished 1 epochs",
    ("train", "--resume", "run", "--set", "model.arch=resnet32", "--set", "train.epochs=3"),
    "--resume cannot change model.arch ('resnet20' -> 'resnet32')",
    ("train", "--bogus"), "No such option '--bogus'",
    # acl eval
    ("eval",), "Missing argument 'CHECKPOINT'",
    ("eval", "nothing.pt"), "checkpoint not found: nothing.pt",
    ("eval", "truncated.pt"), "truncated.pt is not a readable checkpoint",
    ("eval", "text.pt"), "text.pt is not a readable checkpoint",
    ("eval", "authors.t7"), "is not an acl checkpoint",
    ("eval", "evil.pt"), "refusing to load evil.pt",
    ("eval", "empty_run"), "no checkpoint in empty_run",
    ("eval", "run", "--set", "model.arch=resnet32"), "run does not fit this model: stage1.3.conv_a.codes is missing",
    ("eval", "run", "--split", "test"), "no test split",
    ("eval", "run", "--split", "holdout"), "'holdout' is not one of",
    ("eval", "run", "--set", "data.val_split=2"), "data.val_split: must be in [0, 1)",
    ("eval", "run", "--set", "data.name=imagefolder", "--set", "data.root=nowhere"), "no training folder",
    # acl count-params
    ("count-params", "--arch", "resnet57"), "unknown arch 'resnet57'",
    ("count-params", "--arch", "resnet56", "--slice-shape", "12,x,3,3"), "expected four ints",
    ("count-params", "--arch", "resnet56", "--slice-shape", "12,12,3,3", "--code-size", "0"), "must be a positive int",
    ("count-params", "--arch", "resnet56", "--slice-shape", "12,12,5,5", "--code-size", "8"), "nothing would be generated",
    ("count-params", "--config", "good.yaml", "--set", "x"), "expected key=value",
    ("count-params", "--config", "good.yaml", "--set", "model.num_classes=0"), "num_classes: must be >= 1",
    # acl config show
    ("config", "show", "--config", "syntax.yaml"), "YAML syntax error",
    ("config", "show", "--config", "missing.yaml"), "config file not found",
    ("config", "show", "--config", "good.yaml", "--set", "schedule.name=linear"), "schedule.name: expected",
    # acl bench, import-original, export, report
    ("bench", "--config", "good.yaml", "--device", "cpu"), "model.csg: null",
    ("bench", "--config", "missing.yaml"), "config file not found",
    ("bench", "--config", "good.yaml", "--set", "model.csg={slice_shape: [8,8,3,3], code_size: 0}"),
    "code_size: must be a positive int",
    ("import-original", "authors.t7", "--arch", "resnet57", "--out", "x.pt"), "unknown arch 'resnet57'",
    ("import-original", "text.pt", "--arch", "resnet20", "--out", "x.pt"), "not a readable PyTorch checkpoint",
    ("import-original", "evil.pt", "--arch", "resnet20", "--out", "x.pt"), "refusing to load evil.pt: it would import",
    ("import-original", "authors.t7", "--arch", "resnet20", "--out", "good.yaml"), "good.yaml already exists",
    ("export", "truncated.pt", "--out", "x.pt"), "not a readable checkpoint",
    ("export", "evil.pt", "--out", "x.pt"), "refusing to load evil.pt",
    ("export", "run", "--out", "good.yaml"), "good.yaml already exists",
    ("export", "run", "--out", "x.pt", "--fp16"), "--fp16 applies to --compact only",
    ("report", "empty_run"), "empty_run is not a run directory",
    ("nope",), "No such command 'nope'",
    # hostile files, absurd values, paths --overwrite must never touch
    ("train", "--config", "binary.yaml"), "binary.yaml is not a text file",
    ("train", "--config", "deep.yaml"), "deep.yaml: YAML nested too deeply",
    ("config", "show", "--config", "bomb.yaml"), "refusing a YAML document of more than 100,000 values",
    ("count-params", "--config", "huge.yaml"), "is too large for a config file",
    ("bench", "--config", "cfgdir.yaml"), "is a directory",
    ("train", "--config", "good.yaml", "--set", "train.seed=1180591620717411303424"), "train.seed: 11805916",
    ("train", "--config", "good.yaml", "--set", "train.seed=-1"), "train.seed: must be in [0, 2**32)",
    ("train", "--config", "good.yaml", "--set", "optim.lr=.nan"), "optim.lr: must be a finite number, got nan",
    ("train", "--config", "good.yaml", "--set", "optim.lr=.inf"), "optim.lr: must be a finite number, got inf",
    ("train", "--config", "good.yaml", "--set", "schedule.warmup_epochs=.inf"), "warmup_epochs: must be a finite",
    ("train", "--config", "good.yaml", "--set", "schedule.milestones=[.nan]"), "milestones[0]: must be a finite",
    ("train", "--config", "good.yaml", "--set", "model.csg={slice_shape: [16, 16, 3, 3], code_size: 1000000000000}"),
    "model: cannot build resnet20 with these settings",
    ("train", "--config", "good.yaml", "--set", "train.device=bogus"), "train.device: expected auto, cpu",
    ("train", "--config", "good.yaml", "--set", "model.arch=" + "x" * 5000), "unknown arch 'xxxxxxxx",
    ("eval", "run", "--batch-size", "-3"), "--batch-size must be >= 1",
    ("eval", "run", "--device", "bogus"), "device 'bogus': expected auto, cpu, cuda or cuda:N",
    ("bench", "--config", "good.yaml", "--device", "cuda:x"), "device 'cuda:x': expected auto",
    ("import-original", "authors0.t7", "--arch", "resnet20", "--out", "x.pt"), "expected (classes >= 1",
    ("import-original", "authors_acc.t7", "--arch", "resnet20", "--out", "x.pt"), "'acc' should be the test accuracy",
    ("import-original", "authors.t7", "--arch", "resnet20", "--out", "run/last.pt", "--overwrite"),
    "is a file of the acl run directory",
    ("report", "garbage_run"), "garbage_run: metrics.csv is not readable",
    ("report", "run", "--plot", "partial"), "is a directory",
    ("report", "run", "--plot", "run/metrics.csv"), "--plot run/metrics.csv: unsupported format '.csv'",
    ("report", "emptycfg_run"), "config.yaml is empty or has no model section",
    ("export", "run", "--out", "good.yaml/x.pt"), "cannot write good.yaml/x.pt",
    ("export", "run", "--out", "partial", "--overwrite"), "is a directory",
    ("export", "run/last.pt", "--out", "run/last.pt", "--overwrite", "--compact"), "replace the checkpoint it reads",
    ("export", "run", "--out", "run/best.pt", "--overwrite", "--compact"), "run/best.pt: it would replace the checkpoint it reads",
    ("train", "--config", "good.yaml", "--out", ".", "--overwrite"), "refusing to overwrite .: it is the current",
    ("train", "--config", "good.yaml", "--out", "..", "--overwrite"), "it holds the current directory",
    ("train", "--config", "good.yaml", "--out", "link", "--overwrite"), "link: it is a symbolic link",
    ("train", "--config", "good.yaml", "--out", "partial", "--overwrite"), "not an acl run directory (acl did not make it; it holds notes.txt)",
    ("train", "--config", "good.yaml", "--out", "good.yaml", "--overwrite"), "is a file",
    ("train", "--config", "good.yaml", "--out", "new", "--set", "data.name=imagefolder", "--set", "data.root=badimg",
     "--set", "data.val_split=0", "--set", "model.num_classes=2"), "/badimg/val/b/broken.png: not an image PIL can read",
    ("train", "--resume", "run", "--set", "data.batch_size=8", "--set", "train.epochs=3"),
    "--resume cannot change data.batch_size (32 -> 8)",
    # reliability round 3: images a run cannot use, found before a run folder exists
    ("train", "--config", "good.yaml", "--out", "new", "--set", "data.name=imagefolder", "--set", "data.root=tiny",
     "--set", "data.val_split=0", "--set", "model.num_classes=2"), "is 1x1: the training crop needs at least 24x24",
    ("train", "--config", "good.yaml", "--out", "new", "--set", "data.name=imagefolder", "--set", "data.root=mixed",
     "--set", "data.val_split=0", "--set", "model.num_classes=2"), "validation images of two sizes",
    ("train", "--config", "good.yaml", "--out", "new", "--set", "data.name=imagefolder", "--set", "data.root=textjpg",
     "--set", "data.val_split=0.5", "--set", "model.num_classes=2"), "textjpg/train/a/0.jpg: not an image PIL can read",
    ("train", "--config", "good.yaml", "--out", "new", "--set", "model.arch=densenet_bc_40_36", "--set",
     "data.image_size=2"),
    "densenet_bc_40_36 does not take the training images (a batch of 3x2x2)",
    ("train", "--config", "digits.yaml"), "a number with more than 4,300 digits",
    ("config", "show", "--config", "digits.yaml"), "a number with more than 4,300 digits",
    ("report", "run", "--plot", "notes.tex"), "unsupported format '.tex'",
    ("report", "run", "--plot", "nodir/x.png"), "the folder nodir does not exist",
    ("report", "run", "--plot", "paper.pdf"), "paper.pdf already exists; give another path or add --overwrite",
    ("eval", "evil.pkl"), "evil.pkl is not a readable checkpoint (truncated or another format)",
    ("count-params", "--config", "good.yaml", "--set", "model.arch=venv.__main__:main"),
    "refusing to import venv.__main__: a __main__ module is a script's entry point",
    ("count-params", "--config", "good.yaml", "--set", "model.arch=os._wrap_close:f"),
    "refusing to import os._wrap_close",
    ("train", "--config", "exp1/config.yaml", "--out", "exp1", "--overwrite"),
    "refusing to overwrite exp1: it is not an acl run directory (acl did not make it; it holds config.yaml)",
    ("train", "--config", "exp1/config.yaml", "--out", "exp1"), "exp1 is not empty and is not an acl run",
    ("train", "--config", "run/config.yaml", "--out", "run", "--overwrite"),
    "--config run/config.yaml lies inside it and would be replaced",
    ("bench", "--config", "good.yaml", "--device", "cpu", "--set", "data.name=synthetic", "--set", "data.image_size=100000"),
    "data.image_size: must be at most 8192, got 100000",  # it only allocated until memory ran out
    ("count-params", "--config", "good.yaml", "--set", "data.image_size=8193"), "data.image_size: must be at most 8192",
]
CASES = list(zip(CASES[::2], CASES[1::2]))


@pytest.mark.parametrize("args,message", CASES, ids=[" ".join(a)[:60] for a, _ in CASES])
def test_bad_input(workspace, monkeypatch, cli, args, message):
    monkeypatch.chdir(workspace)
    before = _snapshot(workspace)
    res = cli(*args)
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert message in lines[0]
    assert "Traceback" not in res.output
    assert _snapshot(workspace) == before
    assert not (workspace / "pwned").exists()


def test_bad_input_count(workspace):
    assert len(CASES) >= 30


def test_debug_flag_shows_the_traceback(workspace, monkeypatch, cli):
    monkeypatch.chdir(workspace)
    res = cli("--debug", "eval", "truncated.pt")
    assert res.exit_code == 2 and "Traceback" in res.stderr and "not a readable checkpoint" in res.stderr


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_hostile_checkpoint_is_refused_everywhere_and_runs_no_code(workspace, monkeypatch):
    from acl_cli.checkpoint import load_checkpoint
    from acl_cli.errors import UserError

    monkeypatch.chdir(workspace)
    with pytest.raises(UserError, match="refusing to load"):
        load_checkpoint("evil.pt")
    with open(workspace / "evil.pkl", "wb") as f:  # a bare pickle, not even a torch zip file
        pickle.dump(Evil(str(workspace / "pwned")), f)
    with pytest.raises(UserError):
        load_checkpoint("evil.pkl")
    assert not (workspace / "pwned").exists()


def test_unwritable_run_directory_is_a_clear_error(tmp_path):
    from acl_cli.errors import UserError

    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(UserError, match="cannot create run directory .*: Not a directory"):
        train(load_config(None, SMALL), blocker / "run", log=lambda *a: None)
    assert blocker.read_text() == "a file where a folder should be"


def test_nonfinite_steps_can_be_skipped(tmp_path, monkeypatch):
    """train.on_nonfinite: skip drops the update of a step whose loss is NaN (a bad batch) and goes on."""
    from acl_cli.checkpoint import load_checkpoint

    real, calls = torch.nn.CrossEntropyLoss.forward, []

    def nan_on_third_call(self, logits, y):
        calls.append(1)
        loss = real(self, logits, y)
        return loss * float("nan") if len(calls) == 3 else loss

    monkeypatch.setattr(torch.nn.CrossEntropyLoss, "forward", nan_on_third_call)
    lines = []
    train(load_config(None, SMALL + ["train.epochs=2", "train.on_nonfinite=skip"]), tmp_path / "run",
          log=lines.append)
    assert [line for line in lines if "update skipped" in line] == [
        "warning: loss is nan at step 3 (epoch 2); update skipped"]
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["progress"]["skipped"] == 1 and state["progress"]["step"] == 4
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())


def test_a_real_full_disk_is_one_line_and_keeps_the_previous_checkpoint(tmp_path):
    """A file-size limit (ulimit -f: EFBIG, as a full disk gives ENOSPC) hits the real write path."""
    import subprocess
    import sys

    run = tmp_path / "run"
    train(load_config(None, SMALL), run, log=lambda *a: None)
    before = (run / "last.pt").read_bytes()
    limit_kib = len(before) // 1024 // 2  # the checkpoint cannot be written; the small text files can
    cmd = f"ulimit -f {limit_kib}; exec {sys.executable} -m acl_cli train --resume {run} --set train.epochs=2"
    res = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert lines == [f"error: cannot write checkpoint {run / 'last.pt'}: File too large; the previous one is "
                     "untouched"], res.stderr
    assert (run / "last.pt").read_bytes() == before
    assert not list(run.glob(".*.tmp"))
