"""Benchmarks measured side by side in one process: a CSG model against its original twin (a baseline of the
authors' comparison against the original it stands in for), and the loaders.

Runs are interleaved (CSG, original, original, CSG, ...) so machine noise hits both alike; warm-up is
excluded, the device is synchronised around every timed block, and medians over repeats are reported.
"""
from __future__ import annotations

import copy
import statistics
import time
from typing import Any, Callable

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from .compute import achieved_gflop_s, add_macs
from .config import Config
from .data import (DEVICE_PRESETS, DeviceLoader, EpochBatchSampler, build_splits, input_side, loader_kwargs,
                   use_device_loader, usable_workers)
from .device import autocast
from .distill import load_teacher
from .models.build import build_model
from .optim import build_optimizer
from .params import original_arch, report_for_config
from .errors import UserError
from .models import get_model_entry


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device, steps: int) -> float:
    """Seconds per call of ``fn`` over ``steps`` calls."""
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / steps


_NO_KERNEL_OPS = frozenset(f"aten::{n}" for n in (  # allocate or read metadata only
    "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "_local_scalar_dense", "is_same_size",
    "detach", "lift_fresh", "set_", "sym_size", "sym_stride", "sym_numel", "sym_storage_offset"))


class KernelCounter(TorchDispatchMode):
    """While active, counts the aten ops dispatched that compute (views and metadata ops excluded): on a
    GPU each would launch a kernel. Deterministic, so it stands in for launch counts where no GPU is."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not (torch.Tag.view_copy in func.tags or func.is_view or func._schema.name in _NO_KERNEL_OPS):
            self.ops += 1
        return func(*args, **(kwargs or {}))


def kernels_per_step(fn: Callable[[], Any], device: torch.device) -> int:
    """Device kernels one call of ``fn`` launches: counted by the profiler on CUDA; elsewhere, the aten ops
    dispatched that compute (views and metadata ops excluded). Launches, not FLOPs, bound small convnets on
    a fast GPU, so this is the figure to compare where no GPU is at hand."""
    if device.type == "cuda":
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            _sync(device)
        return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA
                   and not e.name.startswith(("Memcpy", "Memset")))
    with KernelCounter() as counter:
        fn()
    return counter.ops


def _twin(cfg: Config) -> Config:
    """The config bench sets beside ``cfg``: a CSG model's original (the same without CSG), or for a baseline of
    the authors' comparison (``resnet56_sep``) the original network it stands in for (``resnet56``)."""
    twin = copy.deepcopy(cfg)
    twin.model.csg = None
    if cfg.model.csg is None:
        twin.model.arch = original_arch(cfg.model.arch)  # what count-params compares a baseline with
        if twin.model.arch == cfg.model.arch:
            raise UserError("bench compares a CSG model (or a baseline such as resnet56_sep) with its original twin, "
                            "but the config has model.csg: null")
    return twin


def _subject(cfg: Config) -> str:
    return "CSG" if cfg.model.csg is not None else "baseline"


class _Subject:
    """One model with its optimizer and a fixed batch: a training step and an inference call."""

    def __init__(self, cfg: Config, device: torch.device, x: torch.Tensor, y: torch.Tensor):
        self.cfg, self.device, self.x, self.y = cfg, device, x, y
        fmt = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
        self.model = build_model(cfg).to(device, memory_format=fmt)
        self.params = sum(p.numel() for p in self.model.parameters())
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.train.amp == "fp16")
        self.criterion = nn.CrossEntropyLoss()
        self.run_model = self.model
        self.compile_s = None
        if cfg.train.compile:
            self.run_model = torch.compile(self.model, mode=cfg.train.compile_mode)
            t0 = time.perf_counter()
            self.train_step()
            self.infer()
            _sync(device)
            self.compile_s = time.perf_counter() - t0

    def train_step(self) -> None:
        self.run_model.train()
        with autocast(self.device, self.cfg.train.amp):
            loss = self.criterion(self.run_model(self.x), self.y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def infer(self) -> None:
        self.run_model.eval()
        with torch.inference_mode(), autocast(self.device, self.cfg.train.amp):
            self.run_model(self.x)

    def peak_memory_mb(self) -> float | None:
        if self.device.type != "cuda":
            return None
        torch.cuda.reset_peak_memory_stats(self.device)
        self.train_step()
        _sync(self.device)
        return torch.cuda.max_memory_allocated(self.device) / 2**20


def _teacher_forward(cfg: Config, device: torch.device, x: torch.Tensor) -> tuple[str, Callable[[], None]] | None:
    """``(the teacher's source, one forward of it as a training step runs it: eval, no grad, autocast)``, or None
    without distillation."""
    if cfg.distill is None:
        return None
    teacher = load_teacher(cfg)
    fmt = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    model = teacher.model.to(device, memory_format=fmt)
    if cfg.train.compile:
        model = torch.compile(model, mode=cfg.train.compile_mode)

    def forward() -> None:
        with torch.no_grad(), autocast(device, cfg.train.amp):
            model(x)
    return teacher.source, forward


def bench_models(cfg: Config, device: torch.device, batch_size: int, steps: int = 10, repeats: int = 5,
                 warmup: int = 3) -> dict[str, Any]:
    """Training step (forward + backward + optimizer) and eval inference, CSG against its original twin."""
    original_cfg = _twin(cfg)
    side, source = input_side(cfg.data) or (get_model_entry(cfg.model.arch).input_size,
                                            f"{cfg.model.arch}'s own size (no data at {cfg.data.root})")
    torch.manual_seed(cfg.train.seed)
    x = torch.randn(batch_size, 3, side, side, device=device)
    if cfg.train.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, cfg.model.num_classes, (batch_size,), device=device)
    subjects = {"csg": _Subject(cfg, device, x, y), "original": _Subject(original_cfg, device, x, y)}
    teacher_source, teacher_forward = _teacher_forward(cfg, device, x) or (None, None)
    for s in subjects.values():
        for _ in range(warmup):
            s.train_step()
            s.infer()
    for _ in range(warmup if teacher_forward else 0):
        teacher_forward()
    times: dict[str, dict[str, list[float]]] = {n: {"train": [], "infer": []} for n in subjects}
    teacher_times: list[float] = []
    for r in range(repeats):
        order = list(subjects) if r % 2 == 0 else list(reversed(subjects))
        for name in order:
            times[name]["train"].append(_timed(subjects[name].train_step, device, steps))
        for name in reversed(order):
            times[name]["infer"].append(_timed(subjects[name].infer, device, steps))
        if teacher_forward:
            teacher_times.append(_timed(teacher_forward, device, steps))
    result: dict[str, Any] = {"arch": cfg.model.arch, "subject": _subject(cfg),
                              "original_arch": original_cfg.model.arch, "device": str(device), "batch_size": batch_size,
                              "image_size": side, "image_size_from": source,
                              "amp": cfg.train.amp, "channels_last": cfg.train.channels_last,
                              "compile": cfg.train.compile, "steps": steps, "repeats": repeats}
    for name, s in subjects.items():
        train_s = statistics.median(times[name]["train"])
        infer_s = statistics.median(times[name]["infer"])
        result[name] = {"params": s.params, "train_step_ms": 1e3 * train_s, "train_img_s": batch_size / train_s,
                        "infer_ms": 1e3 * infer_s, "infer_img_s": batch_size / infer_s,
                        "peak_memory_mb": s.peak_memory_mb(), "compile_s": s.compile_s,
                        # a dispatch-level count would see the eager fallback, not the compiled CPU code
                        "kernels_per_step": None if s.compile_s is not None and device.type != "cuda"
                        else kernels_per_step(s.train_step, device)}
    _add_compute(result, {"csg": cfg, "original": original_cfg}, side)
    c, o = result["csg"], result["original"]
    if teacher_forward:  # what distillation adds to each training step: one forward of the teacher
        result["teacher"] = {"source": teacher_source, "forward_ms": 1e3 * statistics.median(teacher_times)}
        result["teacher"]["share_of_csg_step"] = result["teacher"]["forward_ms"] / c["train_step_ms"]
    result["ratios"] = {"train_step": c["train_step_ms"] / o["train_step_ms"], "infer": c["infer_ms"] / o["infer_ms"],
                        "params": c["params"] / o["params"]}
    if c["kernels_per_step"] is not None:
        result["ratios"]["kernels_per_step"] = c["kernels_per_step"] / o["kernels_per_step"]
    if c["peak_memory_mb"] is not None:
        result["ratios"]["peak_memory"] = c["peak_memory_mb"] / o["peak_memory_mb"]
    return result


def _add_compute(result: dict[str, Any], configs: dict[str, Config], side: int) -> None:
    """The counted forward MACs per image beside the measured rates: achieved GFLOP/s, 2 FLOPs a MAC over the
    forward pass (a training step's backward does about twice the forward's work again, not counted here). Each
    subject is counted from its own config (a baseline's original is another network)."""
    for name, cfg in configs.items():
        macs = add_macs(report_for_config(cfg.model), cfg.model, [3, side, side],
                        f"{side}x{side} benchmark batches").macs
        r = result[name]
        r["macs"] = macs.per_image
        r["generation_macs"] = macs.generation if macs.per_image is not None else 0
        r["train_gflop_s"] = achieved_gflop_s(r["macs"], r["train_img_s"])
        if "infer_img_s" in r:
            r["infer_gflop_s"] = achieved_gflop_s(r["macs"], r["infer_img_s"])
        if macs.error:
            result["macs_error"] = macs.error


def bench_loaders(cfg: Config, device: torch.device, batches: int = 50) -> dict[str, Any]:
    """Images per second of each loader kind alone (batches delivered on the device, nothing trained)."""
    from torch.utils.data import DataLoader

    splits = build_splits(cfg.data, cfg.model.num_classes)
    if splits.train is None:
        raise UserError("bench --data needs a training split")
    results = {}
    kinds = ["torch"] + (["device"] if splits.preset in DEVICE_PRESETS else [])
    for kind in kinds:
        sampler = EpochBatchSampler(len(splits.train), cfg.data.batch_size, cfg.train.seed)
        t0 = time.perf_counter()
        if kind == "device":
            loader = DeviceLoader(splits.train, device, sampler, workers=usable_workers(cfg.data))
        else:
            loader = DataLoader(splits.train, batch_sampler=sampler, **loader_kwargs(cfg.data, device))
        setup_s = time.perf_counter() - t0
        n, epoch = 0, 0
        _sync(device)
        t0 = None
        while n < batches:
            sampler.set_epoch(epoch)
            for i, (x, _) in enumerate(loader):
                x = x.to(device, non_blocking=True)
                if t0 is None and i == 2:  # after the first batches: workers started, caches warm
                    _sync(device)
                    t0, n = time.perf_counter(), 0
                elif t0 is not None:
                    n += 1
                if n >= batches:
                    break
            epoch += 1
        _sync(device)
        elapsed = time.perf_counter() - t0
        results[kind] = {"img_s": n * cfg.data.batch_size / elapsed, "setup_s": setup_s,
                         "workers": 0 if kind == "device" else usable_workers(cfg.data)}
    if "device" in results:
        results["ratio_device_over_torch"] = results["device"]["img_s"] / results["torch"]["img_s"]
    return {"dataset": cfg.data.name, "device": str(device), "batch_size": cfg.data.batch_size, "loaders": results}


def bench_epochs(cfg: Config, device: torch.device, epochs: int = 3) -> dict[str, Any]:
    """Whole training epochs of ``acl train`` (the real loop: loader, logging, checkpoints), CSG and original.

    The first epoch of each run is reported apart as warm-up (cudnn autotuning, ``torch.compile``); the
    epoch time is the training pass alone, as ``metrics.csv`` records it, synchronised with the device.
    """
    import csv
    import json
    import tempfile
    from pathlib import Path

    from .training import TrainingInterrupted, train

    twin = _twin(cfg)
    if epochs < 2:
        raise UserError("--epochs must be >= 2: the first epoch is warm-up")
    splits = build_splits(cfg.data, cfg.model.num_classes)
    loader = "device" if splits.train is not None and use_device_loader(splits.train, cfg.data, device) else "torch"
    result: dict[str, Any] = {"arch": cfg.model.arch, "subject": _subject(cfg), "original_arch": twin.model.arch,
                              "device": str(device), "batch_size": cfg.data.batch_size,
                              "amp": cfg.train.amp, "channels_last": cfg.train.channels_last,
                              "compile": cfg.train.compile, "loader": loader, "epochs": epochs}
    for name in ("csg", "original"):
        run_cfg = copy.deepcopy(cfg if name == "csg" else twin)
        run_cfg.train.epochs, run_cfg.train.device, run_cfg.train.progress = epochs, str(device), False
        with tempfile.TemporaryDirectory() as tmp:
            try:
                final = train(run_cfg, Path(tmp) / "run", log=lambda *a: None)
            except TrainingInterrupted:  # a signal; the run directory is temporary, so nothing to resume
                raise KeyboardInterrupt from None
            with open(Path(tmp) / "run" / "metrics.csv", newline="") as f:
                rows = list(csv.DictReader(f))
            macs = json.loads((Path(tmp) / "run" / "params.json").read_text())["macs"]  # as the run counted them
        times = [float(r["epoch_time"]) for r in rows]
        images = round(float(rows[-1]["img_s"]) * float(rows[-1]["epoch_time"]))
        steady = statistics.median(times[1:])
        result[name] = {"params": final["params"], "images_per_epoch": images, "warmup_epoch_s": times[0],
                        "epoch_s": steady, "train_img_s": images / steady, "val_top1": final["val_top1"],
                        "macs": macs["per_image"], "train_gflop_s": achieved_gflop_s(macs["per_image"], images / steady)}
    result["ratios"] = {"epoch": result["csg"]["epoch_s"] / result["original"]["epoch_s"]}
    return result


def _title(r: dict[str, Any]) -> str:
    """What was measured against what: the arch, or for a baseline the arch and the original it stands in for."""
    return r["arch"] if r.get("subject", "CSG") == "CSG" else f"{r['arch']} (baseline) against {r['original_arch']}"


def _header(r: dict[str, Any], width: int) -> str:
    subject = r.get("subject", "CSG")  # results from before baselines were benchmarked: CSG
    ratio = "CSG/original" if subject == "CSG" else "ratio"
    return f"{'':<{width}}{subject:>14}{'original':>14}{ratio:>14}"


def format_epochs(r: dict[str, Any]) -> str:
    lines = [f"{_title(r)} on {r['device']}: acl train epochs, batch {r['batch_size']}, amp {r['amp']}, "
             f"channels_last {r['channels_last']}, compile {r['compile']}, {r['loader']} loader; median of epochs "
             f"2..{r['epochs']}",
             _header(r, 24)]
    c, o = r["csg"], r["original"]
    lines.append(f"{'params':<24}{c['params']:>14,}{o['params']:>14,}")
    lines.append(f"{'images per epoch':<24}{c['images_per_epoch']:>14,}{o['images_per_epoch']:>14,}")
    lines.append(f"{'warm-up epoch (s)':<24}{c['warmup_epoch_s']:>14.2f}{o['warmup_epoch_s']:>14.2f}")
    lines.append(f"{'epoch (s)':<24}{c['epoch_s']:>14.3f}{o['epoch_s']:>14.3f}{r['ratios']['epoch']:>14.3f}")
    lines.append(f"{'train img/s':<24}{c['train_img_s']:>14,.0f}{o['train_img_s']:>14,.0f}")
    if c["macs"] is not None and o["macs"] is not None:
        lines.append(f"{'MACs per image':<24}{c['macs']:>14,}{o['macs']:>14,}")
        lines.append(f"{'train GFLOP/s (fwd)':<24}{c['train_gflop_s']:>14.2f}{o['train_gflop_s']:>14.2f}")
    return "\n".join(lines)


def format_models(r: dict[str, Any]) -> str:
    rows = [("params", "{:,}", "params"), ("train step (ms)", "{:.2f}", "train_step_ms"),
            ("train img/s", "{:,.0f}", "train_img_s"), ("inference (ms)", "{:.2f}", "infer_ms"),
            ("inference img/s", "{:,.0f}", "infer_img_s"), ("peak memory (MiB)", "{:.0f}", "peak_memory_mb"),
            ("kernels per step", "{:,}", "kernels_per_step"), ("compile (s)", "{:.1f}", "compile_s"),
            ("MACs per image", "{:,}", "macs"), ("generation MACs/pass", "{:,}", "generation_macs"),
            ("train GFLOP/s (fwd)", "{:.2f}", "train_gflop_s"), ("inference GFLOP/s", "{:.2f}", "infer_gflop_s")]
    ratio_of = {"params": "params", "train_step_ms": "train_step", "infer_ms": "infer", "peak_memory_mb": "peak_memory",
                "kernels_per_step": "kernels_per_step"}
    lines = [f"{_title(r)} on {r['device']}, batch {r['batch_size']} of {r['image_size']}x{r['image_size']} images "
             f"({r['image_size_from']}), amp {r['amp']}, channels_last "
             f"{r['channels_last']}, compile {r['compile']}; median of {r['repeats']} x {r['steps']} steps",
             _header(r, 20)]
    for label, fmt, key in rows:
        c, o = r["csg"][key], r["original"][key]
        if c is None:
            continue
        ratio = r["ratios"].get(ratio_of.get(key, ""), None)
        lines.append(f"{label:<20}{fmt.format(c):>14}{fmt.format(o):>14}"
                     f"{'' if ratio is None else f'{ratio:.3f}':>14}")
    if r.get("macs_error"):
        lines.append(f"MACs not counted: {r['macs_error']}")
    if r.get("teacher"):
        t = r["teacher"]
        lines.append(f"distillation: the teacher {t['source']} adds {t['forward_ms']:.2f} ms of forward pass to each "
                     f"training step ({t['share_of_csg_step']:.0%} of the CSG step without it)")
    return "\n".join(lines)


def format_loaders(r: dict[str, Any]) -> str:
    lines = [f"{r['dataset']} loaders on {r['device']}, batch {r['batch_size']}"]
    for kind, v in r["loaders"].items():
        if isinstance(v, dict):
            lines.append(f"{kind:<8}{v['img_s']:>12,.0f} img/s  ({v['workers']} workers, setup {v['setup_s']:.1f}s)")
    if "ratio_device_over_torch" in r["loaders"]:
        lines.append(f"device / torch: {r['loaders']['ratio_device_over_torch']:.2f}x")
    return "\n".join(lines)
