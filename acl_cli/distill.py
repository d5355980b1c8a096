"""Knowledge distillation: a trained teacher whose outputs the student learns beside the labels.

Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network", 2015. The loss is
``(1 - alpha) * CE(student, labels) + alpha * T^2 * KL(teacher_T || student_T)``, both softened at
temperature ``T``; the ``T^2`` keeps the teacher term's gradients at the scale of the label term's.
The teacher is frozen, in eval mode, and never part of the student's checkpoints: they record which
teacher it was (its source and a SHA-256 of its weights), and a resume refuses another.
"""
from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import Config, DistillConfig
from .errors import UserError
from .evaluate import load_model
from .models.build import build_model
from .rundir import lock_holder


@dataclass
class Teacher:
    model: nn.Module
    source: str  # what the run's first lines and records call it
    sha256: str  # of its weights: the same teacher on resume
    classes: list[str] | None  # the class names it was trained on, when its checkpoint says
    input_shape: list[int] | None  # the image shape it was trained on, when its checkpoint says


def weights_sha256(model: nn.Module) -> str:
    """A digest of every tensor in ``model.state_dict()`` (names, shapes, dtypes, values)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _teacher_run_dir(path: Path) -> Path:
    return path if path.is_dir() else path.parent


def load_teacher(cfg: Config, student_run_dir: Path | None = None, allow_imports: tuple[str, ...] = ()) -> Teacher:
    """The teacher of ``cfg.distill``, in eval mode with gradients off. Refuses (one line) a missing file, a run
    still being trained, the student's own run, and a factory module a checkpoint names unless allowed."""
    d: DistillConfig = cfg.distill
    if d.teacher is not None:
        path = Path(d.teacher)
        if not path.exists():
            raise UserError(f"distill.teacher: {path} does not exist (an acl checkpoint or run folder); if the teacher "
                            "moved, give where it is now: --set distill.teacher=NEW_PATH (a resume checks by its "
                            "weights that it is the same teacher)")
        folder = _teacher_run_dir(path.resolve())  # a link to a run's best.pt: the lock is in the run's folder
        if student_run_dir is not None and folder.resolve() == Path(student_run_dir).resolve():
            raise UserError(f"distill.teacher: {path} is the run being trained; a teacher is another, finished run")
        holder = lock_holder(folder)
        if holder is not None:
            raise UserError(f"distill.teacher: {folder} is being trained by a running acl process (pid {holder}); "
                            "wait for it to finish: its checkpoints change under the student")
        try:
            model, teacher_cfg, state = load_model(path, allow_imports=allow_imports)
        except UserError as e:
            raise UserError(f"distill.teacher: {e}") from None
        source = f"{path} ({teacher_cfg.model.arch}{' CSG' if teacher_cfg.model.csg else ''})"
        classes, input_shape = state.get("classes"), state.get("input_shape")
    else:
        teacher_cfg = copy.deepcopy(cfg)
        teacher_cfg.model.arch, teacher_cfg.model.csg = d.arch, None
        teacher_cfg.model.pretrained, teacher_cfg.model.pretrained_exclude = d.pretrained, []
        try:
            model = build_model(teacher_cfg, pretrained=True).eval()
        except UserError as e:  # without load_pretrained's advice on pretrained_exclude: a teacher needs its head
            reason = str(e).removeprefix("model.pretrained: ").split("; to load everything but")[0]
            raise UserError(f"distill: teacher {d.arch} ({teacher_cfg.model.num_classes} classes, as the student): "
                            f"{reason}") from None
        source, classes, input_shape = f"{d.arch} with {d.pretrained}", None, None
    model.requires_grad_(False)
    return Teacher(model, source, weights_sha256(model), classes, input_shape)


def check_teacher_record(recorded: dict[str, Any] | None, current: dict[str, Any], run_dir: Path) -> None:
    """A resume continues with the teacher the run began with (the same weights, wherever they are now).
    ``recorded`` and ``current``: ``{"source": ..., "sha256": ...}``."""
    if recorded is None:
        raise UserError(f"{run_dir} was trained without distillation; a resume cannot add a teacher")
    if recorded["sha256"] != current["sha256"]:
        raise UserError(f"distill: {current['source']} is not the teacher {run_dir} was distilled from "
                        f"({recorded['source']}, weights sha256 {recorded['sha256'][:12]}; this one "
                        f"{current['sha256'][:12]}); resume with that teacher")


def distillation_loss(logits: Tensor, teacher_logits: Tensor, targets: Tensor, criterion: nn.Module,
                      alpha: float, temperature: float) -> tuple[Tensor, Tensor, Tensor]:
    """``(loss, label term, teacher term)``; the label term is ``criterion`` (label smoothing included)."""
    label_term = criterion(logits, targets)
    t = temperature
    teacher_term = F.kl_div(F.log_softmax(logits.float() / t, dim=1), F.log_softmax(teacher_logits.float() / t, dim=1),
                            reduction="batchmean", log_target=True) * (t * t)
    return (1 - alpha) * label_term + alpha * teacher_term, label_term, teacher_term
