"""A training run: config -> model and data -> epochs -> checkpoints, metrics and logs.

:class:`Run` owns the loop and reads top to bottom: :meth:`Run.train` runs the epochs, each trained
(:meth:`Run.train_one_epoch`, one :meth:`Run.step` per batch), checkpointed, evaluated and recorded
(:meth:`Run.end_epoch`). What it works with lives apart: what is built before anything is written
(:mod:`.run_setup`), the run's state and its checkpoints (:mod:`.run_state`), taking the run folder
(:mod:`.run_takeover`), what a step minimises (:mod:`.objective`), what the run reports (:mod:`.run_log`),
the epoch's loss and accuracy sums (:mod:`.epoch_stats`) and what stops it early (:mod:`.run_stop`); the
recipe parts a step adds: batch mixing (:mod:`.data.mixing`), gradient accumulation's groups
(:mod:`.accumulation`) and the weight EMA (:mod:`.weight_ema`).
"""
from __future__ import annotations

import copy
import shlex
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from tqdm import tqdm

from . import distributed, rundir
from .config import Config, absolute_paths
from .data import dominant_labels
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
        self.group_backwards = 0  # batches of the current accumulation group whose loss was back-propagated

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
        """One pass over the training set (or the rest of one); returns the epoch's training row. A stop or a
        checkpoint asked for inside a group of accumulated batches waits for the group's end: a checkpoint then
        holds no gradient, and a resume needs no more than the optimizer (nothing else is saved)."""
        cfg, state, setup = self.cfg, self.state, self.setup
        setup.sampler.set_epoch(epoch, state.batch)
        self.train_model.train()
        self.stats.start(state.epoch_sums)
        clock = _EpochClock(state.wall, state.epoch_time)
        session_images = self.stats.images  # images of this epoch before this session, for the running img/s
        bar = self.log.progress_bar(setup.loader, epoch, state.batch, setup.steps_per_epoch)
        why, due, every = None, False, cfg.train.checkpoint_every_steps
        for x, y in bar:
            self.step(x, y, epoch)
            if self.env.is_main and state.step % cfg.train.log_every_steps == 0:
                self._log_running(bar, clock, epoch, session_images)
            why = why or stop.reason(state.step, self.steps_this_call, self.env, self.device)  # alike everywhere
            due = due or bool(every and state.step % every == 0)
            if not (why or due) or not setup.accumulation.group_done(state.batch):
                continue
            self._write_mid_epoch(clock)
            due = False
            if why:
                raise TrainingInterrupted(
                    f"stopped ({why}) at epoch {epoch + 1}, step {state.step}; {self.run_dir / 'last.pt'} "
                    f"written. Resume with: acl train --resume {shlex.quote(str(self.run_dir))}", self.run_dir)
        bar.close()
        return self._close_epoch(epoch, clock)

    def _write_mid_epoch(self, clock: _EpochClock) -> None:
        """``last.pt`` within an epoch, its sums and times so far with it."""
        state = self.state
        state.epoch_sums = self.stats.sync(self.checkpoints.last_good)
        state.distill_sums = self.objective.add_term_sums(state.distill_sums)
        state.wall = clock.wall_before + clock.session()
        state.epoch_time = clock.epoch_time_before + clock.session()
        self.checkpoints.write(state, "last.pt")

    def step(self, x: torch.Tensor, y: torch.Tensor, epoch: int) -> None:
        """One batch, and the state one batch on: mixed (data.mixup/cutmix: soft targets), forward, the
        objective, backward into its group's gradients (the loss over the group's size; under DDP all-reduced on
        the group's last batch only), and at the group's end the update (:meth:`_update`). A non-finite loss
        under train.on_nonfinite: skip adds nothing to its group."""
        cfg, state, setup = self.cfg, self.state, self.setup
        groups = setup.accumulation
        if groups.starts_group(state.batch):
            setup.optimizer.zero_grad(set_to_none=True)
            self.group_backwards = 0
        x = x.to(self.device, non_blocking=True, memory_format=setup.memory_format)
        targets = y.to(self.device, non_blocking=True)
        if setup.mixing is not None:  # a function of (seed, rank, step): a resume mixes alike
            x, targets = setup.mixing(x, targets, state.step)
            x = x.contiguous(memory_format=setup.memory_format)
        ends_group = groups.ends_group(state.batch)
        with self._gradient_sync(ends_group):
            with autocast(self.device, cfg.train.amp):
                logits = self.train_model(x)
                loss = self.objective(logits, targets, x)
            if cfg.train.on_nonfinite == "skip" and not torch.isfinite(loss):  # a host sync, only here
                self.log.line(f"warning: loss is {loss.item()} at step {state.step + 1} (epoch {epoch + 1}); "
                              "update skipped")
                state.skipped += 1
            else:  # train top-1 of a mixed image: against its dominant label
                self.stats.record(loss, logits, dominant_labels(targets), state.step)
                size = groups.group_size(state.batch)
                setup.scaler.scale(loss / size if size > 1 else loss).backward()  # no kernel when nothing adds up
                self.group_backwards += 1
        state.lr = setup.optimizer.param_groups[0]["lr"]  # what this group steps at: the rate logs report
        if ends_group:
            self._update()
        state.step += 1
        state.batch += 1
        self.steps_this_call += 1

    def _update(self) -> None:
        """The group's optimizer step (none when each of its batches was skipped), then the schedule's step and
        the EMA's update: both count optimizer steps, skipped ones too."""
        cfg, setup = self.cfg, self.setup
        optimizer, scaler = setup.optimizer, setup.scaler
        if self.group_backwards:
            if cfg.optim.grad_clip:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(setup.model.parameters(), cfg.optim.grad_clip)
            scaler.step(optimizer)
            scaler.update()
        setup.scheduler.step()
        if setup.ema is not None:  # of the plain module: the same weights on every process
            setup.ema.update(setup.model, setup.accumulation.optimizer_steps(self.state.step + 1))

    def _gradient_sync(self, ends_group: bool) -> AbstractContextManager[Any]:
        """DDP all-reduces the gradients on a group's last batch only; the group's other batches add to this
        process's gradients (``no_sync``)."""
        ddp = getattr(self.train_model, "_orig_mod", self.train_model)  # under torch.compile: the module it wraps
        if ends_group or not isinstance(ddp, nn.parallel.DistributedDataParallel):
            return nullcontext()
        return ddp.no_sync()

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
        if self.setup.ema is not None:  # its BatchNorm statistics averaged each process's: rank 0's everywhere
            self.env.broadcast_buffers(self.setup.ema.model)
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
        val = self._evaluate(setup.model)
        ema = None if setup.ema is None else self._evaluate(setup.ema.model)
        eval_time = time.perf_counter() - t0
        state.wall += eval_time
        row = {**row, "val_loss": val["loss"], "val_top1": val["top1"], "val_top5": val["top5"], "eval_time": eval_time}
        if ema is not None:
            row.update(ema_val_loss=ema["loss"], ema_val_top1=ema["top1"], ema_val_top5=ema["top5"])
        self.log.epoch_scalars(row)
        state.history.append(row)
        state.pending = None
        top1 = val["top1"] if ema is None else ema["top1"]  # with an EMA, best.pt holds it: chosen on its top-1
        is_best = top1 > state.best_top1
        if is_best:  # best first: a kill between the two writes re-runs the evaluation and rewrites both
            state.best_top1 = top1
            self.checkpoints.write(state, "best.pt", lean=True)
        self.checkpoints.write(state, "last.pt")
        self.log.epoch_done(state.history, is_best)

    def _evaluate(self, model: nn.Module) -> dict[str, float]:
        setup = self.setup
        return evaluate(model, setup.val_loader, self.device, env=self.env, amp=self.cfg.train.amp,
                        memory_format=setup.memory_format)

    def finish(self) -> dict[str, Any]:
        """``final.json`` and the closing records; returns the final metrics."""
        state, splits = self.state, self.setup.splits
        last = state.history[-1] if state.history else {}
        final = {"val_top1": last.get("val_top1"), "val_top5": last.get("val_top5"), "val_loss": last.get("val_loss"),
                 "val_samples": len(splits.val), "val_source": splits.sources["val"],
                 "best_val_top1": state.best_top1, "params": self.setup.report.total, "epochs": state.epoch,
                 "wall_s": state.wall}
        if self.setup.ema is not None:  # best_val_top1 is then the EMA's, as best.pt holds its weights
            final.update({key: last.get(key) for key in ("ema_val_top1", "ema_val_top5", "ema_val_loss")})
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
