#!/usr/bin/env python3
"""What limits a training step: wall time against the time the device is busy, CSG and original side by side.

    python scripts/profile_step.py --device cuda                       # ResNet-56 12x12/72, batch 192, bf16 + CL
    python scripts/profile_step.py --device cuda --modes eager,reduce-overhead --fused

For each mode (eager, or a torch.compile mode) and each model it prints the wall time per step, the sum of
the device's kernel times per step (the profiler's), their ratio (busy share: near 1 means the GPU is the
limit, far below 1 means launches and Python are), the kernels per step, and the kernels taking the most
time. ``--fused`` also times the fused SGD kernel (``optim.fused``) against the foreach one on the same model.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from acl_cli.config import load_config  # noqa: E402
from acl_cli.device import autocast  # noqa: E402
from acl_cli.models.build import build_model
from acl_cli.optim import build_optimizer


def measure(step, device: torch.device, steps: int, repeats: int = 3) -> tuple[float, float, int, list]:
    """(wall ms, device-busy ms, kernels) per step, and the (name, ms per step) of the costliest kernels."""
    walls = []
    for _ in range(repeats):
        torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        torch.cuda.synchronize(device)
        walls.append((time.perf_counter() - t0) / steps)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize(device)
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    busy = sum(e.device_time for e in kernels) / 1e3 / steps  # us -> ms; one stream, so no overlap
    by_name: dict[str, float] = {}
    for e in kernels:
        by_name[e.name] = by_name.get(e.name, 0.0) + e.device_time / 1e3 / steps
    top = sorted(by_name.items(), key=lambda kv: -kv[1])[:6]
    return 1e3 * statistics.median(walls), busy, len(kernels) // steps, top


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/cifar10/resnet56_csg_12_72.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the config's")
    parser.add_argument("--amp", default="bf16")
    parser.add_argument("--no-channels-last", action="store_true")
    parser.add_argument("--modes", default="eager,reduce-overhead", help="eager and/or torch.compile modes")
    parser.add_argument("--fused", action="store_true", help="also time the fused SGD kernel")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type != "cuda" or not torch.cuda.is_available():
        print("profile_step.py measures device time: it needs a CUDA device", file=sys.stderr)
        return 2
    torch.backends.cudnn.benchmark = True
    cfg = load_config(args.config, args.overrides)
    cfg.train.amp = args.amp
    batch = args.batch_size or cfg.data.batch_size
    fmt = torch.contiguous_format if args.no_channels_last else torch.channels_last
    x = torch.randn(batch, 3, 32, 32, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, cfg.model.num_classes, (batch,), device=device)
    print(f"{cfg.model.arch}, batch {batch}, amp {args.amp}, channels_last {not args.no_channels_last}, "
          f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    print(f"{'mode':<28}{'model':<10}{'wall ms':>9}{'busy ms':>9}{'busy %':>8}{'kernels':>9}")
    for mode in args.modes.split(","):
        for name in ("csg", "original"):
            model_cfg = load_config(args.config, args.overrides)
            if name == "original":
                model_cfg.model.csg = None
            torch.manual_seed(0)
            model = build_model(model_cfg).to(device, memory_format=fmt).train()
            run = model if mode == "eager" else torch.compile(model, mode=None if mode == "default" else mode)
            optimizers = {"foreach": build_optimizer(model, cfg.optim)}
            if args.fused:
                cfg.optim.fused = True
                optimizers["fused"] = build_optimizer(model, cfg.optim)
                cfg.optim.fused = False
            for kind, opt in optimizers.items():
                def step(opt=opt):
                    with autocast(device, args.amp):
                        loss = torch.nn.functional.cross_entropy(run(x), y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()

                for _ in range(5):  # compile, cudnn autotuning, CUDA graph recording
                    step()
                wall, busy, kernels, top = measure(step, device, args.steps)
                label = mode + (f" + {kind} SGD" if args.fused else "")
                print(f"{label:<28}{name:<10}{wall:>9.2f}{busy:>9.2f}{100 * busy / wall:>7.0f}%{kernels:>9}",
                      flush=True)
                for kernel, ms in top:
                    print(f"{'':<38}{ms:>7.3f} ms  {kernel[:90]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
