"""Every command, for bad input: one line on stderr, exit status 2, no traceback, no file created or changed."""
import pickle
from pathlib import Path

import pytest
import torch

from acl_cli.engine import train
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
    ("train", "--config", "good.yaml", "--set", "model.csg.slice_shape=[16,16,3]"), "expected 4 positive ints",
    ("train", "--config", "good.yaml", "--set", "model.csg.code_size=0"), "code_size: must be a positive int",
    ("train", "--config", "good.yaml", "--set", "model.arch=resnet21"), "unknown arch 'resnet21'; valid: densenet121",
    ("train", "--config", "good.yaml", "--set", "data.name=mnist"), "data.name: expected 'cifar10' or 'cifar100'",
    ("train", "--config", "good.yaml", "--set", "optim.lr"), "expected key=value",
    ("train", "--config", "good.yaml", "--set", "data.name=imagefolder", "--set", "data.root=nowhere"),
    "no training folder at nowhere/train",
    ("train", "--config", "good.yaml", "--set", "data.name=cifar10", "--set", "data.val_split=0"),
    "cifar10 not found in data/cifar-10-batches-py: set data.download: true",
    ("train", "--config", "good.yaml", "--set", "data.batch_size=5000"), "fewer than one batch",
    ("train", "--config", "good.yaml", "--out", "partial"), "run directory partial already exists",
    ("train", "--config", "good.yaml", "--out", "good.yaml"), "is a file",
    ("train", "--resume", "empty_run"), "cannot resume: empty_run/last.pt does not exist",
    ("train", "--resume", "run", "--config", "good.yaml"), "--resume takes the config from the run",
    ("train", "--resume", "run"), "already finished 1 epochs",
    ("train", "--resume", "run", "--set", "model.arch=resnet32", "--set", "train.epochs=3"), "does not fit this model",
    ("train", "--bogus"), "No such option '--bogus'",
    # acl eval
    ("eval",), "Missing argument 'CHECKPOINT'",
    ("eval", "nothing.pt"), "checkpoint not found: nothing.pt",
    ("eval", "truncated.pt"), "truncated.pt is not a readable checkpoint",
    ("eval", "text.pt"), "text.pt is not a readable checkpoint",
    ("eval", "authors.t7"), "is not an acl checkpoint",
    ("eval", "evil.pt"), "refusing to load evil.pt",
    ("eval", "empty_run"), "no checkpoint in empty_run",
    ("eval", "run", "--set", "model.arch=resnet32"), "weights do not fit resnet32",
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
    ("bench", "--config", "good.yaml", "--set", "model.csg.code_size=0"), "code_size: must be a positive int",
    ("import-original", "authors.t7", "--arch", "resnet57", "--out", "x.pt"), "unknown arch 'resnet57'",
    ("import-original", "text.pt", "--arch", "resnet20", "--out", "x.pt"), "not a readable PyTorch checkpoint",
    ("import-original", "evil.pt", "--arch", "resnet20", "--out", "x.pt"), "not a readable PyTorch checkpoint",
    ("import-original", "authors.t7", "--arch", "resnet20", "--out", "good.yaml"), "good.yaml already exists",
    ("export", "truncated.pt", "--out", "x.pt"), "not a readable checkpoint",
    ("export", "evil.pt", "--out", "x.pt"), "refusing to load evil.pt",
    ("export", "run", "--out", "good.yaml"), "good.yaml already exists",
    ("export", "run", "--out", "x.pt", "--fp16"), "--fp16 applies to --compact only",
    ("report", "empty_run"), "empty_run is not a run directory",
    ("nope",), "No such command 'nope'",
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
    with pytest.raises(UserError, match="cannot prepare run directory"):
        train(load_config(None, SMALL), blocker / "run", log=lambda *a: None)
    assert blocker.read_text() == "a file where a folder should be"


def test_nonfinite_steps_can_be_skipped(tmp_path):
    from acl_cli.checkpoint import load_checkpoint, save_checkpoint

    run = tmp_path / "run"
    train(load_config(None, SMALL), run, log=lambda *a: None)
    state = load_checkpoint(run / "last.pt")
    state["model"]["classifier.bias"].fill_(float("inf"))
    save_checkpoint(state, run / "last.pt")
    lines = []
    train(load_config(None, SMALL + ["train.epochs=2", "train.on_nonfinite=skip"]), run, resume=True,
          log=lines.append)
    assert sum("update skipped" in line for line in lines) == 2  # both steps of epoch 2
    assert load_checkpoint(run / "last.pt")["progress"]["skipped"] == 2


def test_disk_full_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    from acl_cli import checkpoint as ckpt
    from acl_cli.errors import UserError

    run = tmp_path / "run"
    train(load_config(None, SMALL), run, log=lambda *a: None)
    before = (run / "last.pt").read_bytes()
    real_save = torch.save

    def full_disk(obj, f, *a, **k):
        f.write(b"partial bytes")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", full_disk)
    with pytest.raises(UserError, match="No space left on device; the previous one is untouched"):
        train(load_config(None, SMALL + ["train.epochs=2"]), run, resume=True, log=lambda *a: None)
    monkeypatch.setattr(ckpt.torch, "save", real_save)
    assert (run / "last.pt").read_bytes() == before
    assert not list(run.glob(".*.tmp"))
