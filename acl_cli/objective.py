"""What a training step minimises: cross-entropy with the labels, or that plus a teacher's term (distillation).

The step calls the objective with the model's outputs, the targets and the inputs (a teacher looks at them);
targets are class indices, or per image a probability for each class (soft targets, as batch mixing makes
them: ``nn.CrossEntropyLoss`` takes both, label smoothing applied to either). Distillation's label term is on
the same targets, and its teacher sees the images the student sees, mixed ones too. An objective whose loss has parts reports them apart: ``terms`` names them and
:meth:`CrossEntropy.add_term_sums` hands their sums over the images since it was last called.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .config import Config
from .distill import distillation_loss


class CrossEntropy:
    """Cross-entropy with the targets (label smoothing included); one term, nothing reported apart."""

    terms: tuple[str, ...] = ()  # the parts of the loss reported apart (TensorBoard train/loss_NAME)

    def __init__(self, label_smoothing: float):
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    def __call__(self, logits: Tensor, targets: Tensor, inputs: Tensor) -> Tensor:
        return self.criterion(logits, targets)

    def add_term_sums(self, sums: list[float]) -> list[float]:
        """``sums`` (each term's sum over images, then the images) with the steps' since the last call added."""
        return sums


class Distillation(CrossEntropy):
    """``(1 - alpha) * cross-entropy + alpha * T^2 * KL(teacher || student)`` (distill.distillation_loss); the
    teacher is frozen and asked under ``no_grad``. Its two terms are summed on the device, read back only when
    :meth:`add_term_sums` is called (log points, checkpoints, the epoch's end): no host sync per step."""

    terms = ("labels", "teacher")

    def __init__(self, label_smoothing: float, teacher: nn.Module, alpha: float, temperature: float,
                 device: torch.device):
        super().__init__(label_smoothing)
        self.teacher, self.alpha, self.temperature = teacher, alpha, temperature
        self.term_sums = torch.zeros(2, device=device, dtype=torch.float64)  # since the last add_term_sums
        self.term_images = 0

    def __call__(self, logits: Tensor, targets: Tensor, inputs: Tensor) -> Tensor:
        with torch.no_grad():
            teacher_logits = self.teacher(inputs)
        loss, label_term, teacher_term = distillation_loss(logits, teacher_logits, targets, self.criterion,
                                                           self.alpha, self.temperature)
        images = targets.shape[0]  # soft targets hold a row of probabilities per image
        self.term_sums += torch.stack([label_term.detach(), teacher_term.detach()]) * images
        self.term_images += images
        return loss

    def add_term_sums(self, sums: list[float]) -> list[float]:
        if not self.term_images:
            return sums
        label_sum, teacher_sum = self.term_sums.tolist()
        added = [sums[0] + label_sum, sums[1] + teacher_sum, sums[2] + self.term_images]
        self.term_sums.zero_()
        self.term_images = 0
        return added


def build_objective(cfg: Config, teacher: nn.Module | None, device: torch.device) -> CrossEntropy:
    """The run's objective: distillation when ``cfg.distill`` gave a teacher, else cross-entropy."""
    if teacher is None:
        return CrossEntropy(cfg.train.label_smoothing)
    return Distillation(cfg.train.label_smoothing, teacher, cfg.distill.alpha, cfg.distill.temperature, device)
