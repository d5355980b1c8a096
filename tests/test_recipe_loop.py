"""Recipe parts in the training loop (issue 34): weight EMA, batch mixing's soft targets, gradient accumulation.
Small networks on the digits (a user factory: a network with BatchNorm, and one without batch statistics), a
few steps each, on the CPU; one two-process case through torchrun."""
import copy
import csv
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from acl_cli import distributed
from acl_cli.checkpoint import load_checkpoint
from acl_cli.config import absolute_paths, load_config
from acl_cli.data import build_mixing
from acl_cli.models import resolve_model_config
from acl_cli.training import Run, TrainingInterrupted, train

NETS = '''from torch import nn


def tiny_bn(num_classes=10):
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, num_classes))


def tiny_plain(num_classes=10):  # no batch statistics: a batch of 2B is two batches of B
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Linear(32, num_classes))
'''
ALLOW = ("recipe_nets",)
# 80 training images in batches of 16: 5 batches an epoch, so groups of 2 end with one cut short
BASE = ["model.arch=recipe_nets:tiny_bn", "model.csg=null", "data.name=digits", "data.val_split=0.2",
        "data.train_subset=80", "data.batch_size=16", "data.workers=0", "schedule.name=cosine",
        "schedule.warmup_epochs=0.5", "train.epochs=2", "train.progress=false", "train.log_every_steps=2"]


@pytest.fixture
def nets(tmp_path, monkeypatch):
    (tmp_path / "recipe_nets.py").write_text(NETS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")


def _cfg(*extra):
    return load_config(None, BASE + list(extra))


def quiet(*args, **kwargs):
    pass


def _run(cfg, run_dir):
    """A Run built as acl train builds it (nothing written), for driving its steps one by one."""
    cfg = copy.deepcopy(cfg)
    resolve_model_config(cfg.model)
    absolute_paths(cfg)
    run = Run(cfg, run_dir, False, False, distributed.SINGLE_PROCESS, torch.device("cpu"), quiet, ALLOW)
    run.setup.sampler.set_epoch(0, 0)
    run.train_model.train()
    return run


def _floats(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _rows(run_dir, drop=("epoch_time", "eval_time", "img_s")):
    with open(run_dir / "metrics.csv") as f:
        return [{k: v for k, v in r.items() if k not in drop} for r in csv.DictReader(f)]


# ---- weight EMA

@pytest.mark.parametrize("ema,accumulate", [("{decay: 0.9}", 1), ("{decay: 0.8, every_steps: 2, warmup_steps: 2}", 1),
                                            ("{decay: 0.9}", 2)])
def test_the_ema_is_the_hand_computed_average_of_the_weights_after_each_optimizer_step(nets, tmp_path, ema,
                                                                                       accumulate):
    cfg = _cfg(f"train.ema={ema}", f"train.accumulate_steps={accumulate}")
    e = cfg.train.ema
    run = _run(cfg, tmp_path / "run")
    model, averaged = run.setup.model, run.setup.ema.model
    hand, updates, optimizer_steps, batches = None, 0, 0, 5
    for batch, (x, y) in enumerate(run.setup.loader):
        before = _floats(averaged)
        run.step(x, y, 0)
        if not ((batch + 1) % accumulate == 0 or batch + 1 == batches):  # mid-group: nothing moves
            _assert_same(_floats(averaged), before)
            continue
        optimizer_steps += 1
        if optimizer_steps % e.every_steps == 0:
            weights = _floats(model)  # BatchNorm's running statistics included
            fresh = updates == 0 or optimizer_steps <= e.warmup_steps  # the first update, and the warm-up's, copy
            hand = weights if fresh else {k: e.decay * hand[k] + (1 - e.decay) * weights[k] for k in weights}
            updates += 1
        if hand is None:
            _assert_same(_floats(averaged), before)
        else:
            got = _floats(averaged)
            for k in hand:
                assert torch.allclose(got[k], hand[k], rtol=1e-5, atol=1e-6), (optimizer_steps, k)
    assert (batch + 1, optimizer_steps) == (batches, -(-batches // accumulate))
    assert run.setup.ema.updates == updates == optimizer_steps // e.every_steps
    assert not torch.allclose(_floats(averaged)["5.weight"], _floats(model)["5.weight"])  # an average, not a copy


def _stop_and_resume(cfg, run_dir, budgets):
    """Train ``cfg`` into ``run_dir`` stopping after each budget of steps; returns the steps each stop wrote."""
    stops = []
    for i, budget in enumerate(budgets):
        with pytest.raises(TrainingInterrupted):
            train(cfg, run_dir, resume=i > 0, stop_after_steps=budget, log=quiet, allow_imports=ALLOW)
        stops.append(load_checkpoint(run_dir / "last.pt")["progress"]["step"])
    train(cfg, run_dir, resume=True, log=quiet, allow_imports=ALLOW)
    return stops


def test_a_resumed_run_with_ema_mixing_and_accumulation_equals_an_uninterrupted_one(nets, tmp_path):
    cfg = _cfg("train.ema={decay: 0.9}", "train.accumulate_steps=2", "data.mixup=0.4", "data.cutmix=1.0",
               "train.checkpoint_every_steps=3")
    full, parts = tmp_path / "full", tmp_path / "parts"
    train(cfg, full, log=quiet, allow_imports=ALLOW)
    # budgets of 3, 1, 3 steps: each stop that falls inside a group of two waits for its end (steps 4 and 9;
    # step 5 ends epoch 1's cut-short group of one)
    assert _stop_and_resume(cfg, parts, [3, 1, 3]) == [4, 5, 9]
    a, b = load_checkpoint(full / "last.pt"), load_checkpoint(parts / "last.pt")
    _assert_same(a["model"], b["model"])
    _assert_same(a["ema"]["model"], b["ema"]["model"])
    assert a["ema"]["updates"] == b["ema"]["updates"] == 6  # 3 optimizer steps an epoch: 2 + 2 + 1 batches
    assert a["scheduler"] == b["scheduler"] and a["scheduler"]["last_epoch"] == 6
    for x, y in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        assert torch.equal(x["momentum_buffer"], y["momentum_buffer"])
    assert _rows(full) == _rows(parts) and "ema_val_top1" in _rows(full)[0]
    _assert_same(load_checkpoint(full / "best.pt")["model"], load_checkpoint(parts / "best.pt")["model"])


def test_best_pt_holds_the_ema_chosen_on_its_top1_and_acl_eval_gives_its_logged_top1(nets, tmp_path, cli):
    run = tmp_path / "run"
    final = train(_cfg("train.ema={decay: 0.7}", "train.epochs=3"), run, log=quiet, allow_imports=ALLOW)
    rows = _rows(run, drop=())
    ema_top1 = [float(r["ema_val_top1"]) for r in rows]
    best = ema_top1.index(max(ema_top1))  # the first epoch with the highest EMA top-1
    assert final["best_val_top1"] == max(ema_top1) and final["ema_val_top1"] == ema_top1[-1]
    best_pt, last_pt = load_checkpoint(run / "best.pt"), load_checkpoint(run / "last.pt")
    assert best_pt["weights"] == "ema" and "weights" not in last_pt and "ema" not in best_pt
    assert best_pt["progress"]["epoch"] == best + 1
    if best == len(rows) - 1:  # the last epoch's EMA is what last.pt keeps beside the weights
        _assert_same(best_pt["model"], last_pt["ema"]["model"])
    assert not all(torch.equal(v, last_pt["model"][k]) for k, v in last_pt["ema"]["model"].items())
    res = cli("eval", run / "best.pt", "--format", "json", "--allow-import", "recipe_nets")
    assert res.exit_code == 0, res.output
    evaluated = json.loads(res.output)
    assert evaluated["top1"] == pytest.approx(ema_top1[best])
    assert evaluated["loss"] == pytest.approx(float(rows[best]["ema_val_loss"]), rel=1e-5)
    assert evaluated["weights"] == "ema"  # eval says whose weights it scored
    table = cli("eval", run / "best.pt", "--allow-import", "recipe_nets").output
    assert "(the weights' EMA)" in table
    assert json.loads(cli("eval", run / "last.pt", "--format", "json", "--allow-import", "recipe_nets").output)[
        "weights"] == "model"


# ---- gradient accumulation

def test_two_accumulated_batches_of_b_step_as_one_batch_of_2b_with_the_schedule_at_the_same_place(nets, tmp_path):
    plain = ["model.arch=recipe_nets:tiny_plain", "data.train_subset=96", "optim.lr=0.2"]
    runs = {}
    for name, sets in (("accumulated", ["data.batch_size=16", "train.accumulate_steps=2"]),
                       ("large", ["data.batch_size=32"])):
        runs[name] = tmp_path / name
        train(_cfg(*plain, *sets), runs[name], log=quiet, allow_imports=ALLOW)
    a, b = load_checkpoint(runs["accumulated"] / "last.pt"), load_checkpoint(runs["large"] / "last.pt")
    for k in b["model"]:
        assert torch.allclose(a["model"][k], b["model"][k], rtol=1e-4, atol=1e-6), k
    initial = _run(_cfg(*plain, "data.batch_size=32"), tmp_path / "unused").setup.model.state_dict()
    assert not torch.allclose(a["model"]["4.weight"], initial["4.weight"], atol=1e-3)  # they moved: a real comparison
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 6  # 3 optimizer steps an epoch
    assert a["scheduler"]["_last_lr"] == pytest.approx(b["scheduler"]["_last_lr"])
    assert (a["progress"]["step"], b["progress"]["step"]) == (12, 6)  # steps count batches
    rows_a, rows_b = _rows(runs["accumulated"]), _rows(runs["large"])
    for ra, rb in zip(rows_a, rows_b, strict=True):
        assert float(ra["lr"]) == pytest.approx(float(rb["lr"]))
        assert (ra["train_top1"], ra["val_top1"]) == (rb["train_top1"], rb["val_top1"])
        for key in ("train_loss", "val_loss"):
            assert float(ra[key]) == pytest.approx(float(rb[key]), rel=1e-5)


# ---- batch mixing: soft targets

def test_a_mixed_batchs_loss_is_the_soft_target_cross_entropy_and_top1_counts_the_dominant_label(nets, tmp_path):
    cfg = _cfg("data.mixup=1.0", "model.arch=recipe_nets:tiny_plain")
    run = _run(cfg, tmp_path / "run")
    x, y = next(iter(run.setup.loader))
    mixed, targets = build_mixing(cfg.data, 10, cfg.train.seed)(x, y, 0)  # batch 0 of rank 0
    lam = targets[0, y[0]].item() if y[0] != y[-1] else 1 - targets[0, y[-1]].item()
    assert 0.1 < lam < 0.9 and (targets.max(1).values < 0.9).sum() >= 8  # soft: most images mix two labels
    logits = copy.deepcopy(run.setup.model).train()(mixed)
    by_hand = -(targets * F.log_softmax(logits, dim=1)).sum(1).mean()
    dominant_hits = (logits.argmax(1) == targets.argmax(1)).sum()
    run.step(x, y, 0)
    loss, hits = run.stats.buffer[0, :2].tolist()
    assert loss == pytest.approx(by_hand.item(), rel=1e-6)
    assert hits == dominant_hits.item()


def test_a_recipe_run_says_what_it_does_and_the_report_shows_its_recipe(nets, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from acl_cli.report import collect, format_rows

    run, lines = tmp_path / "run", []
    train(_cfg("train.ema={}", "data.mixup=0.2", "train.accumulate_steps=2", "train.epochs=1"), run,
          log=lines.append, allow_imports=ALLOW)
    text = "\n".join(lines)
    assert "batch mixing (mixup 0.2): the loss is on soft targets; train top-1 counts each mixed image's dominant " \
           "label" in text
    assert "one optimizer step per 2 batches (global batch 32), 3 per epoch" in text
    assert "weight EMA (decay 0.9998" in text and "best.pt holds the EMA's weights" in text
    epoch_line = next(line for line in lines if line.startswith("epoch   1/1"))
    assert "top1 (dominant label)" in epoch_line and "ema top1" in epoch_line
    assert list(_rows(run, drop=())[0])[-3:] == ["ema_val_loss", "ema_val_top1", "ema_val_top5"]
    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    assert {"ema_val/loss", "ema_val/top1", "ema_val/top5"} <= set(acc.Tags()["scalars"])
    row = collect(run)
    assert row["recipe"] == "ema 0.9998, mixup 0.2, accumulate 2"
    assert row["best_top1"] == round(float(_rows(run)[0]["ema_val_top1"]), 2)  # an EMA run: its average's (report: 2 decimals)
    header = format_rows([row], "markdown").splitlines()[0]
    assert "| recipe |" in header


# ---- two processes

DDP_SCRIPT = '''import sys
from pathlib import Path

import torch

import acl_cli.training as training
from acl_cli.config import load_config

out = Path(sys.argv[1])
finish = training.Run.finish


def finish_and_dump(self):
    torch.save({"model": self.setup.model.state_dict(), "ema": self.setup.ema.model.state_dict()},
               out / f"rank{self.env.rank}.pt")
    return finish(self)


training.Run.finish = finish_and_dump
training.train(load_config(None, sys.argv[2:]), out / "run", allow_imports=("recipe_nets",))
'''


@pytest.mark.slow
def test_two_processes_end_with_the_same_weights_and_the_same_ema(nets, tmp_path):
    (tmp_path / "ddp_recipe.py").write_text(DDP_SCRIPT)
    sets = [s for s in BASE if not s.startswith("data.")] + [
        "data.name=synthetic", "data.synthetic_size=160", "data.val_split=0", "data.batch_size=8", "data.workers=0",
        "train.ema={decay: 0.9}", "train.accumulate_steps=2"]  # 160 / 2 processes / 8: 10 batches, 5 groups
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    res = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", str(tmp_path / "ddp_recipe.py"),
                          str(tmp_path), *sets], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    _assert_same(rank0["model"], rank1["model"])
    _assert_same(rank0["ema"], rank1["ema"])
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    _assert_same(last["model"], rank0["model"])
    _assert_same(last["ema"]["model"], rank0["ema"])
    assert last["ema"]["updates"] == 10 and last["scheduler"]["last_epoch"] == 10  # 5 optimizer steps an epoch
    assert not torch.equal(rank0["ema"]["5.weight"], rank0["model"]["5.weight"])


def test_a_group_longer_than_an_epoch_says_the_batch_it_really_has(tmp_path, cli):
    res = cli("train", "--config", "quickstart", "--out", tmp_path / "r", "--set", "train.epochs=1", "--set",
              "train.accumulate_steps=1000", "--set", "data.train_subset=128", "--set", "train.progress=false")
    assert res.exit_code == 0, res.output
    assert ("one optimizer step per 1000 batches (an epoch has only 2 batches) (global batch 128), 1 per epoch"
            in res.output)


@pytest.mark.parametrize("ema", ["missing", "inf updates", "nan updates", "text updates", "wrong shapes", "nested"])
def test_a_last_pt_whose_ema_acl_did_not_write_is_one_line_and_nothing_changes(nets, tmp_path, ema):
    """An edited or sent last.pt of an EMA run: the resume refuses it in one line (exit 2 from the CLI), and
    last.pt, metrics.csv and best.pt are as they were."""
    from acl_cli.checkpoint import save_checkpoint
    from acl_cli.errors import UserError

    cfg = _cfg("train.ema={decay: 0.9}", "train.epochs=2")
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingInterrupted):
        train(cfg, run_dir, stop_after_steps=3, log=quiet, allow_imports=ALLOW)
    saved = load_checkpoint(run_dir / "last.pt")
    saved.pop("format"), saved.pop("version")
    good = saved["ema"]
    saved["ema"] = {"missing": None, "inf updates": {**good, "updates": float("inf")},
                    "nan updates": {**good, "updates": float("nan")}, "text updates": {**good, "updates": "many"},
                    "wrong shapes": {"model": {k: v.reshape(-1)[:1] for k, v in good["model"].items()}, "updates": 3},
                    "nested": {"model": {"a": {"b": {"c": 1}}}, "updates": 3}}[ema]
    if ema == "missing":
        del saved["ema"]
    save_checkpoint(saved, run_dir / "last.pt")
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    with pytest.raises(UserError) as refused:
        train(cfg, run_dir, resume=True, log=quiet, allow_imports=ALLOW)
    assert f"{run_dir / 'last.pt'} cannot be resumed" in str(refused.value) and "\n" not in str(refused.value)
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before


def test_eval_says_model_weights_whatever_else_a_sent_checkpoint_claims(nets, tmp_path, cli):
    from acl_cli.checkpoint import save_checkpoint

    run_dir = tmp_path / "run"
    train(_cfg("train.epochs=1"), run_dir, log=quiet, allow_imports=ALLOW)
    for claim in ("\x1b[31mema", {"nested": ["ema"]}, "EMA"):
        saved = load_checkpoint(run_dir / "best.pt")
        saved.pop("format"), saved.pop("version")
        save_checkpoint({**saved, "weights": claim}, tmp_path / "sent.pt")
        res = cli("eval", tmp_path / "sent.pt", "--format", "json", "--allow-import", "recipe_nets")
        assert res.exit_code == 0, res.output
        assert json.loads(res.output)["weights"] == "model"
