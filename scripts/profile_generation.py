#!/usr/bin/env python3
"""Share of a training step spent generating kernels, measured with torch.profiler.

    python scripts/profile_generation.py                                  # ResNet-56 12x12/72, CPU, batch 128
    python scripts/profile_generation.py --arch resnet20 --device cuda --batch-size 256

Kernel generation runs once per step for the whole network (one matrix product over all codes, then
reshapes); the profiler's "csg.generate" range measures it against the whole step, forward and backward.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from acl_cli import create_model  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="resnet56")
    parser.add_argument("--slice-shape", default="12,12,3,3")
    parser.add_argument("--code-size", type=int, default=72)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    csg = {"slice_shape": [int(s) for s in args.slice_shape.split(",")], "code_size": args.code_size}
    model = create_model(args.arch, csg=csg).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(args.batch_size, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch_size,), device=device)

    def step():
        with record_function("train_step"):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    for _ in range(3):
        step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(args.steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
    events = {e.key: e for e in prof.key_averages()}
    attr = "device_time_total" if device.type == "cuda" else "cpu_time_total"
    gen, total = getattr(events["csg.generate"], attr), getattr(events["train_step"], attr)
    print(f"{args.arch} CSG {args.slice_shape}/{args.code_size}, batch {args.batch_size} on {device}: "
          f"kernel generation {gen / 1e3 / args.steps:.2f} ms of a {total / 1e3 / args.steps:.1f} ms step "
          f"({100 * gen / total:.2f}%, forward side; its backward is the same order)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
