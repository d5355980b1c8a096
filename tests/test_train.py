"""acl train / eval end to end on small real data: exact resume, run directories, logs, checkpoints."""
import csv
import json
import os

import pytest
import torch

from acl_cli.checkpoint import load_checkpoint
from acl_cli.config import load_config
from acl_cli.optim import build_optimizer, build_scheduler, param_groups
from acl_cli.training import TrainingInterrupted, train
from acl_cli.models import create_model
from schedules import lr_per_step

SMALL = ["model.arch=resnet20", "model.csg={slice_shape: [16, 16, 3, 3], code_size: 72}",
         "data.name=digits", "data.val_split=0.2", "data.train_subset=192", "data.batch_size=32",
         "data.workers=0", "schedule.name=cosine", "schedule.warmup_epochs=0.5", "train.epochs=2",
         "train.progress=false", "train.log_every_steps=2"]


def small(*extra):
    return load_config(None, SMALL + list(extra))


def quiet(*args, **kwargs):
    pass


def _weights(run_dir, name="last.pt"):
    return load_checkpoint(run_dir / name)["model"]


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _rows(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return [{k: v for k, v in r.items() if k not in ("epoch_time", "eval_time", "img_s")} for r in csv.DictReader(f)]


@pytest.mark.parametrize("workers", [0, 2])
def test_resumed_run_is_bit_identical(tmp_path, workers):
    cfg = small(f"data.workers={workers}", "train.checkpoint_every_steps=2")
    full = tmp_path / "full"
    train(cfg, full, log=quiet)
    parts = tmp_path / "parts"
    # stop mid-epoch (step 3 of 6), at an epoch boundary (step 6), mid-epoch again (step 7), then finish
    with pytest.raises(TrainingInterrupted):
        train(cfg, parts, stop_after_steps=3, log=quiet)
    assert load_checkpoint(parts / "last.pt")["progress"]["step"] == 3
    for budget in (3, 1):
        with pytest.raises(TrainingInterrupted):
            train(cfg, parts, resume=True, stop_after_steps=budget, log=quiet)
    assert load_checkpoint(parts / "last.pt")["progress"]["step"] == 7
    train(cfg, parts, resume=True, log=quiet)
    _assert_same(_weights(full), _weights(parts))
    full_state, parts_state = load_checkpoint(full / "last.pt"), load_checkpoint(parts / "last.pt")
    assert full_state["scheduler"] == parts_state["scheduler"]
    for a, b in zip(full_state["optimizer"]["state"].values(), parts_state["optimizer"]["state"].values(),
                    strict=True):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])
    assert _rows(full) == _rows(parts)
    _assert_same(_weights(full, "best.pt"), _weights(parts, "best.pt"))


def test_run_directory_contents_and_eval(tmp_path, cli):
    run = tmp_path / "run"
    final = train(small(), run, log=quiet)
    assert {"config.yaml", "params.json", "metrics.csv", "last.pt", "best.pt", "tb"} <= {p.name for p in run.iterdir()}
    assert json.loads((run / "params.json").read_text())["total"] == 176_698
    resolved = small()  # as the run records it: num_classes from the arch, the data root made absolute
    resolved.model.num_classes, resolved.data.root = 10, os.path.abspath("data")
    assert load_config(run / "config.yaml").to_dict() == resolved.to_dict()
    state = torch.load(run / "last.pt", weights_only=True)  # plain data only
    assert state["config"]["model"]["csg"]["code_size"] == 72 and state["progress"]["epoch"] == 2
    best = torch.load(run / "best.pt", weights_only=True)  # lean: what evaluation and export need, no optimizer
    assert {"optimizer", "scheduler", "rng"} & set(best) == set() and {"optimizer", "rng"} <= set(state)
    assert best["classes"] == state["classes"] == [str(c) for c in range(10)]
    res = cli("eval", run, "--format", "json")
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.output)
    assert set(metrics) >= {"top1", "top5", "loss", "samples", "params"}
    assert metrics["samples"] == 359 and metrics["params"] == 176_698
    assert metrics["top1"] == pytest.approx(final["best_val_top1"])
    train_split = json.loads(cli("eval", run / "last.pt", "--split", "train", "--format", "json").output)
    assert train_split["samples"] == 192
    res = cli("eval", run, "--split", "test")
    assert res.exit_code == 2 and "no test split" in res.stderr


def test_tensorboard_scalars_and_text(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    train(small("train.epochs=1", "optim.grad_clip=1.0", "train.label_smoothing=0.1"), run, log=quiet)
    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/top1", "train/top5", "val/loss", "val/top1", "val/top5", "lr", "perf/img_s",
            "perf/epoch_time_s", "perf/eval_time_s", "hparam/params", "hparam/best_val_top1"} <= tags
    assert [e.step for e in acc.Scalars("lr")] == [2, 4, 6, 6]  # every 2 of 6 steps, and at the epoch's end
    assert {"params/text_summary", "config/text_summary"} <= set(acc.Tags()["tensors"])


def test_cli_refuses_existing_run_dir_and_overwrites_on_request(tmp_path, cli):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("base: base.yaml\ntrain:\n  epochs: 1\n")
    (tmp_path / "base.yaml").write_text("\n".join(f"# {s}" for s in SMALL) + "\n")
    sets = [a for s in SMALL for a in ("--set", s)]
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("keep me")
    res = cli("train", "--config", cfg, "--out", run, *sets, "--set", "train.epochs=1")
    assert res.exit_code == 2 and "is not empty and is not an acl run (it holds notes.txt)" in res.stderr
    assert "--overwrite" not in res.stderr  # never advised for a folder acl did not make
    assert (run / "notes.txt").read_text() == "keep me" and not (run / "last.pt").exists()
    res = cli("train", "--config", cfg, "--out", run, "--overwrite", *sets, "--set", "train.epochs=1")
    assert res.exit_code == 2 and "not an acl run directory (acl did not make it; it holds notes.txt)" in res.stderr
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]  # nothing created, nothing removed
    (run / "notes.txt").unlink()
    res = cli("train", "--config", cfg, "--out", run, *sets, "--set", "train.epochs=1")
    assert res.exit_code == 0, res.output
    first = (run / "best.pt").read_bytes()
    res = cli("train", "--config", cfg, "--out", run, "--overwrite", *sets, "--set", "train.epochs=1",
              "--set", "train.seed=1")
    assert res.exit_code == 0, res.output
    assert (run / "best.pt").read_bytes() != first and "epoch   1/1" in res.output
    res = cli("train", "--config", cfg, "--out", run, *sets, "--set", "train.epochs=1")  # now an acl run
    assert res.exit_code == 2 and "already exists; it finished; to train it longer, --resume" in res.stderr
    # resume a finished run with a larger budget: it continues from epoch 2
    res = cli("train", "--resume", run, "--set", "train.epochs=2")
    assert res.exit_code == 0, res.output
    assert "resuming" in res.output and [r["epoch"] for r in _rows(run)] == ["1", "2"]


def test_schedules_and_optimizers():
    model = create_model("resnet20", csg={"slice_shape": [16, 16, 3, 3], "code_size": 72})
    cfg = load_config(None, ["schedule.milestones=[2, 3]", "optim.lr=1.0"])
    lrs = lr_per_step(model, cfg, epochs=4, steps_per_epoch=10)
    assert lrs[19] == 1.0 and lrs[20] == pytest.approx(0.1) and lrs[30] == pytest.approx(0.01)
    cfg = load_config(None, ["schedule.name=cosine", "schedule.warmup_epochs=1", "optim.lr=1.0"])
    lrs = lr_per_step(model, cfg, epochs=4, steps_per_epoch=10)
    assert lrs[0] == pytest.approx(0.1) and lrs[10] == pytest.approx(1.0) and lrs[-1] < 0.01
    assert all(a <= b + 1e-12 for a, b in zip(lrs[:10], lrs[1:11]))
    cfg = load_config(None, ["schedule.name=onecycle", "optim.name=adamw", "optim.lr=0.01"])
    opt = build_optimizer(model, cfg.optim)
    assert isinstance(opt, torch.optim.AdamW)
    build_scheduler(opt, cfg.schedule, epochs=2, steps_per_epoch=5)


def test_weight_decay_exclusions():
    model = create_model("resnet20", csg={"slice_shape": [16, 16, 3, 3], "code_size": 72})
    cfg = load_config(None, ["optim.decay_csg=false", "optim.decay_norm=false"])
    decay, no_decay = param_groups(model, cfg.optim)
    assert no_decay["weight_decay"] == 0.0
    no_ids = {id(p) for p in no_decay["params"]}
    assert id(model.csg.weight) in no_ids and id(model.stage1[0].conv_a.codes) in no_ids
    assert id(model.bn1.weight) in no_ids and id(model.classifier.bias) in no_ids
    assert {id(p) for p in decay["params"]} == {id(model.conv1.weight), id(model.classifier.weight)}
    everything = param_groups(model, load_config().optim)
    assert len(everything) == 1 and len(everything[0]["params"]) == len(list(model.parameters()))


def test_codes_and_generator_train_at_their_own_lr_and_weight_decay():
    model = create_model("resnet20", csg={"slice_shape": [16, 16, 3, 3], "code_size": 72})
    csg_ids = {id(model.csg.weight)} | {id(m.codes) for m in model.modules() if hasattr(m, "codes")}
    cfg = load_config(None, ["optim.csg_lr_scale=4", "optim.csg_weight_decay=2e-3", "optim.decay_norm=false",
                             "optim.lr=0.1", "schedule.milestones=[1]"])
    opt = build_optimizer(model, cfg.optim)
    ordinary, norms, csg = opt.param_groups
    assert {id(p) for p in csg["params"]} == csg_ids
    assert (csg["lr"], csg["weight_decay"], ordinary["lr"], ordinary["weight_decay"]) == (0.4, 2e-3, 0.1, 5e-4)
    assert norms["weight_decay"] == 0.0 and id(model.bn1.weight) in {id(p) for p in norms["params"]}
    sched = build_scheduler(opt, cfg.schedule, epochs=2, steps_per_epoch=3)
    for _ in range(4):  # past the milestone, both decayed: the ratio is kept
        opt.step()
        sched.step()
    assert csg["lr"] == pytest.approx(0.04) and ordinary["lr"] == pytest.approx(0.01)
    # one plain SGD step moves a code 4x as far as the recipe's, the stem's the same
    steps = {}
    for scale in (1, 4):
        torch.manual_seed(0)
        net = create_model("resnet20", csg={"slice_shape": [16, 16, 3, 3], "code_size": 72})
        c = load_config(None, [f"optim.csg_lr_scale={scale}", "optim.momentum=0", "optim.weight_decay=0"])
        step_opt = build_optimizer(net, c.optim)
        before = (net.stage1[0].conv_a.codes.detach().clone(), net.conv1.weight.detach().clone())
        net(torch.randn(4, 3, 32, 32)).square().mean().backward()
        step_opt.step()
        steps[scale] = [(p.detach() - b).norm().item() for p, b in zip((net.stage1[0].conv_a.codes, net.conv1.weight), before)]
    assert steps[4][0] == pytest.approx(4 * steps[1][0], rel=1e-4) and steps[4][1] == pytest.approx(steps[1][1])
    # the recipe's default keeps the authors' single group (and old checkpoints' optimizer states)
    assert len(param_groups(model, load_config().optim)) == 1


@pytest.mark.parametrize("bad, message", [
    ("optim.csg_lr_scale=0", "optim.csg_lr_scale: must be > 0"),
    ("optim.csg_weight_decay=-1", "optim.csg_weight_decay: must be >= 0"),
    ("optim.decay_csg=false,optim.csg_weight_decay=1e-3", "csg_weight_decay 0.001 with decay_csg false"),
])
def test_bad_csg_optimizer_settings_are_refused(bad, message):
    from acl_cli.config import ConfigError
    with pytest.raises(ConfigError, match=message):
        load_config(None, bad.split(","))


def test_a_resume_with_a_new_lr_keeps_the_codes_multiple(tmp_path):
    run = tmp_path / "scaled"
    train(small("train.epochs=1", "optim.csg_lr_scale=3"), run, log=quiet)
    train(small("train.epochs=2", "optim.csg_lr_scale=3", "optim.lr=0.02"), run, resume=True, log=quiet)
    groups = load_checkpoint(run / "last.pt")["optimizer"]["param_groups"]
    assert groups[-1]["lr"] == pytest.approx(3 * groups[0]["lr"]) and groups[-1]["lr_scale"] == 3
    assert groups[0]["initial_lr"] == 0.02


def test_loss_that_is_not_finite_stops_naming_the_step(tmp_path):
    from acl_cli.checkpoint import save_checkpoint
    from acl_cli.errors import UserError

    run = tmp_path / "nan"
    train(small("train.epochs=1"), run, log=quiet)
    state = load_checkpoint(run / "last.pt")
    state["model"]["classifier.weight"].fill_(float("nan"))
    save_checkpoint(state, run / "last.pt")
    before = (run / "last.pt").read_bytes()
    with pytest.raises(UserError, match=r"loss is nan at step 7 \(epoch 2\)"):
        train(small("train.epochs=2"), run, resume=True, log=quiet)
    assert (run / "last.pt").read_bytes() == before
