"""A run's state, and the one place it is written to a checkpoint and read back from one.

:class:`RunState` is where the run is and what it has recorded (a checkpoint's ``progress``, one key per
field, named as the checkpoint format names them). :class:`RunCheckpoints` writes ``last.pt``/``best.pt``
from it and the setup's model, optimizer, schedule and gradient scaler, and on ``--resume`` puts all of them
back as they were, after checking that the resume continues the same run (data, processes, teacher).
Something new to carry across a resume goes here alone: a number or a record as a field of RunState (saved
and restored with no more code), an object with a ``state_dict`` (the weight EMA, say) in
:meth:`RunCheckpoints.write` and :meth:`RunCheckpoints._restore`, side by side.
"""
from __future__ import annotations

import copy
import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from . import rundir
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import build_config
from .data import check_classes
from .distill import check_teacher_record
from .errors import UserError, one_line
from .models.build import load_weights
from .records import read_history
from .run_setup import RunSetup


@dataclass(kw_only=True)
class RunState:
    """Where the run is and what it has recorded; every field is saved in each checkpoint. A field added
    later keeps its default when a checkpoint from before it is resumed."""

    epoch: int = 0  # epochs trained (an epoch trained but not yet evaluated included: see pending)
    batch: int = 0  # steps taken in the current epoch
    step: int = 0  # steps taken in all
    best_top1: float = -1.0
    wall: float = 0.0  # seconds of training and evaluation, over every session
    epoch_sums: list[float] = field(default_factory=lambda: [0.0, 0, 0, 0])  # loss sum, top-1, images, top-5 of
    # the epoch so far (this process); older checkpoints have no top-5
    history: list[dict[str, Any]] = field(default_factory=list)  # one metrics row per finished epoch: metrics.csv
    pending: dict[str, Any] | None = None  # the row of an epoch trained but not yet evaluated
    lr: float | None = None  # the rate of the last step taken (None: a checkpoint from before it was kept)
    train_images: int  # the training split, in images and steps: a resume needs the same
    steps_per_epoch: int
    train_files: str | None  # which images, with which labels (data.sample_fingerprint)
    processes: int  # another number is another global batch: another run
    teacher: dict[str, str] | None  # the distillation teacher's source and weights' sha256
    distill_sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0])  # the objective's terms (summed
    # over images) and the images, this epoch
    epoch_time: float = 0.0  # seconds this epoch trained in earlier sessions (a resume mid-epoch)
    skipped: int = 0  # steps whose update train.on_nonfinite: skip dropped; saved once there is one
    other_keys: dict[str, Any] = field(default_factory=dict)  # a checkpoint's keys this version does not know:
    # saved again as they were

    def to_checkpoint(self) -> dict[str, Any]:
        """The checkpoint's ``progress``: a copy, so the run going on does not change what was saved."""
        progress = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "other_keys"}
        if not self.skipped:
            del progress["skipped"]
        return copy.deepcopy({**progress, **self.other_keys})

    def update_from_checkpoint(self, progress: dict[str, Any]) -> None:
        """A checkpoint's ``progress`` over this state: what it lacks (it is older) keeps its value here."""
        known = {f.name for f in dataclasses.fields(self)} - {"other_keys"}
        for key, value in progress.items():
            if key in known:
                setattr(self, key, value)
            else:
                self.other_keys[key] = value


@dataclass(frozen=True)
class Resumed:
    """What a resume found: the checkpoint it read (changed since: the take-over refuses) and whether the
    settings differ from the run's (TensorBoard then shows the new config)."""

    path: Path
    mtime_ns: int
    settings_changed: bool


def all_finite(model: nn.Module) -> bool:
    tensors = [t for t in model.state_dict().values() if t.is_floating_point()]
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()) if tensors else True


class RunCheckpoints:
    """Writes the run's checkpoints and resumes from ``last.pt``; ``last_good`` names the newest one written
    or resumed (a divergence says where to go back to)."""

    def __init__(self, setup: RunSetup):
        self.setup = setup
        self.last_good = "no checkpoint was written"

    def write(self, state: RunState, name: str, lean: bool = False) -> None:
        """Write ``name`` from the current state; never from non-finite weights. A ``lean`` checkpoint
        (best.pt: for evaluation and export) leaves out what only a resume needs: optimizer, schedule, RNG; with
        a weight EMA its ``model`` is the EMA's weights (``weights: ema`` says so), which acl eval and export
        read as any model's, and ``last.pt`` keeps the EMA beside the weights (``ema``)."""
        setup, step, ema = self.setup, state.step, self.setup.ema
        models = [setup.model] + ([] if ema is None else [ema.model])
        if not all(all_finite(m) for m in models):  # checked on every process: the weights are the same everywhere
            raise UserError(f"the weights are not finite after step {step} (epoch "
                            f"{(step - 1) // setup.steps_per_epoch + 1}); {self.last_good}; lower optim.lr")
        if setup.env.is_main:
            weights = ema.model if lean and ema is not None else setup.model
            saved = {"config": setup.cfg.to_dict(), "model": weights.state_dict(), "classes": setup.splits.classes,
                     "input_shape": setup.input_shape, "progress": state.to_checkpoint(), "params": setup.report.total}
            if ema is not None:
                saved.update({"weights": "ema"} if lean else {"ema": ema.state_dict()})
            if not lean:
                scaler = setup.scaler.state_dict() if setup.scaler.is_enabled() else None
                saved.update(optimizer=setup.optimizer.state_dict(), scheduler=setup.scheduler.state_dict(),
                             scaler=scaler, rng=rng_state())
            save_checkpoint(saved, setup.run_dir / name)
        if not lean:
            self.last_good = f"last good checkpoint: {setup.run_dir / 'last.pt'} (step {step})"

    def restore(self, state: RunState, log: Callable[[str], None]) -> Resumed:
        """Load ``last.pt`` into the freshly built setup and ``state``: weights, optimizer, schedule, gradient
        scaler, weight EMA, RNG and progress. A file acl did not write as it is (edited, or sent) is one line,
        and nothing is trained or written."""
        path = self.setup.run_dir / "last.pt"
        mtime_ns = path.stat().st_mtime_ns
        saved = load_checkpoint(path)
        try:
            settings_changed = self._restore(saved, state, path, log)
        except UserError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError, OverflowError) as e:
            raise UserError(f"{path} cannot be resumed: its training state is incomplete or not acl's "
                            f"({type(e).__name__}: {one_line(e, 120)})") from None
        self.last_good = f"last good checkpoint: {path} (step {state.step})"
        return Resumed(path, mtime_ns, settings_changed)

    def _restore(self, saved: dict[str, Any], state: RunState, path: Path, log: Callable[[str], None]) -> bool:
        """Returns whether the settings changed since the checkpoint."""
        setup = self.setup
        load_weights(setup.model, saved["model"], str(path))
        setup.optimizer.load_state_dict(saved["optimizer"])
        if saved.get("scaler"):
            setup.scaler.load_state_dict(saved["scaler"])
        if setup.ema is not None:  # train.ema cannot change on a resume: a run with one saved it
            setup.ema.load_state_dict(saved["ema"])
        self._check_same_run(saved, state)
        teacher, files = state.teacher, state.train_files  # as found now: the teacher may have moved
        state.update_from_checkpoint(saved["progress"])
        state.teacher, state.train_files = teacher, files
        if "history" not in saved["progress"]:  # a checkpoint older than the history it now carries
            state.history = read_history(setup.run_dir / "metrics.csv", state.epoch)
        self._rebuild_schedule(state.step)
        cfg, old = setup.cfg, build_config(saved["config"])
        settings_changed = bool(rundir.changed_settings(old, cfg))
        if (old.optim.lr, old.schedule, old.train.epochs) != (cfg.optim.lr, cfg.schedule, cfg.train.epochs):
            log(f"schedule rebuilt for the new settings; lr now {setup.optimizer.param_groups[0]['lr']:.4g}")
        set_rng_state(saved["rng"])
        return settings_changed

    def _check_same_run(self, saved: dict[str, Any], state: RunState) -> None:
        """The resume continues the run it names: as many processes, the same teacher, classes and images."""
        setup, recorded, run_dir = self.setup, saved["progress"], self.setup.run_dir
        processes = recorded.get("processes")
        if processes is not None and processes != setup.env.world_size:  # another global batch, another run
            raise UserError(f"{run_dir} was trained by {processes} process(es), this resume has "
                            f"{setup.env.world_size}: resume with the same number (torchrun --nproc_per_node)")
        if setup.teacher is not None:
            check_teacher_record(recorded.get("teacher"), state.teacher, run_dir)
        check_classes(saved.get("classes"), setup.splits.classes, str(run_dir), "the training data now")
        now = state.train_images, state.steps_per_epoch
        before = recorded.get("train_images", now[0]), recorded.get("steps_per_epoch", now[1])
        if before[0] == now[0] and before[1] != now[1]:  # a checkpoint from before processes were recorded
            raise UserError(f"the run took {before[1]} steps an epoch, this resume would take {now[1]}: another "
                            "number of processes (torchrun --nproc_per_node) than the run had; resume with the same")
        if before != now:
            raise UserError(f"the training data now has {now[0]:,} images ({now[1]} steps an epoch); the run was "
                            f"trained on {before[0]:,} ({before[1]}): resume needs the same data")
        files = state.train_files
        if None not in (files, recorded.get("train_files")) and files != recorded["train_files"]:
            raise UserError(f"the training images in {setup.cfg.data.root} are not those the run was trained on (files "
                            "added, removed, renamed or moved between class folders): resume needs the same data")

    def _rebuild_schedule(self, step: int) -> None:
        """The schedule is a function of the optimizer steps (one per group of ``train.accumulate_steps``
        batches): rebuilt at those ``step`` batches make, it is what a fresh run of these settings has there (new
        lr or schedule settings included; old checkpoints' scheduler classes too)."""
        setup, cfg = self.setup, self.setup.cfg
        for group in setup.optimizer.param_groups:  # lr_scale: absent in checkpoints from before it (all 1)
            group["lr"] = group["initial_lr"] = cfg.optim.lr * setup.lr_factor * group.get("lr_scale", 1.0)
        setup.scheduler = setup.schedule()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()"
            for _ in range(setup.accumulation.optimizer_steps(step)):
                setup.scheduler.step()
