"""A training run: config -> model and data -> epochs -> checkpoints, metrics and logs.

:class:`Run` is built in phases that validate everything and write nothing (data, model, a look at the data
through the model, the state to resume); :meth:`Run.open` then takes the run directory, and :meth:`Run.train`
runs the epochs, each one trained, checkpointed, evaluated and recorded.
"""
from __future__ import annotations

import copy
import json
import math
import shlex
import signal
import sys
import threading
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn
from tqdm import tqdm

from . import distributed, interrupts, rundir
from .csg import kept_plain_summary
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .compute import add_macs
from .config import Config, absolute_paths, build_config
from .data import (DeviceLoader, build_splits, check_classes, check_split_images, eval_loader, sample_fingerprint,
                   train_loader, usable_workers)
from .device import autocast, resolve_device
from .distill import check_teacher_record, distillation_loss, load_teacher
from .errors import UserError, one_line
from .evaluate import evaluate
from .files import read_json, write_text
from .models import resolve_model_config
from .models.build import build_model, load_generator, load_pretrained, load_weights
from .optim import build_optimizer, build_scheduler
from .params import format_report, outweighs, report_for_config
from .records import HPARAM_METRICS, metrics_csv, read_history, run_record, write_hparams

STOP_SYNC_STEPS = 10  # under torchrun, how often the processes agree whether a signal asks them to stop


class TrainingInterrupted(UserError):
    """Raised after a clean stop (signal or step budget) once ``last.pt`` is written."""

    def __init__(self, message: str, run_dir: Path):
        super().__init__(message)
        self.run_dir = run_dir


@contextmanager
def stop_on_signals() -> Iterator[dict]:
    """First SIGINT/SIGTERM asks the loop to stop after the current step; a second Ctrl-C stops at once."""
    flag = {"stop": None}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    if interrupts.received():  # a Ctrl-C at start-up that something swallowed: stop before anything is written
        raise KeyboardInterrupt

    def handler(signum, frame):
        if flag["stop"] is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag["stop"] = signal.Signals(signum).name
        again = " (Ctrl-C again to quit at once)" if signum == signal.SIGINT else ""
        print(f"\n{flag['stop']} received: stopping after this step{again}", file=sys.stderr, flush=True)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


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
    with stop_on_signals() as stop:
        env, device = distributed.setup(resolve_device(cfg.train.device))
        try:
            run = Run(cfg, Path(run_dir), resume, overwrite, env, device, log if env.is_main else _quiet,
                      allow_imports)
            with run.open():
                return run.train(stop, stop_after_steps)
        finally:
            distributed.teardown()


def _quiet(*args, **kwargs) -> None:
    pass


class _NullWriter:
    """Stands in for the SummaryWriter on processes other than rank 0."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


class _EpochStats:
    """The training loss and top-1/top-5 counts of each step, written into a device buffer (as many kernels
    per step as an argmax would take, no host sync) and read back where the loop syncs anyway: log points,
    checkpoints, the epoch's end. Reading back finds the first non-finite loss and names its step; since
    every checkpoint reads back first, a checkpoint never holds weights updated from a NaN loss."""

    def __init__(self, device: torch.device, steps_per_epoch: int, num_classes: int):
        self.k = min(5, num_classes)
        # loss, then the hits at each rank 1..k (top-1 = rank 1, top-5 = their sum); exact below 2**24
        self.buffer = torch.zeros(steps_per_epoch, 1 + self.k, device=device)
        self.steps_per_epoch = steps_per_epoch
        self.last_good = "no checkpoint was written"  # kept up to date by the run
        self.start([0.0, 0, 0, 0])

    def start(self, sums: list) -> None:
        """An epoch (or the rest of one), continuing from its ``[loss sum, top-1, images, top-5]`` so far."""
        self.loss_sum, self.correct, self.images = float(sums[0]), int(sums[1]), int(sums[2])
        self.correct5 = int(sums[3]) if len(sums) > 3 else None  # None: resumed from a checkpoint without it
        self.pending: list[tuple[int, int]] = []  # (step, images) of the rows not read back yet

    def record(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, step: int) -> None:
        row = self.buffer[len(self.pending)]
        row[0] = loss.detach()
        row[1:] = (logits.topk(self.k, dim=1).indices == y[:, None]).sum(0)
        self.pending.append((step, y.numel()))

    def sync(self) -> list:
        """Add the pending rows to the sums (in step order, so a resumed run sums exactly alike)."""
        if self.pending:
            rows = self.buffer[: len(self.pending)].tolist()
            for (step, images), (loss, *hits) in zip(self.pending, rows, strict=True):
                if not math.isfinite(loss):
                    raise UserError(f"loss is {loss} at step {step + 1} (epoch {step // self.steps_per_epoch + 1}); "
                                    f"{self.last_good}; lower optim.lr, or train.on_nonfinite: skip")
                self.loss_sum += loss * images
                self.correct += int(hits[0])
                self.images += images
                if self.correct5 is not None:
                    self.correct5 += int(sum(hits))
            self.pending = []
        return [self.loss_sum, self.correct, self.images] + ([] if self.correct5 is None else [self.correct5])


def _all_finite(model: nn.Module) -> bool:
    tensors = [t for t in model.state_dict().values() if t.is_floating_point()]
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()) if tensors else True


class Run:
    """One training run. Building it validates everything (config, data, model, the state to resume) and
    writes nothing; :meth:`open` then takes the run directory and :meth:`train` runs the epochs."""

    def __init__(self, cfg: Config, run_dir: Path, resume: bool, overwrite: bool, env: distributed.DistEnv,
                 device: torch.device, log, allow_imports: tuple[str, ...] = ()):
        self.cfg, self.run_dir, self.resume, self.overwrite = cfg, run_dir, resume, overwrite
        self.env, self.device, self.log, self.main = env, device, log, env.is_main
        if self.main:  # only rank 0 owns the run directory
            rundir.check_run_dir(run_dir, resume, overwrite)
        torch.manual_seed(cfg.train.seed)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self._build_data()
        self._build_model()
        self._build_teacher(allow_imports)
        self._check_model_takes_data()
        self.progress: dict[str, Any] = {
            "epoch": 0, "batch": 0, "step": 0, "best_top1": -1.0, "wall": 0.0,
            "epoch_sums": [0.0, 0, 0, 0],  # loss sum, top-1, images, top-5 of the epoch so far (this process)
            "history": [],  # one metrics row per finished epoch: metrics.csv is written from it
            "pending": None,  # the row of an epoch trained but not yet evaluated
            "lr": None,  # the rate of the last step taken
            "train_images": len(self.splits.train), "steps_per_epoch": self.steps_per_epoch,
            "train_files": sample_fingerprint(self.splits.train),  # which images, with which labels
            "processes": env.world_size,
            "teacher": None if self.teacher is None else {"source": self.teacher_source, "sha256": self.teacher_sha256},
            "distill_sums": [0.0, 0.0, 0]}  # label term, teacher term (sums over images), images: this epoch
        self.stats = _EpochStats(device, self.steps_per_epoch, cfg.model.num_classes)
        if resume:
            self._restore()
        done = self.progress["epoch"] >= cfg.train.epochs and not self.progress["pending"]
        if done and (run_dir / "final.json").exists():
            raise UserError(f"{run_dir} already finished {self.progress['epoch']} epochs; to train longer: "
                            f"acl train --resume {shlex.quote(str(run_dir))} --set train.epochs=N")
        if resume:  # a run killed after its last checkpoint but before its last records only writes those
            self.log(f"resuming {run_dir} " + ("to write its final records" if done else
                     f"at epoch {self.progress['epoch'] + 1}, step {self.progress['step']}"))
        self.train_model: nn.Module = self.model  # ``model`` stays plain: checkpoints carry no wrapper prefixes
        if env.enabled:  # gradient_as_bucket_view: gradients live in the all-reduce buckets, no copy per step
            self.train_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None,
                gradient_as_bucket_view=True)
        if cfg.train.compile:
            self.train_model = torch.compile(self.train_model, mode=cfg.train.compile_mode)
            if self.teacher is not None:
                self.teacher = torch.compile(self.teacher, mode=cfg.train.compile_mode)
        self.writer: Any = _NullWriter()
        self.steps_this_call = 0

    # ---- setup (nothing written)

    def _build_data(self) -> None:
        """Every process takes its own share of each epoch and of the validation set."""
        cfg, env = self.cfg, self.env
        self.splits = splits = build_splits(cfg.data, cfg.model.num_classes)
        if splits.train is None:
            raise UserError(f"{cfg.data.name}: no training folder at {Path(cfg.data.root) / 'train'}; give the "
                            "data's folder with --set data.root=DIR")
        if cfg.data.train_subset is not None and cfg.data.train_subset > len(splits.train):  # config.yaml would say
            raise UserError(f"data.train_subset: {cfg.data.train_subset:,} is more than the {len(splits.train):,} "
                            "training images there are; leave it out (null) to train on all of them")
        if len(splits.val) == 0:
            raise UserError(f"{cfg.data.name}: the validation split is empty")
        check_split_images(splits, cfg.data)  # a bad file found now, not after a training epoch
        began_with = rundir.loader_began_with(self.run_dir, self.device) if self.resume else None
        self.loader = train_loader(splits.train, cfg.data, cfg.train.seed, self.device, env.rank, env.world_size,
                                   began_with)
        self.val_loader = eval_loader(splits.val, cfg.data, self.device, env.rank, env.world_size, began_with)
        self.sampler = self.loader.batch_sampler
        self.steps_per_epoch = self.sampler.batches_per_epoch()

    def _build_model(self) -> None:
        cfg, env, device = self.cfg, self.env, self.device
        model = build_model(cfg, pretrained=False)
        self.model_notes = []  # what the run's first lines say of the model: where its weights come from
        if cfg.model.pretrained and not self.resume:  # a resume takes every weight from its checkpoint
            self.model_notes.append(load_pretrained(model, cfg.model.pretrained, cfg.model.pretrained_exclude))
        if cfg.model.csg and cfg.model.csg.init_from and not self.resume:
            self.model_notes.append(load_generator(model, cfg.model.csg.init_from))
        kept = kept_plain_summary(model) if cfg.model.csg else ""
        if kept:
            self.model_notes.append(f"kept plain: {kept}")
        if cfg.train.sync_bn and env.enabled:
            if device.type != "cuda":
                raise UserError("train.sync_bn: SyncBatchNorm needs CUDA devices; set it false for CPU processes")
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
        self.model = model.to(device).to(memory_format=self.memory_format)
        self.lr_factor = env.world_size if cfg.optim.lr_scaling == "linear" else 1
        self.optimizer = build_optimizer(model, cfg.optim, self.lr_factor)
        self.scheduler = build_scheduler(self.optimizer, cfg.schedule, cfg.train.epochs, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.train.amp == "fp16")
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.train.label_smoothing)
        self.report = report_for_config(cfg.model, model)

    def _build_teacher(self, allow_imports: tuple[str, ...]) -> None:
        """The distillation teacher (or None): frozen, in eval mode, on the student's device and memory format."""
        self.teacher: nn.Module | None = None
        if self.cfg.distill is None:
            return
        teacher = load_teacher(self.cfg, self.run_dir, allow_imports)
        check_classes(teacher.classes, self.splits.classes, f"distill.teacher {teacher.source}", "the training data")
        self.teacher = teacher.model.to(self.device).to(memory_format=self.memory_format)
        self.teacher_source, self.teacher_sha256 = teacher.source, teacher.sha256
        self.teacher_input_shape = teacher.input_shape
        d = self.cfg.distill
        self.model_notes.append(f"distilling from {teacher.source} (alpha {d.alpha:g}, temperature {d.temperature:g}; "
                                f"weights sha256 {teacher.sha256[:12]})")
        self.loss_terms = torch.zeros(2, device=self.device, dtype=torch.float64)  # summed since the last sync
        self.loss_term_images = 0

    @torch.no_grad()
    def _check_model_takes_data(self) -> None:
        """Two training and two validation images through the model (eval mode: nothing learns, no statistic
        moves) before anything is written: a model that does not take the data (channels, a fixed-size head,
        images too small for its pooling) fails here, and the rerun needs no --overwrite."""
        first_batch = next(iter(self.sampler.plan()))[:2].tolist()
        for split, ds, keys in (("training", self.splits.train, [tuple(k) for k in first_batch]),
                                ("validation", self.splits.val, range(min(2, len(self.splits.val))))):
            x = torch.stack([ds[k][0] for k in keys])
            self.input_shape = list(x.shape[1:])  # ends as the validation images': what inference and export see
            try:
                with autocast(self.device, self.cfg.train.amp):
                    self.model.eval()(x.to(self.device, memory_format=self.memory_format))
            except (RuntimeError, ValueError, TypeError, IndexError) as e:
                raise UserError(f"{self.cfg.model.arch} does not take the {split} images (a batch of "
                                f"{'x'.join(map(str, x.shape[1:]))}): {one_line(e, 300)}") from None
        if self.teacher is not None:
            self._check_teacher_takes_data(x)

    @torch.no_grad()
    def _check_teacher_takes_data(self, x: torch.Tensor) -> None:
        """The teacher was trained on images like these and has the student's outputs."""
        shape, source = list(x.shape[1:]), self.teacher_source
        if self.teacher_input_shape is not None and list(self.teacher_input_shape) != shape:
            raise UserError(f"distill.teacher {source} was trained on {'x'.join(map(str, self.teacher_input_shape))} "
                            f"images; this data gives {'x'.join(map(str, shape))}: its outputs would not mean the same")
        try:
            with autocast(self.device, self.cfg.train.amp):
                out = self.teacher(x.to(self.device, memory_format=self.memory_format))
        except (RuntimeError, ValueError, TypeError, IndexError) as e:
            raise UserError(f"distill.teacher {source} does not take these images (a batch of "
                            f"{'x'.join(map(str, shape))}): {one_line(e, 300)}") from None
        if out.dim() != 2 or out.shape[1] != self.cfg.model.num_classes:
            raise UserError(f"distill.teacher {source} gives {tuple(out.shape[1:])} outputs per image; the model has "
                            f"{self.cfg.model.num_classes} classes: a teacher must have the student's classes")

    def _restore(self) -> None:
        """Load ``last.pt`` into the freshly built objects: model, optimizer, schedule, RNG and progress."""
        path = self.run_dir / "last.pt"
        self.restored_from = path.stat().st_mtime_ns
        state = load_checkpoint(path)
        try:
            self._restore_from(state, path)
        except UserError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as e:
            # a last.pt acl did not write as it is (edited, or sent): one line, nothing trained or written
            raise UserError(f"{path} cannot be resumed: its training state is incomplete or not acl's "
                            f"({type(e).__name__}: {one_line(e, 120)})") from None

    def _restore_from(self, state: dict[str, Any], path: Path) -> None:
        cfg, progress = self.cfg, self.progress
        load_weights(self.model, state["model"], str(path))
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        processes = state["progress"].get("processes")
        if processes is not None and processes != self.env.world_size:  # another global batch, another run
            raise UserError(f"{self.run_dir} was trained by {processes} process(es), this resume has "
                            f"{self.env.world_size}: resume with the same number (torchrun --nproc_per_node)")
        if self.teacher is not None:
            check_teacher_record(state["progress"].get("teacher"), progress["teacher"], self.run_dir)
        teacher = progress["teacher"]  # the teacher as found now: where it is may have changed
        progress.update(state["progress"])
        progress["teacher"] = teacher
        progress.setdefault("distill_sums", [0.0, 0.0, 0])
        check_classes(state.get("classes"), self.splits.classes, str(self.run_dir), "the training data now")
        before = progress["train_images"], progress["steps_per_epoch"]
        now = len(self.splits.train), self.steps_per_epoch
        if before[0] == now[0] and before[1] != now[1]:  # a checkpoint from before processes were recorded
            raise UserError(f"the run took {before[1]} steps an epoch, this resume would take {now[1]}: another "
                            "number of processes (torchrun --nproc_per_node) than the run had; resume with the same")
        if before != now:
            raise UserError(f"the training data now has {now[0]:,} images ({now[1]} steps an epoch); the run was "
                            f"trained on {before[0]:,} ({before[1]}): resume needs the same data")
        files = sample_fingerprint(self.splits.train)
        if None not in (files, state["progress"].get("train_files")) and files != state["progress"]["train_files"]:
            raise UserError(f"the training images in {self.cfg.data.root} are not those the run was trained on (files "
                            "added, removed, renamed or moved between class folders): resume needs the same data")
        progress["train_files"] = files
        if "history" not in state["progress"]:  # a checkpoint older than the history it now carries
            progress["history"] = read_history(self.run_dir / "metrics.csv", progress["epoch"])
        # the schedule is a function of the step: rebuilt at the step reached, it is what a fresh run of these
        # settings has there (new lr or schedule settings included; old checkpoints' scheduler classes too)
        for group in self.optimizer.param_groups:  # lr_scale: absent in checkpoints from before it (all 1)
            group["lr"] = group["initial_lr"] = cfg.optim.lr * self.lr_factor * group.get("lr_scale", 1.0)
        self.scheduler = build_scheduler(self.optimizer, cfg.schedule, cfg.train.epochs, self.steps_per_epoch)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()"
            for _ in range(progress["step"]):
                self.scheduler.step()
        old = build_config(state["config"])
        self.settings_changed = bool(rundir.changed_settings(old, cfg))
        if (old.optim.lr, old.schedule, old.train.epochs) != (cfg.optim.lr, cfg.schedule, cfg.train.epochs):
            self.log(f"schedule rebuilt for the new settings; lr now {self.optimizer.param_groups[0]['lr']:.4g}")
        set_rng_state(state["rng"])
        self.stats.last_good = f"last good checkpoint: {path} (step {progress['step']})"

    # ---- the run directory

    @contextmanager
    def open(self) -> Iterator[None]:
        """Create or take over the run directory (locked for the run's life) and its logs."""
        if not self.main:
            yield
            return
        run_dir = self.run_dir
        created = not run_dir.exists()
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create run directory {run_dir}: {e.strerror or e}") from None
        try:
            with rundir.RunLock(run_dir):
                self._take_over(run_dir)
                try:
                    yield
                except BaseException:
                    if not self.resume and self.progress["step"] == 0:  # failed before its first step (an image
                        self.writer.close()  # that cannot be decoded, a model that does not take the data)
                        rundir.clear(run_dir)  # leaves nothing behind: the rerun needs no --overwrite
                    raise
                finally:
                    self.writer.close()
        finally:
            if created and not self.resume and self.progress["step"] == 0:
                rundir.remove_if_only_lock(run_dir)

    def _take_over(self, run_dir: Path) -> None:
        """Under the lock: check again (another process may have written here while this one prepared), clear
        what ``--overwrite`` replaces, then write the run record first and the run's files."""
        from torch.utils.tensorboard import SummaryWriter

        cfg = self.cfg
        if self.resume:
            if (run_dir / "last.pt").stat().st_mtime_ns != self.restored_from:
                raise UserError(f"{run_dir / 'last.pt'} changed while this run prepared; run the command again")
        else:
            rundir.check_run_dir(run_dir, resume=False, overwrite=self.overwrite)
        try:
            if self.overwrite and not self.resume:
                rundir.clear(run_dir)
            rundir.remove_stale_temps(run_dir)
        except OSError as e:
            raise UserError(f"cannot prepare run directory {run_dir}: {e.strerror or e}") from None
        self._write_run_record()  # first: the mark that acl made this folder
        write_text(run_dir / "config.yaml", cfg.to_yaml())
        add_macs(self.report, cfg.model, self.input_shape, "the run's images")  # counted on copies, never this model
        write_text(run_dir / "params.json", json.dumps(self.report.to_dict(per_layer=True), indent=2))
        write_text(run_dir / "metrics.csv", metrics_csv(self.progress["history"]))
        # a resume drops what was logged after its checkpoint, never the points of the step it resumes at
        self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=self.progress["step"] + 1 if self.resume else None)
        write_hparams(run_dir / "tb", cfg)  # the settings as they are now (a resume may change lr, epochs)
        if not self.resume:
            self.writer.add_text("params", format_report(self.report, "markdown"))
            self.writer.add_scalar("hparam/params", self.report.total, 0)
        if not self.resume or self.settings_changed:
            self.writer.add_text("config", "```yaml\n" + cfg.to_yaml() + "```", self.progress["step"])

    def _write_run_record(self) -> None:
        """``run.json``: the splits, and one entry per session (the first, then each resume)."""
        path, sessions = self.run_dir / "run.json", []
        if self.resume and path.exists():
            try:
                sessions = list(read_json(path, what="run record")["sessions"])
            except (UserError, KeyError, TypeError):
                sessions = []  # unreadable: start the record afresh rather than refuse to resume
        sessions.append(run_record(self.env, self.device, self.progress["step"] if self.resume else None,
                                   self.feed))
        write_text(path, json.dumps({"splits": self.splits.sources, "sessions": sessions}, indent=2))

    def _checkpoint(self, name: str, lean: bool = False) -> None:
        """Write ``name`` from the current state; never from non-finite weights. A ``lean`` checkpoint
        (best.pt: for evaluation and export) leaves out what only a resume needs: optimizer, schedule, RNG."""
        step = self.progress["step"]
        if not _all_finite(self.model):  # checked on every process: the weights are the same everywhere
            raise UserError(f"the weights are not finite after step {step} (epoch "
                            f"{(step - 1) // self.steps_per_epoch + 1}); {self.stats.last_good}; lower optim.lr")
        if self.main:
            state = {"config": self.cfg.to_dict(), "model": self.model.state_dict(), "classes": self.splits.classes,
                     "input_shape": self.input_shape,
                     "progress": copy.deepcopy(self.progress), "params": self.report.total}
            if not lean:
                state.update(optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
                             scaler=self.scaler.state_dict() if self.scaler.is_enabled() else None, rng=rng_state())
            save_checkpoint(state, self.run_dir / name)
        if not lean:
            self.stats.last_good = f"last good checkpoint: {self.run_dir / 'last.pt'} (step {step})"

    # ---- training

    def train(self, stop: dict, stop_after_steps: int | None) -> dict[str, Any]:
        cfg, progress = self.cfg, self.progress
        self.log(self._banner())
        if progress["pending"]:  # stopped between an epoch's training and its evaluation
            self._end_epoch(progress["pending"])
        for epoch in range(progress["epoch"], cfg.train.epochs):
            row = self._train_epoch(epoch, stop, stop_after_steps)
            progress["pending"] = row
            self._checkpoint("last.pt")  # the epoch's training is safe before evaluation starts
            self._end_epoch(row)
        return self._finish()

    def _banner(self) -> str:
        for note in self.splits.notes:
            self.log(f"warning: {note}")
        for note in self.model_notes:
            self.log(note)
        cfg, report, env = self.cfg, self.report, self.env
        ratio = report.compression
        smaller = "" if not cfg.model.csg else f" ({ratio:.2f}x fewer than the original)" if ratio >= 1 else \
            f" ({1 / ratio:.2f}x more than the original: {outweighs(report)})"
        procs = f" x {env.world_size} processes (lr x {self.lr_factor})" if env.enabled else ""
        feed = self.feed
        return (f"{cfg.model.arch}{' CSG' if cfg.model.csg else ''}: {report.total:,} params{smaller}, "
                f"{len(self.splits.train):,} train / {len(self.splits.val):,} val images (val: "
                f"{self.splits.sources['val']}), {self.steps_per_epoch} steps per epoch on {self.device}{procs} "
                f"({feed}); logs in {self.run_dir}")

    @property
    def feed(self) -> str:
        """Which loader feeds the training steps (the banner, run.json and acl report say it)."""
        if isinstance(self.loader, DeviceLoader):
            return "device loader"
        workers, asked = usable_workers(self.cfg.data), self.cfg.data.workers
        return f"DataLoader, {workers} workers" + (f" (data.workers {asked} capped to the cores)" if workers < asked
                                                    else "")

    def _train_epoch(self, epoch: int, stop: dict, stop_after_steps: int | None) -> dict[str, Any]:
        """One pass over the training set (or the rest of one); returns the epoch's training row."""
        cfg, progress, stats = self.cfg, self.progress, self.stats
        self.sampler.set_epoch(epoch, progress["batch"])
        self.train_model.train()
        stats.start(progress["epoch_sums"])
        # time this epoch took in earlier sessions (a resume mid-epoch): img/s counts images and time alike
        wall_base, before, t0 = progress["wall"], progress.get("epoch_time", 0.0), time.perf_counter()
        self.session_images = stats.images  # images of this epoch before this session, for the running img/s
        bar = tqdm(self.loader, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", leave=False, dynamic_ncols=True,
                   disable=not (cfg.train.progress and self.main and sys.stderr.isatty()), initial=progress["batch"],
                   total=self.steps_per_epoch)
        for x, y in bar:
            self._step(x, y, epoch)
            progress["step"] += 1
            progress["batch"] += 1
            self.steps_this_call += 1
            if self.main and progress["step"] % cfg.train.log_every_steps == 0:
                self._log_running(bar, t0, epoch)
            why = self._stop_reason(stop, stop_after_steps)
            every = cfg.train.checkpoint_every_steps
            if why or (every and progress["step"] % every == 0):
                progress["epoch_sums"] = stats.sync()
                self._sync_loss_terms()
                progress["wall"] = wall_base + time.perf_counter() - t0
                progress["epoch_time"] = before + time.perf_counter() - t0
                self._checkpoint("last.pt")
            if why:
                raise TrainingInterrupted(
                    f"stopped ({why}) at epoch {epoch + 1}, step {progress['step']}; {self.run_dir / 'last.pt'} "
                    f"written. Resume with: acl train --resume {shlex.quote(str(self.run_dir))}", self.run_dir)
        bar.close()
        sums = stats.sync()
        self._log_loss_terms(epoch_end=True)
        session_time = time.perf_counter() - t0
        epoch_time = before + session_time
        totals = self.env.sum(torch.tensor(sums, dtype=torch.float64, device=self.device)).tolist()
        loss_sum, correct, images = totals[:3]
        self.env.broadcast_buffers(self.model)
        progress.update(epoch=epoch + 1, batch=0, epoch_sums=[0.0, 0, 0, 0], wall=wall_base + session_time,
                        epoch_time=0.0, distill_sums=[0.0, 0.0, 0])
        seen = max(images, 1)
        top5 = len(totals) > 3 and cfg.model.num_classes >= 5  # with fewer classes top-5 is always 100 %
        return {"epoch": epoch + 1, "step": progress["step"], "lr": self._step_lr(),
                "train_loss": loss_sum / seen, "train_top1": 100 * correct / seen,
                "train_top5": 100 * totals[3] / seen if top5 else None,
                "epoch_time": epoch_time, "img_s": images / epoch_time}

    def _step(self, x: torch.Tensor, y: torch.Tensor, epoch: int) -> None:
        cfg, progress = self.cfg, self.progress
        x = x.to(self.device, non_blocking=True, memory_format=self.memory_format)
        y = y.to(self.device, non_blocking=True)
        with autocast(self.device, cfg.train.amp):
            logits = self.train_model(x)
            if self.teacher is None:
                loss = self.criterion(logits, y)
            else:
                with torch.no_grad():
                    teacher_logits = self.teacher(x)
                loss, label_term, teacher_term = distillation_loss(logits, teacher_logits, y, self.criterion,
                                                                   cfg.distill.alpha, cfg.distill.temperature)
                self.loss_terms += torch.stack([label_term.detach(), teacher_term.detach()]) * y.numel()
                self.loss_term_images += y.numel()
        if cfg.train.on_nonfinite == "skip" and not torch.isfinite(loss):  # a host sync, only here
            self.log(f"warning: loss is {loss.item()} at step {progress['step'] + 1} (epoch {epoch + 1}); "
                     "update skipped")
            progress["skipped"] = progress.get("skipped", 0) + 1
        else:
            self.stats.record(loss, logits, y, progress["step"])
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if cfg.optim.grad_clip:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        progress["lr"] = self.optimizer.param_groups[0]["lr"]  # what this step ran at: the rate logs report
        self.scheduler.step()  # the schedule follows batches, skipped ones too

    def _sync_loss_terms(self) -> None:
        """Add the distillation loss terms summed on the device since the last sync to the epoch's."""
        if self.teacher is not None and self.loss_term_images:
            sums = self.progress["distill_sums"]
            label_sum, teacher_sum = self.loss_terms.tolist()
            sums[:] = [sums[0] + label_sum, sums[1] + teacher_sum, sums[2] + self.loss_term_images]
            self.loss_terms.zero_()
            self.loss_term_images = 0

    def _log_loss_terms(self, epoch_end: bool = False) -> None:
        """The label and teacher terms of the loss, apart, in TensorBoard: the epoch's mean so far (at a log
        point, this process's; at the epoch's end, over all processes)."""
        if self.teacher is None:
            return
        self._sync_loss_terms()
        sums = self.progress["distill_sums"]
        if epoch_end:
            sums = self.env.sum(torch.tensor(sums, dtype=torch.float64, device=self.device)).tolist()
        if sums[2]:
            suffix = "" if epoch_end else "_running"
            self.writer.add_scalar(f"train/loss_labels{suffix}", sums[0] / sums[2], self.progress["step"])
            self.writer.add_scalar(f"train/loss_teacher{suffix}", sums[1] / sums[2], self.progress["step"])

    def _step_lr(self) -> float:
        """The rate the last step ran at (the optimizer's lr is already the next step's)."""
        lr = self.progress.get("lr")
        return self.optimizer.param_groups[0]["lr"] if lr is None else lr  # None: a checkpoint from before

    def _log_running(self, bar, t0: float, epoch: int) -> None:
        loss_sum, correct, images = self.stats.sync()[:3]
        step, seen, lr = self.progress["step"], max(images, 1), self._step_lr()
        img_s = self.env.world_size * (images - self.session_images) / max(time.perf_counter() - t0, 1e-9)
        self.writer.add_scalar("train/loss_running", loss_sum / seen, step)
        self._log_loss_terms()
        self.writer.add_scalar("lr", lr, step)
        if bar.disable and self.cfg.train.progress:  # not a terminal (a SLURM log, | tee): a plain line, no \r
            self.log(f"  epoch {epoch + 1}/{self.cfg.train.epochs} step {self.progress['batch']}/"
                     f"{self.steps_per_epoch}  loss {loss_sum / seen:.4f}  top1 {100 * correct / seen:.2f}%  "
                     f"lr {lr:.4g}  {img_s:,.0f} img/s")
        else:
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{100 * correct / seen:.1f}%", img_s=f"{img_s:.0f}",
                            refresh=False)

    def _stop_reason(self, stop: dict, stop_after_steps: int | None) -> str | None:
        """Why to stop after this step (a signal, the step budget), or None."""
        signalled = bool(stop["stop"])
        if self.env.enabled:  # processes agree every few steps: a per-step all-reduce + host sync stalls the GPU
            signalled = self.progress["step"] % STOP_SYNC_STEPS == 0 and self.env.any(signalled, self.device)
        if signalled:
            return stop["stop"] or "a signal to another process"
        if stop_after_steps is not None and self.steps_this_call >= stop_after_steps:
            return f"step budget of {stop_after_steps}"
        return None

    def _end_epoch(self, row: dict[str, Any]) -> None:
        """Evaluate, then record the epoch: TensorBoard, checkpoints, metrics.csv (from the history), a line.
        TensorBoard first: a kill before the checkpoint repeats the same points at the same step on resume,
        and one after it loses none (a resume purges only the steps after its checkpoint)."""
        progress, t0 = self.progress, time.perf_counter()
        val = evaluate(self.model, self.val_loader, self.device, env=self.env, amp=self.cfg.train.amp,
                       memory_format=self.memory_format)
        eval_time = time.perf_counter() - t0
        progress["wall"] += eval_time
        row = {**row, "val_loss": val["loss"], "val_top1": val["top1"], "val_top5": val["top5"], "eval_time": eval_time}
        self._log_epoch(row)
        progress["history"].append(row)
        progress["pending"] = None
        is_best = val["top1"] > progress["best_top1"]
        if is_best:  # best first: a kill between the two writes re-runs the evaluation and rewrites both
            progress["best_top1"] = val["top1"]
            self._checkpoint("best.pt", lean=True)
        self._checkpoint("last.pt")
        if self.main:
            write_text(self.run_dir / "metrics.csv", metrics_csv(progress["history"]))
        top5 = "" if val["top5"] is None else f"top5 {val['top5']:5.2f}%  "
        self.log(f"epoch {row['epoch']:>3}/{self.cfg.train.epochs}  train loss {row['train_loss']:.4f} "
                 f"top1 {row['train_top1']:5.2f}%  val loss {val['loss']:.4f} top1 {val['top1']:5.2f}% "
                 f"{top5}lr {row['lr']:.4g}  {row['img_s']:,.0f} img/s  "
                 f"{row['epoch_time']:.1f}s{'  *best' if is_best else ''}")

    def _log_epoch(self, row: dict[str, Any]) -> None:
        """The epoch's row in TensorBoard, at its last step."""
        for key in ("train_loss", "train_top1", "train_top5", "val_loss", "val_top1", "val_top5"):
            if row.get(key) is not None:
                split, name = key.split("_")
                self.writer.add_scalar(f"{split}/{name}", row[key], row["step"])
        self.writer.add_scalar("lr", row["lr"], row["step"])  # also at epoch ends: short runs have it too
        self.writer.add_scalar("perf/img_s", row["img_s"], row["step"])
        self.writer.add_scalar("perf/epoch_time_s", row["epoch_time"], row["step"])
        self.writer.add_scalar("perf/eval_time_s", row["eval_time"], row["step"])
        self.writer.flush()

    def _finish(self) -> dict[str, Any]:
        progress = self.progress
        last = progress["history"][-1] if progress["history"] else {}
        final = {"val_top1": last.get("val_top1"), "val_top5": last.get("val_top5"), "val_loss": last.get("val_loss"),
                 "val_samples": len(self.splits.val), "val_source": self.splits.sources["val"],
                 "best_val_top1": progress["best_top1"], "params": self.report.total, "epochs": progress["epoch"],
                 "wall_s": progress["wall"]}
        if self.main:
            write_text(self.run_dir / "final.json", json.dumps(final, indent=2))  # marks the run as finished
            for key in HPARAM_METRICS:
                if final[key] is not None:  # val_top5 with fewer than 5 classes
                    self.writer.add_scalar(f"hparam/{key}", final[key], progress["step"])
            self.writer.flush()
        self.log(f"done: best val top1 {progress['best_top1']:.2f}%; checkpoints {self.run_dir / 'best.pt'} and "
                 f"last.pt; TensorBoard: tensorboard --logdir {self.run_dir / 'tb'}")
        return final
