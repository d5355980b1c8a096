"""Evaluation: loss, top-1 and top-5 over a loader (summed over processes), and a trained model rebuilt from
its checkpoint alone, then evaluated on a split of its data."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from . import distributed
from .checkpoint import load_checkpoint
from .config import Config, apply_overrides, build_config
from .data import SplitDataset, build_splits, carve, check_classes, eval_loader, sample_fingerprint
from .device import autocast, resolve_device
from .errors import UserError
from .models.build import build_model, load_weights
from .models.external import check_import_allowed


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
    for x, y in tqdm(loader, desc="eval", leave=False, disable=not (progress and sys.stderr.isatty()),
                     dynamic_ncols=True):
        x = x.to(device, non_blocking=True, memory_format=memory_format)
        y = y.to(device, non_blocking=True)
        with autocast(device, amp):
            logits = model(x)
        top1, top5 = _top1_top5_correct(logits, y)
        sums += torch.stack([F.cross_entropy(logits.float(), y, reduction="sum").double(), top1, top5])
        n += y.numel()
    loss, top1, top5, n = env.sum(torch.cat([sums, sums.new_tensor([n])])).tolist()
    if n == 0:
        raise UserError("the evaluation split is empty")
    five = logits.shape[1] >= 5  # with fewer outputs every label is in the top 5: no figure to report
    return {"loss": loss / n, "top1": 100.0 * top1 / n, "top5": 100.0 * top5 / n if five else None, "samples": int(n)}


def load_model(path: str | Path, overrides: tuple[str, ...] = (),
               allow_imports: tuple[str, ...] = ()) -> tuple[nn.Module, Config, dict[str, Any]]:
    """The model of a checkpoint rebuilt from its config alone (with overrides), in eval mode. A factory
    module named by the checkpoint (not by ``overrides``) is imported only if ``allow_imports`` lists it."""
    state = load_checkpoint(path)
    cfg = build_config(apply_overrides(state["config"], overrides))
    # only the network itself is built here (a distilled run's teacher is not)
    check_import_allowed({"model": state["config"].get("model")}, {"model": cfg.to_dict()["model"]}, str(path),
                         allow_imports)
    model = build_model(cfg, pretrained=False)
    load_weights(model, state["model"], str(path))
    return model.eval(), cfg, state


def trained_on(state: dict[str, Any], cfg: Config, splits, split: str) -> int:
    """How many images of ``split`` the checkpoint's run trained on: nonzero only when an override
    (``data.split_seed``, ``data.val_split``, ``data.train_subset``) carves the evaluated split from the same
    training set differently. The run's training images are chosen again from its own settings (``carve``,
    the one place that chooses them) over the training set found now, confirmed by the recorded digest of its
    training files when the run has one."""
    evaluated = splits.get(split)
    if split == "train" or splits.train is None or evaluated.base is not splits.train.base:
        return 0  # a val/ or test/ folder: never part of training
    ran = build_config(state["config"]).data
    if ran.name != cfg.data.name:
        return 0
    ran_train = carve(ran, evaluated.base.targets)[0]
    recorded = (state.get("progress") or {}).get("train_files")
    if recorded is not None and sample_fingerprint(SplitDataset(evaluated.base, ran_train, None)) != recorded:
        return 0  # not the data the run was trained on: no image of it was
    return len(set(evaluated.indices) & set(ran_train))


def evaluate_checkpoint(path: str | Path, split: str = "val", overrides: tuple[str, ...] = (),
                        device: str = "auto", batch_size: int | None = None,
                        allow_imports: tuple[str, ...] = (), allow_train_overlap: bool = False) -> dict[str, Any]:
    """Rebuild the model from a checkpoint alone and evaluate it on a split of its (overridden) data, which
    must have the classes the model was trained on and, unless ``allow_train_overlap``, no image it was
    trained on."""
    if batch_size is not None and batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    model, cfg, state = load_model(path, overrides, allow_imports)
    dev = resolve_device(device)
    model.to(dev)
    if batch_size:
        cfg.data.eval_batch_size = batch_size
    splits = build_splits(cfg.data, cfg.model.num_classes)
    check_classes(state.get("classes"), splits.classes, str(path), f"the data ({cfg.data.name} at {cfg.data.root})")
    overlap = trained_on(state, cfg, splits, split)
    if overlap and not allow_train_overlap:
        raise UserError(f"the {split} split overlaps the images {path} was trained on: {overlap:,} of "
                        f"{len(splits.get(split)):,} were trained on, so its score would not be held out; evaluate "
                        "with the run's own data.split_seed/val_split/train_subset, or add --allow-train-overlap")
    metrics = evaluate(model, eval_loader(splits.get(split), cfg.data, dev), dev, progress=cfg.train.progress)
    metrics["params"] = sum(p.numel() for p in model.parameters())
    metrics["split"], metrics["source"] = split, splits.sources[split]
    # "ema": a best.pt of a run with train.ema holds the average; whatever else a sent file says is not echoed
    metrics["weights"] = "ema" if state.get("weights") == "ema" else "model"
    if overlap:
        metrics["trained_on"] = overlap  # said beside the score: N of its images were trained on
    return metrics
