"""Training and evaluation: config -> model and data -> loop -> logs and checkpoints."""
from __future__ import annotations

import csv
import json
import math
import shutil
import signal
import sys
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from . import distributed
from .checkpoint import copy_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import Config, OptimConfig, ScheduleConfig, build_config
from .csg import GeneratedConv2d, SliceGenerator, find_generator
from .data import DataSplits, DeviceLoader, build_splits, eval_loader, train_loader
from .errors import UserError
from .models import create_model
from .params import format_report, report_for_config

STOP_SYNC_STEPS = 10  # under torchrun, how often the processes agree whether a signal asks them to stop
METRIC_FIELDS = ["epoch", "step", "lr", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5",
                 "epoch_time", "img_s"]


class TrainingInterrupted(UserError):
    """Raised after a clean stop (signal or step budget) once ``last.pt`` is written."""

    def __init__(self, message: str, run_dir: Path):
        super().__init__(message)
        self.run_dir = run_dir


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"train.device is {name!r} but no CUDA device is available; use auto or cpu")
    return torch.device(name)


def build_model(cfg: Config) -> nn.Module:
    csg = None if cfg.model.csg is None else asdict(cfg.model.csg)
    try:
        return create_model(cfg.model.arch, cfg.model.num_classes, csg)
    except ValueError as e:
        raise UserError(f"model: {e}") from None


@torch.no_grad()
def load_generator(model: nn.Module, source: str | Path) -> None:
    """Copy the trained generator of another run (any architecture with the same slice shape and code size)."""
    generator = find_generator(model)
    state = load_checkpoint(source)
    weight = state["model"].get("csg.weight")
    if weight is None:
        raise UserError(f"model.csg.init_from: {source} holds an original network, no CSG generator")
    if generator is None or weight.shape != generator.weight.shape:
        src = state["config"]["model"].get("csg") or {}
        mine = "none" if generator is None else f"slice {list(generator.slice_shape)}, code {generator.code_size}"
        raise UserError(f"model.csg.init_from: {source} has a generator for slice {src.get('slice_shape')}, code "
                        f"{src.get('code_size')}; this model needs {mine}")
    generator.weight.copy_(weight)


# --------------------------------------------------------------------------------------------------
# Optimizer and schedule


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict[str, Any]]:
    """Split parameters into decayed and not decayed per ``decay_csg`` / ``decay_norm``."""
    decay, no_decay, seen = [], [], set()
    norms = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if id(p) in seen or not p.requires_grad:
                continue
            seen.add(id(p))
            is_csg = isinstance(module, SliceGenerator) or (isinstance(module, GeneratedConv2d) and name == "codes")
            is_norm_or_bias = isinstance(module, norms) or name == "bias"
            skip = (is_csg and not cfg.decay_csg) or (is_norm_or_bias and not cfg.decay_norm)
            (no_decay if skip else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(model: nn.Module, cfg: OptimConfig, lr_factor: float = 1.0) -> torch.optim.Optimizer:
    groups, lr = param_groups(model, cfg), cfg.lr * lr_factor
    fused = {"fused": True} if cfg.fused else {}  # one kernel for the whole update instead of a few per tensor list
    try:
        if cfg.name == "sgd":
            return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov, **fused)
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg.betas), **fused)
    except (RuntimeError, TypeError) as e:  # a torch without fused kernels for this optimizer or device
        raise UserError(f"optim.fused: {str(e).splitlines()[0]}") from None


def build_scheduler(optimizer, cfg: ScheduleConfig, epochs: int, steps_per_epoch: int):
    """A per-step schedule; milestones and warmup are given in epochs."""
    lrs = torch.optim.lr_scheduler
    total = epochs * steps_per_epoch
    if cfg.name == "onecycle":
        if cfg.warmup_epochs:
            raise UserError("schedule.warmup_epochs: onecycle has its own warmup (schedule.pct_start)")
        max_lr = [g["lr"] for g in optimizer.param_groups]
        return lrs.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total, pct_start=cfg.pct_start)
    warmup = min(round(cfg.warmup_epochs * steps_per_epoch), total)
    if cfg.name == "multistep":
        milestones = [max(1, round(m * steps_per_epoch) - warmup) for m in cfg.milestones]
        main = lrs.MultiStepLR(optimizer, milestones=milestones, gamma=cfg.gamma)
    elif cfg.name == "cosine":
        main = lrs.CosineAnnealingLR(optimizer, T_max=max(1, total - warmup), eta_min=cfg.min_lr)
    else:
        main = lrs.ConstantLR(optimizer, factor=1.0, total_iters=0)
    if warmup == 0:
        return main
    ramp = lrs.LinearLR(optimizer, start_factor=cfg.warmup_factor, end_factor=1.0, total_iters=warmup)
    return lrs.SequentialLR(optimizer, [ramp, main], milestones=[warmup])


# --------------------------------------------------------------------------------------------------
# Evaluation


def _top1_top5_correct(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    hits = logits.topk(min(5, logits.shape[1]), dim=1).indices == targets[:, None]  # best first
    return hits[:, 0].sum(), hits.any(dim=1).sum()


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, progress: bool = False,
             env: distributed.DistEnv = distributed.SINGLE_PROCESS, amp: str = "off",
             memory_format: torch.memory_format = torch.contiguous_format) -> dict[str, float]:
    """Loss, top-1 and top-5 (percent) and the sample count over a loader (summed over all processes)."""
    model.eval()
    sums = torch.zeros(3, device=device, dtype=torch.float64)  # loss, top-1, top-5
    n = 0  # counted on the host: no device copy per batch
    for x, y in tqdm(loader, desc="eval", leave=False, disable=not progress, dynamic_ncols=True):
        x = x.to(device, non_blocking=True, memory_format=memory_format)
        y = y.to(device, non_blocking=True)
        with _autocast(device, amp):
            logits = model(x)
        top1, top5 = _top1_top5_correct(logits, y)
        sums += torch.stack([F.cross_entropy(logits.float(), y, reduction="sum").double(), top1, top5])
        n += y.numel()
    loss, top1, top5, n = env.sum(torch.cat([sums, sums.new_tensor([n])])).tolist()
    if n == 0:
        raise UserError("the evaluation split is empty")
    return {"loss": loss / n, "top1": 100.0 * top1 / n, "top5": 100.0 * top5 / n, "samples": int(n)}


# --------------------------------------------------------------------------------------------------
# Training


@contextmanager
def _stop_on_signals() -> Iterator[dict]:
    """First SIGINT/SIGTERM asks the loop to stop after the current step; a second Ctrl-C stops at once."""
    flag = {"stop": None}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag["stop"] is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag["stop"] = signal.Signals(signum).name
        print(f"\n{flag['stop']} received: stopping after this step (Ctrl-C again to quit at once)",
              file=sys.stderr, flush=True)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _check_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse before anything is built or written."""
    if resume:
        if not (run_dir / "last.pt").is_file():
            raise UserError(f"cannot resume: {run_dir / 'last.pt'} does not exist")
    elif run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} is a file")
    elif run_dir.exists() and any(run_dir.iterdir()) and not overwrite:
        raise UserError(f"run directory {run_dir} already exists; use --resume {run_dir} to continue it, "
                        "--overwrite to replace it, or --out for another folder")


def _open_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    try:
        if overwrite and not resume and run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        for stale in run_dir.glob(".*.tmp"):  # left by a process killed while writing a checkpoint
            stale.unlink()
    except OSError as e:
        raise UserError(f"cannot prepare run directory {run_dir}: {e.strerror or e}") from None


def _rewrite_metrics(path: Path, keep_epochs: int) -> None:
    """On resume, drop rows of epochs the checkpoint had not finished (they are run again)."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f)
                if (r.get("epoch") or "").isdigit() and int(r["epoch"]) <= keep_epochs and None not in r.values()]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=METRIC_FIELDS)
        w.writeheader()
        w.writerows(rows)


def resume_config(run_dir: str | Path, overrides: tuple[str, ...] = ()) -> Config:
    """The config stored in a run's ``last.pt``, with overrides (e.g. more epochs) applied."""
    from .config import apply_overrides

    _check_run_dir(Path(run_dir), resume=True, overwrite=False)
    state = load_checkpoint(Path(run_dir) / "last.pt")
    return build_config(apply_overrides(state["config"], overrides))


def train(cfg: Config, run_dir: str | Path, *, resume: bool = False, overwrite: bool = False,
          stop_after_steps: int | None = None, log=print) -> dict[str, Any]:
    """Train ``cfg`` into ``run_dir``; returns the final metrics.

    ``resume`` continues from ``run_dir/last.pt`` exactly where it stopped. ``stop_after_steps`` ends this
    call cleanly after that many steps (a checkpoint is written), as SIGINT or SIGTERM would.
    """
    with _stop_on_signals() as stop:
        return _train(cfg, Path(run_dir), resume, overwrite, stop_after_steps, log, stop)


class _NullWriter:
    """Stands in for the SummaryWriter on processes other than rank 0."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


class _EpochStats:
    """The training loss and top-1 count of each step, written into a device buffer (a few kernels per step,
    no host sync) and read back where the loop syncs anyway: log points, checkpoints, the epoch's end.
    Reading back finds the first non-finite loss and names its step; since every checkpoint reads back
    first, a checkpoint never holds weights updated from a NaN loss."""

    def __init__(self, device: torch.device, steps_per_epoch: int, run_dir: Path):
        self.buffer = torch.zeros(steps_per_epoch, 2, device=device)  # loss, correct (exact: < 2**24)
        self.steps_per_epoch, self.run_dir = steps_per_epoch, run_dir
        self.start([0.0, 0, 0])

    def start(self, sums: list) -> None:
        """An epoch (or the rest of one), continuing from its ``[loss sum, correct, images]`` so far."""
        self.loss_sum, self.correct, self.images = float(sums[0]), int(sums[1]), int(sums[2])
        self.pending: list[tuple[int, int]] = []  # (step, images) of the rows not read back yet

    def record(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, step: int) -> None:
        row = self.buffer[len(self.pending)]
        row[0] = loss.detach()
        row[1] = (logits.argmax(1) == y).sum()
        self.pending.append((step, y.numel()))

    def sync(self) -> list:
        """Add the pending rows to the sums (in step order, so a resumed run sums exactly alike)."""
        if self.pending:
            rows = self.buffer[: len(self.pending)].tolist()
            for (step, images), (loss, correct) in zip(self.pending, rows, strict=True):
                if not math.isfinite(loss):
                    raise UserError(f"loss is {loss} at step {step + 1} (epoch {step // self.steps_per_epoch + 1}); "
                                    f"last good checkpoint: {self.run_dir / 'last.pt'}; lower optim.lr, or "
                                    "train.on_nonfinite: skip")
                self.loss_sum += loss * images
                self.correct += int(correct)
                self.images += images
            self.pending = []
        return [self.loss_sum, self.correct, self.images]


def _autocast(device: torch.device, amp: str):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def _train(cfg: Config, run_dir: Path, resume: bool, overwrite: bool, stop_after_steps: int | None, log,
           stop: dict) -> dict[str, Any]:
    env, device = distributed.setup(resolve_device(cfg.train.device))
    try:
        return _train_loop(cfg, run_dir, resume, overwrite, stop_after_steps, log if env.is_main else _quiet,
                           stop, env, device)
    finally:
        distributed.teardown()


def _quiet(*args, **kwargs) -> None:
    pass


def _restore(path: Path, cfg: Config, model: nn.Module, optimizer, scheduler, scaler, log) -> dict[str, Any]:
    """Load a run's state into freshly built objects; returns its progress."""
    state = load_checkpoint(path)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise UserError(f"{path} does not fit this model: {str(e).splitlines()[0]}") from None
    optimizer.load_state_dict(state["optimizer"])
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    progress = state["progress"]
    old = build_config(state["config"])
    if (old.schedule, old.train.epochs) == (cfg.schedule, cfg.train.epochs):
        scheduler.load_state_dict(state["scheduler"])
    else:  # the budget or schedule changed: the new schedule, at the step reached
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(progress["step"]):
                scheduler.step()
        log(f"schedule rebuilt for {cfg.train.epochs} epochs; lr now {optimizer.param_groups[0]['lr']:.4g}")
    set_rng_state(state["rng"])
    return progress


def _open_logs(run_dir: Path, cfg: Config, report, resume: bool, overwrite: bool, progress: dict):
    """Create (or reopen) the run directory's files; returns the TensorBoard writer."""
    from torch.utils.tensorboard import SummaryWriter

    _open_run_dir(run_dir, resume, overwrite)
    metrics_path = run_dir / "metrics.csv"
    try:
        (run_dir / "config.yaml").write_text(cfg.to_yaml())
        (run_dir / "params.json").write_text(json.dumps(report.to_dict(per_layer=True), indent=2))
        if resume:
            _rewrite_metrics(metrics_path, progress["epoch"])
        if not metrics_path.exists():
            metrics_path.write_text(",".join(METRIC_FIELDS) + "\n")
    except OSError as e:
        raise UserError(f"cannot write to run directory {run_dir}: {e.strerror or e}") from None
    writer = SummaryWriter(str(run_dir / "tb"), purge_step=progress["step"] if resume else None)
    if not resume:
        writer.add_text("params", format_report(report, "markdown"))
        writer.add_text("config", "```yaml\n" + cfg.to_yaml() + "```")
    return writer


def _train_loop(cfg: Config, run_dir: Path, resume: bool, overwrite: bool, stop_after_steps: int | None, log,
                stop: dict, env: distributed.DistEnv, device: torch.device) -> dict[str, Any]:
    main = env.is_main
    if main:  # only rank 0 owns the run directory
        _check_run_dir(run_dir, resume, overwrite)
    torch.manual_seed(cfg.train.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    # Data: every process takes its own share of each epoch and of the validation set.
    splits: DataSplits = build_splits(cfg.data, cfg.model.num_classes)
    if splits.train is None:
        raise UserError(f"{cfg.data.name}: no training folder at {Path(cfg.data.root) / 'train'}")
    loader = train_loader(splits.train, cfg.data, cfg.train.seed, device, env.rank, env.world_size)
    val_loader = eval_loader(splits.val, cfg.data, device, env.rank, env.world_size)
    sampler = loader.batch_sampler
    steps_per_epoch = sampler.batches_per_epoch()

    # Model, optimizer, schedule. ``model`` stays the plain module: checkpoints never carry wrapper prefixes.
    model = build_model(cfg)
    if cfg.model.csg and cfg.model.csg.init_from and not resume:
        load_generator(model, cfg.model.csg.init_from)
    if cfg.train.sync_bn and env.enabled:
        if device.type != "cuda":
            raise UserError("train.sync_bn: SyncBatchNorm needs CUDA devices; set it false for CPU processes")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    model.to(memory_format=memory_format)
    lr_factor = env.world_size if cfg.optim.lr_scaling == "linear" else 1
    optimizer = build_optimizer(model, cfg.optim, lr_factor)
    scheduler = build_scheduler(optimizer, cfg.schedule, cfg.train.epochs, steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.train.amp == "fp16")
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.train.label_smoothing)
    report = report_for_config(cfg.model, model)

    progress = {"epoch": 0, "batch": 0, "step": 0, "best_top1": -1.0, "wall": 0.0,
                "epoch_sums": [0.0, 0, 0]}  # loss sum, correct, images of the epoch in progress (this process)
    if resume:
        progress.update(_restore(run_dir / "last.pt", cfg, model, optimizer, scheduler, scaler, log))
        log(f"resuming {run_dir} at epoch {progress['epoch'] + 1}, step {progress['step']}")
    if progress["epoch"] >= cfg.train.epochs:
        raise UserError(f"{run_dir} already finished {progress['epoch']} epochs; "
                        f"to train longer: acl train --resume {run_dir} --set train.epochs=N")

    train_model: nn.Module = model
    if env.enabled:
        # gradient_as_bucket_view: gradients live in the all-reduce buckets, no copy in and out per step
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                          else None, gradient_as_bucket_view=True)
    if cfg.train.compile:
        train_model = torch.compile(train_model, mode=cfg.train.compile_mode)

    # Everything is validated: only now touch the run directory.
    metrics_path = run_dir / "metrics.csv"
    writer = _open_logs(run_dir, cfg, report, resume, overwrite, progress) if main else _NullWriter()
    smaller = f" ({report.compression:.2f}x fewer than the original)" if cfg.model.csg else ""
    procs = f" x {env.world_size} processes (lr x {lr_factor})" if env.enabled else ""
    feed = "device loader" if isinstance(loader, DeviceLoader) else f"DataLoader, {cfg.data.workers} workers"
    log(f"{cfg.model.arch}{' CSG' if cfg.model.csg else ''}: {report.total:,} params{smaller}, "
        f"{len(splits.train):,} train / {len(splits.val):,} val images, {steps_per_epoch} steps per epoch on "
        f"{device}{procs} ({feed}); logs in {run_dir}")

    def checkpoint(path: Path) -> None:
        if main:
            save_checkpoint({"config": cfg.to_dict(), "model": model.state_dict(),
                             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                             "scaler": scaler.state_dict() if scaler.is_enabled() else None, "rng": rng_state(),
                             "progress": dict(progress), "params": report.total}, path)

    stats = _EpochStats(device, steps_per_epoch, run_dir)
    steps_this_call = 0
    val: dict[str, float] = {}
    try:
        for epoch in range(progress["epoch"], cfg.train.epochs):
            sampler.set_epoch(epoch, progress["batch"])
            train_model.train()
            stats.start(progress["epoch_sums"])
            wall_base, t0 = progress["wall"], time.perf_counter()
            bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", leave=False, dynamic_ncols=True,
                       disable=not (cfg.train.progress and main), initial=progress["batch"], total=steps_per_epoch)
            for x, y in bar:
                x = x.to(device, non_blocking=True, memory_format=memory_format)
                y = y.to(device, non_blocking=True)
                with _autocast(device, cfg.train.amp):
                    logits = train_model(x)
                    loss = criterion(logits, y)
                if cfg.train.on_nonfinite == "skip" and not torch.isfinite(loss):  # a host sync, only here
                    log(f"warning: loss is {loss.item()} at step {progress['step'] + 1} (epoch {epoch + 1}); "
                        "update skipped")
                    progress["skipped"] = progress.get("skipped", 0) + 1
                else:
                    stats.record(loss, logits, y, progress["step"])
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    if cfg.optim.grad_clip:
                        scaler.unscale_(optimizer)
                        nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
                    scaler.step(optimizer)
                    scaler.update()
                scheduler.step()  # the schedule follows batches, skipped ones too
                progress["step"] += 1
                progress["batch"] += 1
                steps_this_call += 1
                if main and progress["step"] % cfg.train.log_every_steps == 0:
                    loss_sum, correct, images = stats.sync()
                    elapsed, seen = time.perf_counter() - t0, max(images, 1)
                    writer.add_scalar("train/loss_running", loss_sum / seen, progress["step"])
                    writer.add_scalar("lr", optimizer.param_groups[0]["lr"], progress["step"])
                    bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{100 * correct / seen:.1f}%",
                                    img_s=f"{env.world_size * images / max(elapsed, 1e-9):.0f}", refresh=False)
                signalled = bool(stop["stop"])
                if env.enabled:  # processes agree every few steps: a per-step all-reduce + host sync stalls the GPU
                    signalled = progress["step"] % STOP_SYNC_STEPS == 0 and env.any(signalled, device)
                stop_now = signalled or (stop_after_steps is not None and steps_this_call >= stop_after_steps)
                every = cfg.train.checkpoint_every_steps
                if stop_now or (every and progress["step"] % every == 0):
                    progress["epoch_sums"] = stats.sync()
                    progress["wall"] = wall_base + time.perf_counter() - t0
                    checkpoint(run_dir / "last.pt")
                if stop_now:
                    why = stop["stop"] or ("a signal to another process" if signalled else
                                           f"step budget of {stop_after_steps}")
                    raise TrainingInterrupted(
                        f"stopped ({why}) at epoch {epoch + 1}, step {progress['step']}; "
                        f"{run_dir / 'last.pt'} written. Resume with: acl train --resume {run_dir}", run_dir)
            bar.close()
            sums = stats.sync()
            epoch_time = time.perf_counter() - t0
            loss_sum, correct, images = env.sum(torch.tensor(sums, dtype=torch.float64, device=device)).tolist()
            env.broadcast_buffers(model)
            val = evaluate(model, val_loader, device, env=env, amp=cfg.train.amp, memory_format=memory_format)
            progress.update(epoch=epoch + 1, batch=0, epoch_sums=[0.0, 0, 0])
            progress["wall"] = wall_base + time.perf_counter() - t0
            row = {"epoch": epoch + 1, "step": progress["step"], "lr": optimizer.param_groups[0]["lr"],
                   "train_loss": loss_sum / max(images, 1), "train_top1": 100 * correct / max(images, 1),
                   "val_loss": val["loss"], "val_top1": val["top1"], "val_top5": val["top5"],
                   "epoch_time": epoch_time, "img_s": images / epoch_time}
            is_best = val["top1"] > progress["best_top1"]
            if is_best:  # best first: a kill between the two writes re-runs the epoch and rewrites both
                progress["best_top1"] = val["top1"]
                checkpoint(run_dir / "best.pt")
                if main:
                    copy_checkpoint(run_dir / "best.pt", run_dir / "last.pt")
            else:
                checkpoint(run_dir / "last.pt")
            if main:
                with open(metrics_path, "a", newline="") as f:
                    csv.DictWriter(f, fieldnames=METRIC_FIELDS).writerow({k: row[k] for k in METRIC_FIELDS})
            for key in ("train_loss", "train_top1", "val_loss", "val_top1", "val_top5"):
                split, name = key.split("_")
                writer.add_scalar(f"{split}/{name}", row[key], progress["step"])
            writer.add_scalar("perf/img_s", row["img_s"], progress["step"])
            writer.add_scalar("perf/epoch_time_s", epoch_time, progress["step"])
            writer.flush()
            log(f"epoch {epoch + 1:>3}/{cfg.train.epochs}  train loss {row['train_loss']:.4f} "
                f"top1 {row['train_top1']:5.2f}%  val loss {val['loss']:.4f} top1 {val['top1']:5.2f}% "
                f"top5 {val['top5']:5.2f}%  lr {row['lr']:.4g}  {row['img_s']:,.0f} img/s  "
                f"{epoch_time:.1f}s{'  *best' if is_best else ''}")
        final = {"val_top1": val.get("top1"), "val_top5": val.get("top5"), "val_loss": val.get("loss"),
                 "val_samples": val.get("samples"), "best_val_top1": progress["best_top1"], "params": report.total,
                 "epochs": progress["epoch"], "wall_s": progress["wall"]}
        if main:
            hparams = {"arch": cfg.model.arch, "csg": json.dumps(asdict(cfg.model.csg)) if cfg.model.csg else "none",
                       "lr": cfg.optim.lr, "batch_size": cfg.data.batch_size, "epochs": cfg.train.epochs,
                       "params": report.total}
            (run_dir / "final.json").write_text(json.dumps(final, indent=2))  # marks the run as finished
            writer.add_hparams(hparams, {f"hparam/{k}": v for k, v in final.items() if v is not None}, run_name=".")
        log(f"done: best val top1 {progress['best_top1']:.2f}%; checkpoints {run_dir / 'best.pt'} and last.pt; "
            f"TensorBoard: tensorboard --logdir {run_dir / 'tb'}")
        return final
    finally:
        writer.close()


def load_model(path: str | Path, overrides: tuple[str, ...] = ()) -> tuple[nn.Module, Config, dict[str, Any]]:
    """The model of a checkpoint rebuilt from its config alone (with overrides), in eval mode."""
    from .config import apply_overrides

    state = load_checkpoint(path)
    cfg = build_config(apply_overrides(state["config"], overrides))
    model = build_model(cfg)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise UserError(f"{path}: weights do not fit {cfg.model.arch}: {str(e).splitlines()[0]}") from None
    return model.eval(), cfg, state


def evaluate_checkpoint(path: str | Path, split: str = "val", overrides: tuple[str, ...] = (),
                        device: str = "auto", batch_size: int | None = None) -> dict[str, Any]:
    """Rebuild the model from a checkpoint alone and evaluate it on a split of its (overridden) data."""
    model, cfg, _ = load_model(path, overrides)
    dev = resolve_device(device)
    model.to(dev)
    if batch_size:
        cfg.data.eval_batch_size = batch_size
    splits = build_splits(cfg.data, cfg.model.num_classes)
    metrics = evaluate(model, eval_loader(splits.get(split), cfg.data, dev), dev, progress=cfg.train.progress)
    metrics["params"] = sum(p.numel() for p in model.parameters())
    return metrics
