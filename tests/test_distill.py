"""Distillation (issue 25): the loss uses the teacher, the teacher never enters the student's checkpoints, a
resume continues with the same teacher or refuses another by name, bad teachers are one line before anything
is written, and report, bench and TensorBoard say what was distilled."""
import fcntl
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from acl_cli.checkpoint import load_checkpoint
from acl_cli.config import load_config
from acl_cli.data import load_digits_images
from acl_cli.distill import distillation_loss, weights_sha256
from acl_cli.errors import UserError
from acl_cli.evaluate import load_model
from acl_cli.models import create_model
from acl_cli.training import TrainingInterrupted, train

DIGITS = ["data.name=digits", "data.val_split=0.2", "data.workers=0", "data.batch_size=64", "train.progress=false",
          "schedule.name=cosine", "train.log_every_steps=5"]
STUDENT = ["model.csg={slice_shape: [16, 16, 3, 3], code_size: 72}"]


def quiet(*args, **kwargs):
    pass


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """An original ResNet-20 trained on the real digits: about 95 % on its held-out fifth after 3 epochs."""
    run = tmp_path_factory.mktemp("teacher") / "teacher"
    final = train(load_config(None, DIGITS + ["model.arch=resnet20", "train.epochs=3"]), run, log=quiet)
    assert final["best_val_top1"] > 80
    return run


def _digit_folders(root, shift):
    """The digits as an image folder whose every label is wrong by ``shift`` (an 8 is filed under 9)."""
    digits = load_digits_images()
    for i, (image, label) in enumerate(zip(digits.images, digits.targets)):
        folder = root / "train" / str((label + shift) % 10)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
    return root


def _scalars(tb_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tb_dir))
    events.Reload()
    return {tag: [(s.step, s.value) for s in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_a_student_on_wrong_labels_learns_the_teachers_right_predictions(teacher, tmp_path, cli):
    wrong = _digit_folders(tmp_path / "wrong", shift=1)
    student = tmp_path / "student"
    r = cli("train", "--config", "quickstart", "--out", student, "--set", "data.name=imagefolder",
            "--set", f"data.root={wrong}", "--set", "data.preset=digits", "--set", "data.loader=device",
            "--set", "train.epochs=3", "--set", "train.progress=false", "--set", f"distill.teacher={teacher}",
            "--set", "distill.alpha=1")
    assert r.exit_code == 0, r.output
    assert f"distilling from {teacher} (resnet20) (alpha 1, temperature 4" in r.output
    # on the labels it was given it is wrong (every one is); on the true labels it is right, as its teacher
    own = cli("eval", student / "last.pt", "--format", "json")
    true = cli("eval", student / "last.pt", "--set", "data.name=digits", "--set", "data.preset=auto", "--format", "json")
    assert json.loads(own.output)["top1"] < 20
    assert json.loads(true.output)["top1"] > 60, true.output
    # the two terms of the loss apart in TensorBoard; at alpha 1 the loss is the teacher's term
    scalars = _scalars(student / "tb")
    assert {"train/loss_labels", "train/loss_teacher", "train/loss_teacher_running"} <= scalars.keys()
    assert [v for _, v in scalars["train/loss"]] == pytest.approx([v for _, v in scalars["train/loss_teacher"]],
                                                                  rel=1e-5)
    # the student's checkpoints hold the student alone; they record which teacher it learned from
    state = load_checkpoint(student / "last.pt")
    assert state["model"].keys() == create_model("resnet20", 10, state["config"]["model"]["csg"]).state_dict().keys()
    teacher_model, _, _ = load_model(teacher / "best.pt")
    assert state["progress"]["teacher"] == {"source": f"{teacher} (resnet20)", "sha256": weights_sha256(teacher_model)}
    report = cli("report", teacher, student, "--format", "csv")
    rows = {line.split(",")[0]: line for line in report.output.splitlines()[1:]}
    assert "from teacher (alpha 1, T 4)" in rows["student"] and ",-," in rows["teacher"]


def test_the_loss_is_the_usual_mix_of_labels_and_softened_teacher():
    torch.manual_seed(0)
    logits, teacher_logits, y = torch.randn(8, 5), torch.randn(8, 5), torch.randint(0, 5, (8,))
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    loss, labels, taught = distillation_loss(logits, teacher_logits, y, criterion, alpha=0.7, temperature=3.0)
    p_teacher = torch.softmax(teacher_logits / 3, 1)
    kl = (p_teacher * (p_teacher.log() - torch.log_softmax(logits / 3, 1))).sum(1).mean()
    assert labels == pytest.approx(criterion(logits, y).item())  # label smoothing applies to the label term
    assert taught == pytest.approx(9 * kl.item(), rel=1e-5)
    assert loss == pytest.approx(0.3 * labels.item() + 0.7 * 9 * kl.item(), rel=1e-5)


SMALL = DIGITS + STUDENT + ["data.train_subset=192", "data.batch_size=32", "train.epochs=2",
                            "train.checkpoint_every_steps=2"]


def test_a_resumed_distillation_equals_an_uninterrupted_one_and_keeps_its_teacher(teacher, tmp_path):
    cfg = load_config(None, SMALL + [f"distill.teacher={teacher}"])
    train(cfg, tmp_path / "full", log=quiet)
    parts = tmp_path / "parts"
    with pytest.raises(TrainingInterrupted):
        train(cfg, parts, stop_after_steps=3, log=quiet)
    moved = tmp_path / "moved_teacher"  # the same teacher elsewhere is the same teacher
    shutil.copytree(teacher, moved)
    cfg_moved = load_config(None, SMALL + [f"distill.teacher={moved}"])
    train(cfg_moved, parts, resume=True, log=quiet)
    full, resumed = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(parts / "last.pt")
    for key in full["model"]:
        assert torch.equal(full["model"][key], resumed["model"][key]), key
    # another teacher (other weights) is refused by name, before anything is written
    other = tmp_path / "other"
    train(load_config(None, DIGITS + ["model.arch=resnet20", "train.epochs=1", "data.train_subset=64"]), other,
          log=quiet)
    cfg.train.epochs = 3
    cfg.distill.teacher = str(other)
    before = (parts / "metrics.csv").read_text()
    with pytest.raises(UserError, match=rf"{other} \(resnet20\) is not the teacher .* was distilled from "
                                        rf"\({moved} \(resnet20\)"):
        train(cfg, parts, resume=True, log=quiet)
    assert (parts / "metrics.csv").read_text() == before


def test_a_teacher_given_by_arch_and_a_state_dict(teacher, tmp_path, cli):
    weights = tmp_path / "resnet20.pth"
    torch.save(load_checkpoint(teacher / "best.pt")["model"], weights)
    r = cli("train", "--config", "quickstart", "--out", tmp_path / "s", *sum((["--set", s] for s in SMALL), []),
            "--set", "train.epochs=1", "--set", "distill.arch=resnet20", "--set", f"distill.pretrained={weights}")
    assert r.exit_code == 0, r.output
    assert f"distilling from resnet20 with {weights} (alpha 0.9, temperature 4" in r.output


def _image_folder(root, classes, side):
    for c in classes:
        (root / "train" / c).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (side, side), (i * 40, 10, 200)).save(root / "train" / c / f"{i}.png")
    return root


def test_bad_teachers_are_one_line_and_write_nothing(teacher, tmp_path, cli):
    def refused(*settings):
        out = tmp_path / "never"
        r = cli("train", "--config", "quickstart", "--out", out, "--set", "train.epochs=1", "--set", "data.batch_size=8",
                *sum((["--set", s] for s in settings), []))
        assert r.exit_code == 2, r.output
        assert not out.exists()
        assert len(r.output.strip().splitlines()) <= 2 and "Traceback" not in r.output  # "config: ..." and the error
        return r.output.strip().splitlines()[-1]

    assert "does not exist" in refused(f"distill.teacher={tmp_path / 'nowhere'}")
    assert "no teacher" in refused("distill.alpha=0.5")
    assert "alpha: must be in [0, 1]" in refused(f"distill.teacher={teacher}", "distill.alpha=2")
    letters = _image_folder(tmp_path / "letters", [chr(97 + i) for i in range(10)], 32)
    assert "class 0 = '0'" in refused(f"distill.teacher={teacher}", "data.name=imagefolder", f"data.root={letters}",
                                      "data.preset=digits", "data.val_split=0.25")
    small = _image_folder(tmp_path / "small", [str(i) for i in range(10)], 16)
    assert "trained on 3x32x32 images; this data gives 3x16x16" in refused(
        f"distill.teacher={teacher}", "data.name=imagefolder", f"data.root={small}", "data.preset=none",
        "data.val_split=0.25")
    fewer = tmp_path / "r20_3.pth"  # a teacher for 3 classes
    torch.save(create_model("resnet20", 3).state_dict(), fewer)
    assert "does not fit" in refused("distill.arch=resnet20", f"distill.pretrained={fewer}")
    # a teacher still being trained: its run holds the lock
    with open(teacher / ".lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert "is being trained by a running acl process" in refused(f"distill.teacher={teacher}")


def test_bench_reports_what_the_teacher_costs(teacher, cli):
    r = cli("bench", "--config", "quickstart", "--set", f"distill.teacher={teacher}", "--device", "cpu",
            "--steps", "1", "--repeats", "1", "--batch-size", "8", "--format", "json")
    assert r.exit_code == 0, r.output
    result = json.loads(r.output)
    assert result["teacher"]["forward_ms"] > 0
    assert result["teacher"]["share_of_csg_step"] == pytest.approx(
        result["teacher"]["forward_ms"] / result["csg"]["train_step_ms"])



def _tiny_teacher(path):
    train(load_config(None, DIGITS + ["model.arch=resnet20", "train.epochs=1", "data.train_subset=64",
                                      "data.batch_size=32"]), path, log=quiet)
    return path


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA"))])
def test_distillation_with_the_speed_options_keeps_checkpoints_plain(tmp_path, device):
    """The teacher follows the student: device, autocast, channels_last, the device loader, compile on CUDA."""
    extra = ["train.amp=bf16", "train.channels_last=true", "data.loader=device", f"train.device={device}"]
    if device == "cuda":
        extra.append("train.compile=true")
    teacher = _tiny_teacher(tmp_path / "teacher")
    run = tmp_path / "student"
    final = train(load_config(None, SMALL + extra + ["train.epochs=1", f"distill.teacher={teacher}"]), run, log=quiet)
    assert final["val_loss"] == final["val_loss"]  # finite
    state = load_checkpoint(run / "last.pt")
    assert state["model"].keys() == create_model("resnet20", 10, state["config"]["model"]["csg"]).state_dict().keys()
    assert all(t.device.type == "cpu" for t in state["model"].values())


@pytest.mark.slow
def test_distillation_under_torchrun(tmp_path):
    """Two processes, each with its own teacher: rank 0 logs the teacher once, the run resumes with it."""
    import subprocess
    import sys

    teacher = _tiny_teacher(tmp_path / "teacher")
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    sets = [a for s in SMALL + ["train.epochs=1", f"distill.teacher={teacher}"] for a in ("--set", s)]
    run = tmp_path / "ddp"

    def torchrun_acl(*args):
        return subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "acl_cli", *map(str, args)],
                              capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})

    res = torchrun_acl("train", "--config", "quickstart", "--out", run, *sets)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.count("distilling from") == 1 and "x 2 processes" in res.stdout
    assert "train/loss_teacher" in _scalars(run / "tb")
    res = torchrun_acl("train", "--resume", run, "--set", "train.epochs=2")
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads((run / "final.json").read_text())["epochs"] == 2
    assert load_checkpoint(run / "last.pt")["progress"]["teacher"]["source"] == f"{teacher} (resnet20)"
