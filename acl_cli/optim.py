"""The recipe's optimizer and learning-rate schedule: parameter groups (what weight decay applies to), SGD or
AdamW, and the per-step schedule (multistep, cosine, onecycle or constant, after an optional linear warm-up)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .config import OptimConfig, ScheduleConfig
from .csg import GeneratedConv2d, SliceGenerator
from .errors import UserError


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict[str, Any]]:
    """Split parameters into decayed and not decayed per ``decay_csg`` / ``decay_norm``; codes and generator get a
    group of their own when ``csg_lr_scale`` or ``csg_weight_decay`` sets them apart. Each group carries its
    ``lr_scale`` (a multiple of ``optim.lr``), so a schedule or a resume keeps the ratio; group 0 is the network's
    ordinary weights, whose lr the logs report."""
    own_csg_group = cfg.csg_lr_scale != 1.0 or cfg.csg_weight_decay is not None
    decay, no_decay, csg, seen = [], [], [], set()
    norms = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if id(p) in seen or not p.requires_grad:
                continue
            seen.add(id(p))
            is_csg = isinstance(module, SliceGenerator) or (isinstance(module, GeneratedConv2d) and name == "codes")
            is_norm_or_bias = isinstance(module, norms) or name == "bias"
            if is_csg and own_csg_group:
                csg.append(p)
                continue
            skip = (is_csg and not cfg.decay_csg) or (is_norm_or_bias and not cfg.decay_norm)
            (no_decay if skip else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay, "lr_scale": 1.0}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0})
    if csg:
        csg_decay = cfg.weight_decay if cfg.csg_weight_decay is None else cfg.csg_weight_decay
        groups.append({"params": csg, "weight_decay": csg_decay if cfg.decay_csg else 0.0,
                       "lr_scale": cfg.csg_lr_scale})
    return groups


def build_optimizer(model: nn.Module, cfg: OptimConfig, lr_factor: float = 1.0) -> torch.optim.Optimizer:
    groups, lr = param_groups(model, cfg), cfg.lr * lr_factor
    for group in groups:
        group["lr"] = lr * group["lr_scale"]
    fused = {"fused": True} if cfg.fused else {}  # one kernel for the whole update instead of a few per tensor list
    try:
        if cfg.name == "sgd":
            return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov, **fused)
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg.betas), **fused)
    except (RuntimeError, TypeError) as e:  # a torch without fused kernels for this optimizer or device
        raise UserError(f"optim.fused: {str(e).splitlines()[0]}") from None


def milestone_epochs(cfg: ScheduleConfig, epochs: int) -> list[float]:
    """Milestones in epochs: all below 1 are fractions of the run (the authors' [0.5, 0.75]), else epochs.
    An epoch milestone at or past the last epoch would never lower the lr: an error, not a constant-lr run."""
    if all(m < 1 for m in cfg.milestones):
        return [m * epochs for m in cfg.milestones]
    late = [m for m in cfg.milestones if m >= epochs]
    if late:
        raise UserError(f"schedule.milestones: {late[0]:g} is at or past the last epoch (train.epochs {epochs}), so "
                        "the lr would never drop there; give fractions of the run, e.g. [0.5, 0.75]")
    return list(cfg.milestones)


@dataclass
class StepSchedule:
    """The lr factor at each step: a linear warm-up ramp times multistep decay or a cosine, each exactly at
    the step its setting names (a milestone of 1 epoch at 10 steps an epoch: step 10 onward is decayed, even
    during a warm-up). A callable object, so a scheduler's state_dict holds it as plain data."""
    name: str
    total: int
    warmup: int
    warmup_factor: float
    milestones: list[int]
    gamma: float
    min_factor: float

    def __call__(self, step: int) -> float:
        factor = 1.0
        if step < self.warmup:
            factor = self.warmup_factor + (1.0 - self.warmup_factor) * step / self.warmup
        if self.name == "multistep":
            factor *= self.gamma ** sum(step >= m for m in self.milestones)
        elif self.name == "cosine":
            span = max(1, self.total - self.warmup)
            t = min(max(step - self.warmup, 0), span) / span
            factor *= self.min_factor + (1.0 - self.min_factor) * 0.5 * (1.0 + math.cos(math.pi * t))
        return factor


def build_scheduler(optimizer, cfg: ScheduleConfig, epochs: int, steps_per_epoch: int):
    """A per-step schedule; milestones and warmup are given in epochs."""
    lrs = torch.optim.lr_scheduler
    total = epochs * steps_per_epoch
    if cfg.name == "onecycle":
        if cfg.warmup_epochs:
            raise UserError("schedule.warmup_epochs: onecycle has its own warmup (schedule.pct_start)")
        max_lr = [g["lr"] for g in optimizer.param_groups]
        return lrs.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total, pct_start=cfg.pct_start)
    milestones = [round(m * steps_per_epoch) for m in milestone_epochs(cfg, epochs)] if cfg.name == "multistep" else []
    base_lr = optimizer.param_groups[0]["lr"]
    schedule = StepSchedule(cfg.name, total, min(round(cfg.warmup_epochs * steps_per_epoch), total), cfg.warmup_factor,
                            milestones, cfg.gamma, cfg.min_lr / base_lr)
    return lrs.LambdaLR(optimizer, schedule)
