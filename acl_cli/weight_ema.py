"""Weight EMA (``train.ema``): an exponential moving average of the weights, kept beside them by torch's
``AveragedModel`` with its EMA update (``get_ema_multi_avg_fn``). With ``use_buffers`` the BatchNorm
statistics are averaged too, so the averaged network is evaluated with statistics that follow its own
weights. A CSG model's average is of its parameters, the codes and the generator (its kernels are generated
from them)."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .config import EMAConfig


class WeightEMA:
    """``average = decay * average + (1 - decay) * weights`` after every ``every_steps``-th optimizer step; the
    first update copies the weights (AveragedModel's start), and so does every update within the first
    ``warmup_steps`` optimizer steps (the average restarts from the weights while they change fast)."""

    def __init__(self, model: nn.Module, cfg: EMAConfig):
        self.cfg = cfg
        # a copy of the model as it is now (its device and memory format); n_averaged stays on the CPU, so
        # AveragedModel's check of it on every update is no device sync
        self.averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.decay), use_buffers=True)
        self.averaged.requires_grad_(False)  # nothing back-propagates into the average
        self.averaged.eval()

    @property
    def model(self) -> nn.Module:
        """The averaged network, a module of the model's class: evaluated, checkpointed and exported as one."""
        return self.averaged.module

    @property
    def updates(self) -> int:
        return int(self.averaged.n_averaged)

    @torch.no_grad()
    def update(self, model: nn.Module, optimizer_step: int) -> None:
        """After optimizer step ``optimizer_step`` (1 for the first) of ``model``, the plain module (not DDP)."""
        if optimizer_step % self.cfg.every_steps:
            return
        if optimizer_step <= self.cfg.warmup_steps:
            self.averaged.n_averaged.zero_()  # AveragedModel copies the weights when it has averaged none
        self.averaged.update_parameters(model)

    def state_dict(self) -> dict[str, Any]:
        """What ``last.pt`` keeps: the averaged network's state_dict (keys as the model's) and the updates."""
        return {"model": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.averaged.n_averaged.fill_(int(state["updates"]))


def build_ema(model: nn.Module, cfg: EMAConfig | None) -> WeightEMA | None:
    """The run's weight EMA of ``model`` (as it is now, on its device), or None when ``train.ema`` is null."""
    return None if cfg is None else WeightEMA(model, cfg)
