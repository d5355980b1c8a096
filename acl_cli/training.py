"""A training run: config -> model and data -> epochs -> checkpoints, metrics and logs.

:class:`Run` owns the loop and reads top to bottom: :meth:`Run.train` runs the epochs, each trained
(:meth:`Run.train_one_epoch`, one :meth:`Run.step` per batch), checkpointed, evaluated and recorded
(:meth:`Run.end_epoch`). What it works with lives apart: what is built before anything is written
(:mod:`.run_setup`), the run's state and its checkpoints (:mod:`.run_state`), taking the run folder
(:mod:`.run_takeover`), what a step minimises (:mod:`.objective`), what the run reports (:mod:`.run_log`),
the epoch's loss and accuracy sums (:mod:`.epoch_stats`) and what stops it early (:mod:`.run_stop`).
"""
from __future__ import annotations

import copy
import shlex
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from tqdm import tqdm

from . import distributed, rundir
from .config import Config, absolute_paths
from .device import autocast, resolve_device
from .epoch_stats import EpochStats
from .errors import UserError
from .evaluate import evaluate
from .models import resolve_model_config
from .objective import build_objective
from .run_log import RunLog
from .run_setup import RunSetup
from .run_state import RunCheckpoints, RunState
from .run_stop import STOP_SYNC_STEPS, StopRequest, stop_on_signals
from .run_takeover import take_over

__all__ = ["STOP_SYNC_STEPS", "Run", "TrainingInterrupted", "stop_on_signals", "train"]


class TrainingInterrupted(UserError):
    """Raised after a clean stop (signal or step budget) once ``last.pt`` is written."""

    def __init__(self, message: str, run_dir: Path):
        super().__init__(message)
        self.run_dir = run_dir


def train(cfg: Config, run_dir: str | Path, *, resume: bool = False, overwrite: bool = False,
          stop_after_steps: int | None = None, log=print, allow_imports: tuple[str, ...] = ()) -> dict[str, Any]:
    """Train ``cfg`` into ``run_dir``; returns the final metrics.

    ``resume`` continues from ``run_dir/last.pt`` exactly where it stopped. ``stop_after_steps`` ends this
    call cleanly after that many steps (a checkpoint is written), as SIGINT or SIGTERM would.
    ``allow_imports``: factory modules a distillation teacher's checkpoint may name.
    """
    cfg = copy.deepcopy(cfg)
    resolve_model_config(cfg.model)  # the arch known, num_classes filled in: the run records what it built
    absolute_paths(cfg)  # stored so: eval and resume from elsewhere read the same files
    with stop_on_signals(stop_after_steps) as stop:
        env, device = distributed.setup(resolve_device(cfg.train.device))
        try:
            run = Run(cfg, Path(run_dir), resume, overwrite, env, device, log if env.is_main else _quiet,
                      allow_imports)
            with run.open():
                return run.train(stop)
        finally:
            distributed.teardown()


def _quiet(*args, **kwargs) -> None:
    pass


@dataclass
class _EpochClock:
    """This session's share of an epoch: the run's wall time and the epoch's training time before it (a
    resume mid-epoch), and when it began; img/s counts images and time alike."""

    wall_before: float
    epoch_time_before: float
    start: float = field(default_factory=time.perf_counter)

    def session(self) -> float:
        return time.perf_counter() - self.start


class Run:
    """One training run. Building it validates everything (config, data, model, the state to resume) and
    writes nothing; :meth:`open` then takes the run directory and :meth:`train` runs the epochs."""

    def __init__(self, cfg: Config, run_dir: Path, resume: bool, overwrite: bool, env: distributed.DistEnv,
                 device: torch.device, log: Callable[..., None], allow_imports: tuple[str, ...] = ()):
        self.cfg, self.run_dir, self.overwrite, self.env, self.device = cfg, run_dir, overwrite, env, device
        if env.is_main:  # only rank 0 owns the run directory
            rundir.check_run_dir(run_dir, resume, overwrite)
        torch.manual_seed(cfg.train.seed)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.log = RunLog(cfg, run_dir, log, env.is_main)
        self.setup = setup = RunSetup(cfg, run_dir, resume, env, device, allow_imports)
        self.state = RunState(train_images=len(setup.splits.train), steps_per_epoch=setup.steps_per_epoch,
                              train_files=setup.train_files(), processes=env.world_size, teacher=setup.teacher_record)
        self.stats = EpochStats(device, setup.steps_per_epoch, cfg.model.num_classes)
        self.checkpoints = RunCheckpoints(setup)
        self.resumed = self.checkpoints.restore(self.state, self.log.line) if resume else None
        self._check_not_finished()
        self.train_model, teacher = setup.for_training()  # wrapped after the resume: DDP starts from its weights
        self.objective = build_objective(cfg, teacher, device)
        self.steps_this_call = 0

    def _check_not_finished(self) -> None:
        """A finished run is refused; one killed after its last checkpoint but before its last records only
        writes those."""
        state, run_dir = self.state, self.run_dir
        done = state.epoch >= self.cfg.train.epochs and not state.pending
        if done and (run_dir / "final.json").exists():
            raise UserError(f"{run_dir} already finished {state.epoch} epochs; to train longer: "
                            f"acl train --resume {shlex.quote(str(run_dir))} --set train.epochs=N")
        if self.resumed is not None:
            self.log.line(f"resuming {run_dir} " + ("to write its final records" if done else
                          f"at epoch {state.epoch + 1}, step {state.step}"))

    def open(self) -> AbstractContextManager[None]:
        """Create or take over the run directory (locked for the run's life) and its logs."""
        return take_over(self.setup, self.state, self.log, self.overwrite, self.resumed)

    def train(self, stop: StopRequest) -> dict[str, Any]:
        state = self.state
        self.log.banner(self.setup)
        if state.pending:  # stopped between an epoch's training and its evaluation
            self.end_epoch(state.pending)
        for epoch in range(state.epoch, self.cfg.train.epochs):
            row = self.train_one_epoch(epoch, stop)
            state.pending = row
            self.checkpoints.write(state, "last.pt")  # the epoch's training is safe before evaluation starts
            self.end_epoch(row)
        return self.finish()

    def train_one_epoch(self, epoch: int, stop: StopRequest) -> dict[str, Any]:
        """One pass over the training set (or the rest of one); returns the epoch's training row."""
        cfg, state, setup = self.cfg, self.state, self.setup
        setup.sampler.set_epoch(epoch, state.batch)
        self.train_model.train()
        self.stats.start(state.epoch_sums)
        clock = _EpochClock(state.wall, state.epoch_time)
        session_images = self.stats.images  # images of this epoch before this session, for the running img/s
        bar = self.log.progress_bar(setup.loader, epoch, state.batch, setup.steps_per_epoch)
        for x, y in bar:
            self.step(x, y, epoch)
            state.step += 1
            state.batch += 1
            self.steps_this_call += 1
            if self.env.is_main and state.step % cfg.train.log_every_steps == 0:
                self._log_running(bar, clock, epoch, session_images)
            why = stop.reason(state.step, self.steps_this_call, self.env, self.device)
            every = cfg.train.checkpoint_every_steps
            if why or (every and state.step % every == 0):
                state.epoch_sums = self.stats.sync(self.checkpoints.last_good)
                state.distill_sums = self.objective.add_term_sums(state.distill_sums)
                state.wall = clock.wall_before + clock.session()
                state.epoch_time = clock.epoch_time_before + clock.session()
                self.checkpoints.write(state, "last.pt")
            if why:
                raise TrainingInterrupted(
                    f"stopped ({why}) at epoch {epoch + 1}, step {state.step}; {self.run_dir / 'last.pt'} "
                    f"written. Resume with: acl train --resume {shlex.quote(str(self.run_dir))}", self.run_dir)
        bar.close()
        return self._close_epoch(epoch, clock)

    def step(self, x: torch.Tensor, y: torch.Tensor, epoch: int) -> None:
        """One batch: forward, the objective, backward and the optimizer's update (skipped for a non-finite
        loss under train.on_nonfinite: skip), then the schedule's step."""
        cfg, state, setup = self.cfg, self.state, self.setup
        optimizer, scaler = setup.optimizer, setup.scaler
        x = x.to(self.device, non_blocking=True, memory_format=setup.memory_format)
        y = y.to(self.device, non_blocking=True)
        with autocast(self.device, cfg.train.amp):
            logits = self.train_model(x)
            loss = self.objective(logits, y, x)
        if cfg.train.on_nonfinite == "skip" and not torch.isfinite(loss):  # a host sync, only here
            self.log.line(f"warning: loss is {loss.item()} at step {state.step + 1} (epoch {epoch + 1}); "
                          "update skipped")
            state.skipped += 1
        else:
            self.stats.record(loss, logits, y, state.step)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.optim.grad_clip:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(setup.model.parameters(), cfg.optim.grad_clip)
            scaler.step(optimizer)
            scaler.update()
        state.lr = optimizer.param_groups[0]["lr"]  # what this step ran at: the rate logs report
        setup.scheduler.step()  # the schedule follows batches, skipped ones too

    def _close_epoch(self, epoch: int, clock: _EpochClock) -> dict[str, Any]:
        """The epoch's training row, summed over processes; the state moves on to the next epoch."""
        cfg, state = self.cfg, self.state
        sums = self.stats.sync(self.checkpoints.last_good)
        self.log.loss_terms(self._term_means(epoch_end=True), state.step, suffix="")
        session_time = clock.session()
        epoch_time = clock.epoch_time_before + session_time
        totals = self.env.sum(torch.tensor(sums, dtype=torch.float64, device=self.device)).tolist()
        loss_sum, correct, images = totals[:3]
        self.env.broadcast_buffers(self.setup.model)
        state.epoch, state.batch, state.epoch_sums = epoch + 1, 0, [0.0, 0, 0, 0]
        state.wall, state.epoch_time, state.distill_sums = clock.wall_before + session_time, 0.0, [0.0, 0.0, 0]
        seen = max(images, 1)
        top5 = len(totals) > 3 and cfg.model.num_classes >= 5  # with fewer classes top-5 is always 100 %
        return {"epoch": epoch + 1, "step": state.step, "lr": self._step_lr(),
                "train_loss": loss_sum / seen, "train_top1": 100 * correct / seen,
                "train_top5": 100 * totals[3] / seen if top5 else None,
                "epoch_time": epoch_time, "img_s": images / epoch_time}

    def end_epoch(self, row: dict[str, Any]) -> None:
        """Evaluate, then record the epoch: TensorBoard, checkpoints, metrics.csv (from the history), a line.
        TensorBoard first: a kill before the checkpoint repeats the same points at the same step on resume,
        and one after it loses none (a resume purges only the steps after its checkpoint)."""
        state, setup, t0 = self.state, self.setup, time.perf_counter()
        val = evaluate(setup.model, setup.val_loader, self.device, env=self.env, amp=self.cfg.train.amp,
                       memory_format=setup.memory_format)
        eval_time = time.perf_counter() - t0
        state.wall += eval_time
        row = {**row, "val_loss": val["loss"], "val_top1": val["top1"], "val_top5": val["top5"], "eval_time": eval_time}
        self.log.epoch_scalars(row)
        state.history.append(row)
        state.pending = None
        is_best = val["top1"] > state.best_top1
        if is_best:  # best first: a kill between the two writes re-runs the evaluation and rewrites both
            state.best_top1 = val["top1"]
            self.checkpoints.write(state, "best.pt", lean=True)
        self.checkpoints.write(state, "last.pt")
        self.log.epoch_done(state.history, is_best)

    def finish(self) -> dict[str, Any]:
        """``final.json`` and the closing records; returns the final metrics."""
        state, splits = self.state, self.setup.splits
        last = state.history[-1] if state.history else {}
        final = {"val_top1": last.get("val_top1"), "val_top5": last.get("val_top5"), "val_loss": last.get("val_loss"),
                 "val_samples": len(splits.val), "val_source": splits.sources["val"],
                 "best_val_top1": state.best_top1, "params": self.setup.report.total, "epochs": state.epoch,
                 "wall_s": state.wall}
        self.log.final(final, state.step)
        return final

    def _step_lr(self) -> float:
        """The rate the last step ran at (the optimizer's lr is already the next step's)."""
        lr = self.state.lr
        return self.setup.optimizer.param_groups[0]["lr"] if lr is None else lr  # None: a checkpoint from before

    def _term_means(self, epoch_end: bool) -> dict[str, float]:
        """The objective's terms (distillation: labels, teacher) as means over the epoch's images so far: at
        a log point this process's, at the epoch's end over all processes (every process calls it then)."""
        state, terms = self.state, self.objective.terms
        if not terms:
            return {}
        state.distill_sums = self.objective.add_term_sums(state.distill_sums)
        sums = state.distill_sums
        if epoch_end:
            sums = self.env.sum(torch.tensor(sums, dtype=torch.float64, device=self.device)).tolist()
        return {name: total / sums[-1] for name, total in zip(terms, sums)} if sums[-1] else {}

    def _log_running(self, bar: tqdm, clock: _EpochClock, epoch: int, session_images: int) -> None:
        state = self.state
        sums = self.stats.sync(self.checkpoints.last_good)
        img_s = self.env.world_size * (sums[2] - session_images) / max(clock.session(), 1e-9)
        where = f"epoch {epoch + 1}/{self.cfg.train.epochs} step {state.batch}/{self.setup.steps_per_epoch}"
        self.log.running(bar, sums, self._term_means(epoch_end=False), state.step, where, self._step_lr(), img_s)
