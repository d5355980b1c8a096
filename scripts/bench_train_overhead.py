#!/usr/bin/env python3
"""`acl train` against a bare PyTorch loop on the same model, data and optimizer, side by side.

    python scripts/bench_train_overhead.py                      # CSG ResNet-20 on digits, CPU
    python scripts/bench_train_overhead.py --config configs/cifar10/resnet56_csg_12_72.yaml --set data.root=~/data

Both run the same epochs twice, interleaved (bare, acl, acl, bare); the first epoch of every run is warm-up.
Reports the median training-epoch time of each and their ratio (target: acl <= 1.10 x bare), and acl's
whole epoch including evaluation and checkpoints.
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from acl_cli.config import load_config  # noqa: E402
from acl_cli.data import build_splits  # noqa: E402
from acl_cli.device import resolve_device  # noqa: E402
from acl_cli.models.build import build_model
from acl_cli.training import train


def bare_loop(cfg, device, epochs: int) -> list[float]:
    """What a user would write by hand: DataLoader, forward, loss, backward, step."""
    torch.manual_seed(cfg.train.seed)
    splits = build_splits(cfg.data, cfg.model.num_classes)
    loader = DataLoader(splits.train, batch_size=cfg.data.batch_size, shuffle=True, drop_last=True,
                        num_workers=cfg.data.workers, pin_memory=device.type == "cuda",
                        persistent_workers=cfg.data.workers > 0)
    model = build_model(cfg).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                          weight_decay=cfg.optim.weight_decay)
    criterion = nn.CrossEntropyLoss()
    times = []
    for _ in range(epochs):
        model.train()
        t0 = time.perf_counter()
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = criterion(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times


def acl_run(cfg, epochs: int) -> tuple[list[float], list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg.train.epochs = epochs
        epoch_walls = []
        t_prev = [time.perf_counter()]

        def log(line: str) -> None:  # one line per finished epoch: its whole wall time (eval, checkpoint too)
            if line.startswith("epoch"):
                now = time.perf_counter()
                epoch_walls.append(now - t_prev[0])
                t_prev[0] = now
            elif "steps per epoch" in line:
                t_prev[0] = time.perf_counter()

        train(cfg, Path(tmp) / "run", log=log)
        with open(Path(tmp) / "run" / "metrics.csv") as f:
            return [float(r["epoch_time"]) for r in csv.DictReader(f)], epoch_walls


def kernels_per_step(config: str, overrides: list[str]) -> tuple[float, int]:
    """Kernels (computing ops dispatched) per step: acl train with the device loader, from two runs of
    different lengths, against a bare step on a ready batch. Launches bound a small convnet on a fast GPU."""
    from acl_cli.bench import KernelCounter

    cfg = load_config(config, overrides)

    def run(batches: int) -> int:
        sets = ["data.loader=device", f"data.train_subset={cfg.data.batch_size * batches}", "train.epochs=1",
                "train.progress=false", "train.log_every_steps=1000", "train.device=cpu"]
        run_cfg = load_config(config, overrides + sets)
        with tempfile.TemporaryDirectory() as tmp, KernelCounter() as counter:
            train(run_cfg, Path(tmp) / "run", log=lambda *a: None)
        return counter.ops

    engine = (run(8) - run(4)) / 4
    model = build_model(cfg)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                          weight_decay=cfg.optim.weight_decay)
    x = torch.randn(cfg.data.batch_size, 3, 32, 32)
    y = torch.randint(0, cfg.model.num_classes, (cfg.data.batch_size,))

    def step():
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    with KernelCounter() as counter:
        step()
    return engine, counter.ops


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "quickstart.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    cfg = load_config(args.config, args.overrides + ["train.progress=true", "data.loader=torch"])
    device = resolve_device(cfg.train.device)
    bare, acl, acl_wall = [], [], []
    for order in (("bare", "acl"), ("acl", "bare")):
        for kind in order:
            if kind == "bare":
                bare += bare_loop(cfg, device, args.epochs)[1:]
            else:
                epochs, walls = acl_run(load_config(args.config, args.overrides + ["data.loader=torch"]), args.epochs)
                acl += epochs[1:]
                acl_wall += walls[1:]
    b, a, w = statistics.median(bare), statistics.median(acl), statistics.median(acl_wall)
    print(f"{cfg.model.arch} on {device}, {args.epochs} epochs x 2 runs each (first epoch of each run excluded)")
    print(f"bare PyTorch loop   {b:8.3f} s/epoch")
    print(f"acl train           {a:8.3f} s/epoch   ratio {a / b:.3f}  (progress bar, logging, NaN check)")
    print(f"acl train, whole    {w:8.3f} s/epoch   ratio {w / b:.3f}  (+ evaluation, checkpoints, TensorBoard)")
    engine_k, bare_k = kernels_per_step(args.config, args.overrides)
    print(f"kernels per step: acl train {engine_k:.0f} (device loader), a bare step on a ready batch {bare_k}, "
          f"ratio {engine_k / bare_k:.3f}  (the difference: GPU crop/flip/normalise, loss and accuracy record)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
