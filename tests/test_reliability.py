"""What acl promises about a user's files and runs: --overwrite touches only acl runs, one writer per run,
atomic rewrites, a history a kill cannot lose, checkpoints that are good, resumes that do what they say."""
import csv
import shlex
import signal
import subprocess
import sys

import pytest
import torch

from acl_cli import training
from acl_cli.checkpoint import load_checkpoint
from acl_cli.config import load_config
from acl_cli.optim import build_optimizer, build_scheduler
from acl_cli.training import TrainingInterrupted, train
from acl_cli.errors import UserError
from acl_cli.models import create_model

SMALL = ["model.arch=resnet20", "model.csg={slice_shape: [16, 16, 3, 3], code_size: 72}", "data.name=digits",
         "data.val_split=0.2", "data.train_subset=64", "data.batch_size=32", "data.workers=0", "train.epochs=2",
         "train.progress=false"]


def small(*extra):
    return load_config(None, SMALL + list(extra))


def quiet(*args, **kwargs):
    pass


def _rows(run_dir):
    with open(run_dir / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k not in ("epoch_time", "eval_time", "img_s")} for r in csv.DictReader(f)]


def _same_weights(a, b):
    wa, wb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished two-epoch run, copied by the tests that change it."""
    run = tmp_path_factory.mktemp("finished") / "run"
    train(small(), run, log=quiet)
    return run


def _copy(run, tmp_path):
    import shutil
    return shutil.copytree(run, tmp_path / "copy")


# ---- --overwrite


def _config(tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text("model: {arch: resnet20}\n")
    return path


def test_overwrite_refuses_the_home_directory(tmp_path, monkeypatch, cli):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    sets = [a for s in SMALL for a in ("--set", s)]
    res = cli("train", "--config", _config(tmp_path), "--out", home, "--overwrite", *sets)
    assert res.exit_code == 2 and "it is the home directory" in res.stderr
    assert list(home.iterdir()) == []


def test_overwrite_with_bad_input_leaves_the_old_run_whole(finished, tmp_path):
    run = _copy(finished, tmp_path)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(UserError, match="fewer than one batch"):  # found while building the data, after config
        train(small("data.batch_size=5000"), run, overwrite=True, log=quiet)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_overwrite_removes_only_what_acl_wrote(finished, tmp_path):
    run = _copy(finished, tmp_path)
    (run / ".last.pt.k2x_9qzb.tmp").write_bytes(b"cut short")  # an atomic write a kill interrupted (mkstemp's name)
    train(small("train.epochs=1"), run, overwrite=True, log=quiet)
    assert sorted(p.name for p in run.iterdir()) == [".lock", "best.pt", "config.yaml", "final.json", "last.pt",
                                                     "metrics.csv", "params.json", "run.json", "tb"]
    assert [r["epoch"] for r in _rows(run)] == ["1"]


# ---- one writer


def test_a_second_writer_is_refused_and_a_killed_one_leaves_no_lock(finished, tmp_path, cli):
    run = _copy(finished, tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from acl_cli.rundir import RunLock; lock = RunLock(Path(sys.argv[1])).__enter__(); "
                               "print('locked', flush=True); time.sleep(120)", str(run)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        for args in (("--resume", run, "--set", "train.epochs=3"),
                     ("--config", _config(tmp_path), "--out", run, "--overwrite",
                      *[a for s in SMALL for a in ("--set", s)])):
            res = cli("train", *args)
            assert res.exit_code == 2, res.output
            assert f"{run} is in use by another acl process (pid {holder.pid})" in res.stderr
        assert [r["epoch"] for r in _rows(run)] == ["1", "2"]  # untouched
    finally:
        holder.send_signal(signal.SIGKILL)  # the kernel drops the lock with the process
        holder.wait()
    res = cli("train", "--resume", run, "--set", "train.epochs=3")
    assert res.exit_code == 0, res.output
    assert [r["epoch"] for r in _rows(run)] == ["1", "2", "3"]


# ---- the history


def test_a_failed_metrics_rewrite_leaves_the_old_file(finished, tmp_path, monkeypatch):
    run = _copy(finished, tmp_path)
    before = (run / "metrics.csv").read_bytes()

    def fail(*args, **kwargs):
        raise KeyboardInterrupt  # a kill in the middle of writing the rows

    monkeypatch.setattr(csv.DictWriter, "writerows", fail)
    with pytest.raises(KeyboardInterrupt):
        train(small("train.epochs=3"), run, resume=True, log=quiet)
    assert (run / "metrics.csv").read_bytes() == before


def test_a_lost_metrics_row_comes_back_from_the_checkpoint(finished, tmp_path):
    """A kill between an epoch's checkpoint and its metrics row: the row is in the checkpoint's history."""
    run = _copy(finished, tmp_path)
    rows = _rows(run)
    lines = (run / "metrics.csv").read_text().splitlines()
    (run / "metrics.csv").write_text("\n".join(lines[:2]) + "\n")  # header and epoch 1 only
    train(small("train.epochs=3"), run, resume=True, log=quiet)
    assert _rows(run)[:2] == rows and [r["epoch"] for r in _rows(run)] == ["1", "2", "3"]


def test_a_failed_evaluation_loses_no_training(tmp_path, monkeypatch):
    """The epoch's checkpoint is written before evaluating: resuming evaluates and goes on, bit-identically."""
    full = tmp_path / "full"
    train(small(), full, log=quiet)
    real, calls = training.evaluate, []

    def fail_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise UserError("evaluation failed")
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "evaluate", fail_once)
    parts = tmp_path / "parts"
    with pytest.raises(UserError, match="evaluation failed"):
        train(small(), parts, log=quiet)
    progress = load_checkpoint(parts / "last.pt")["progress"]
    assert progress["epoch"] == 2 and progress["pending"]["epoch"] == 2  # epoch 2 trained, not evaluated
    monkeypatch.setattr(training, "evaluate", real)
    train(small(), parts, resume=True, log=quiet)
    assert _rows(parts) == _rows(full)
    assert _same_weights(full / "last.pt", parts / "last.pt") and _same_weights(full / "best.pt", parts / "best.pt")


# ---- checkpoints are good


def test_diverging_weights_are_never_checkpointed(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(UserError) as e:
        train(small("optim.lr=1e30", "model.csg.init=scaled"), run, log=quiet)
    message = str(e.value)
    assert "no checkpoint was written" in message and ("not finite" in message or "loss is" in message)
    for name in ("last.pt", "best.pt"):
        if (run / name).exists():
            weights = load_checkpoint(run / name)["model"].values()
            assert all(torch.isfinite(t).all() for t in weights if t.is_floating_point())


def test_divergence_after_a_good_checkpoint_names_it(finished, tmp_path):
    run = _copy(finished, tmp_path)
    with pytest.raises(UserError) as e:
        train(small("train.epochs=3", "optim.lr=1e30"), run, resume=True, log=quiet)
    assert f"last good checkpoint: {run / 'last.pt'} (step 4)" in str(e.value)
    assert load_checkpoint(run / "last.pt")["progress"]["step"] == 4
    assert all(torch.isfinite(t).all() for t in load_checkpoint(run / "last.pt")["model"].values()
               if t.is_floating_point())


# ---- what a resume may change


def test_resume_with_a_new_lr_follows_the_new_schedule_exactly(finished, tmp_path):
    run = _copy(finished, tmp_path)
    train(small("train.epochs=3", "optim.lr=0.01"), run, resume=True, log=quiet)
    state = load_checkpoint(run / "last.pt")
    fresh = small("train.epochs=3", "optim.lr=0.01")  # the lr a fresh run of the new settings has at step 6
    opt = build_optimizer(create_model("resnet20"), fresh.optim)
    sched = build_scheduler(opt, fresh.schedule, 3, steps_per_epoch=2)
    for _ in range(6):
        opt.step()
        sched.step()
    assert state["optimizer"]["param_groups"][0]["lr"] == opt.param_groups[0]["lr"]
    assert "lr: 0.01" in (run / "config.yaml").read_text() and state["config"]["optim"]["lr"] == 0.01


def test_resume_refuses_different_training_data(finished, tmp_path):
    run = _copy(finished, tmp_path)
    with pytest.raises(UserError, match="the training data now has 96 images .* trained on 64"):
        train(small("train.epochs=3", "data.train_subset=96"), run, resume=True, log=quiet)


def test_resume_refuses_settings_it_cannot_honour(finished, cli):
    for key, value in (("data.batch_size", 8), ("optim.momentum", 0.5), ("model.csg.code_size", 64),
                       ("train.amp", "bf16"), ("train.seed", 3)):
        res = cli("train", "--resume", finished, "--set", f"{key}={value}", "--set", "train.epochs=3")
        assert res.exit_code == 2 and f"--resume cannot change {key}" in res.stderr, res.output


def test_the_printed_resume_command_works_in_a_shell(tmp_path):
    run = tmp_path / "my runs" / "r56 épreuve"
    with pytest.raises(TrainingInterrupted) as e:
        train(small(), run, stop_after_steps=1, log=quiet)
    command = str(e.value).split("Resume with: ")[1]
    assert shlex.split(command) == ["acl", "train", "--resume", str(run)]


def test_a_corrupt_training_image_in_a_worker_is_one_line_naming_it(tmp_path, cli):
    from PIL import Image

    for split, n in (("train", 8), ("val", 2)):
        for cls in "ab":
            (tmp_path / "imgs" / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (32, 32), (i * 20, 40, 0)).save(tmp_path / "imgs" / split / cls / f"{i}.jpg")
    bad = tmp_path / "imgs" / "train" / "b" / "3.jpg"
    bad.write_bytes(bad.read_bytes()[:200])  # the header survives: only decoding finds it
    res = cli("train", "--config", _config(tmp_path), "--out", tmp_path / "run", *[a for s in (
        "data.name=imagefolder", f"data.root={tmp_path / 'imgs'}", "data.val_split=0", "data.batch_size=4",
        "data.workers=2", "data.loader=torch", "model.num_classes=2", "train.progress=false") for a in ("--set", s)])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot read image {bad}: "), res.stderr
