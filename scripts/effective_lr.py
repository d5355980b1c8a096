"""How fast each stage's kernels turn: the effective learning rate of a CSG network against its original.

With BatchNorm after every conv, a kernel's scale does not matter to the network, only its direction; how far
a step turns it (in radians, per unit of nominal lr) is what sets how fast a conv learns. Codes times a
generator turn differently from a plain kernel of the same recipe, and weight decay takes thousands of steps
to bring them to the same equilibrium, so this is the figure to compare when a short schedule leaves a gap.

    python scripts/effective_lr.py --config configs/cifar10/resnet20.yaml \\
        --config configs/cifar10/resnet20_csg_16_72.yaml --init authors --init scaled --set data.root=DATA ...
    python scripts/effective_lr.py --run results/cifar10/resnet20 --run results/cifar10/resnet20_csg_16_72

For each model: ``--steps`` SGD steps of the recipe on real training batches (from the initialisation, or from a
run's last.pt with its optimizer state), then the mean angle each stage's kernels turn per step divided by the
lr, and the kernels' mean norm. Printed side by side, one row per stage.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from acl_cli.checkpoint import load_checkpoint  # noqa: E402
from acl_cli.config import build_config, load_config  # noqa: E402
from acl_cli.csg import GeneratedConv2d  # noqa: E402
from acl_cli.data import build_splits, train_loader  # noqa: E402
from acl_cli.models.build import build_model, load_weights  # noqa: E402
from acl_cli.optim import build_optimizer  # noqa: E402


def stage_kernels(model: torch.nn.Module) -> dict[str, list[torch.Tensor]]:
    """Every 3x3 conv's kernel (generated or plain), grouped by its output width: the stages of a CIFAR ResNet."""
    stages: dict[str, list[torch.Tensor]] = {}
    for module in model.modules():
        if isinstance(module, (GeneratedConv2d, torch.nn.Conv2d)) and tuple(module.kernel_size) == (3, 3):
            stages.setdefault(f"{module.out_channels:>3} channels", []).append(module.weight.detach().clone())
    return stages


def measure(cfg, state: dict | None, steps: int) -> dict[str, tuple[float, float]]:
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg, pretrained=False)
    optimizer = build_optimizer(model, cfg.optim)
    if state is not None:
        load_weights(model, state["model"], "checkpoint")
        optimizer.load_state_dict(state["optimizer"])
    splits = build_splits(cfg.data, cfg.model.num_classes)
    loader = train_loader(splits.train, cfg.data, cfg.train.seed, torch.device("cpu"))
    loader.batch_sampler.set_epoch(0)
    lr = optimizer.param_groups[0]["lr"]
    turned: dict[str, float] = {}
    model.train()
    for step, (x, y) in enumerate(loader):
        if step == steps:
            break
        before = stage_kernels(model)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        for stage, kernels in stage_kernels(model).items():
            angles = [math.acos(min(1.0, float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), 0))))
                      for a, b in zip(before[stage], kernels)]
            turned[stage] = turned.get(stage, 0.0) + sum(angles) / len(angles)
    norms = {stage: sum(k.norm().item() for k in kernels) / len(kernels) for stage, kernels in stage_kernels(model).items()}
    return {stage: (turned[stage] / steps / lr, norms[stage]) for stage in sorted(turned)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action="append", default=[], help="a config, measured from its initialisation")
    parser.add_argument("--init", action="append", default=[], help="model.csg.init values to measure CSG configs at")
    parser.add_argument("--run", action="append", default=[], help="a run folder, measured from its last.pt")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override (repeatable)")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    subjects = []
    for path in args.config:
        cfg = load_config(path, args.overrides)
        for init in (args.init or [None]) if cfg.model.csg else [None]:
            sets = args.overrides + ([f"model.csg.init={init}"] if init else [])
            subjects.append((f"{Path(path).stem}" + (f" init={init}" if init else ""), load_config(path, sets), None))
    for run in args.run:
        state = load_checkpoint(Path(run) / "last.pt")
        cfg = build_config(state["config"])
        for item in args.overrides:
            key, _, value = item.partition("=")
            if key == "data.root":
                cfg.data.root = value
        subjects.append((f"{Path(run).name} (epoch {state['progress']['epoch']})", cfg, state))
    results = {name: measure(cfg, state, args.steps) for name, cfg, state in subjects}
    stages = sorted({s for r in results.values() for s in r})
    print(f"angle a kernel turns per step / lr, and its norm (mean over {args.steps} steps and each stage's 3x3 convs)")
    print(f"{'':<44}" + "".join(f"{s:>24}" for s in stages))
    for name, r in results.items():
        print(f"{name:<44}" + "".join(f"{r[s][0]:>14.3f} |K| {r[s][1]:>5.2f}" if s in r else f"{'':>24}" for s in stages))


if __name__ == "__main__":
    main()
