"""The settings: one typed dataclass per section, each checking its own values (``validate``), and what a
config error says (``ConfigError``, values quoted short)."""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

import yaml

from ..errors import UserError


class ConfigError(UserError):
    pass


SEED_LIMIT = 2**32
DEVICE_PATTERN = r"auto|cpu|cuda(:\d{1,3})?"  # train.device and every --device
# Settings that change how a run is carried out, not what it computes: a resume may change them, and
# acl report groups runs that differ only in these (and their seed).
NOT_COMPUTATIONAL = ("train.progress", "train.log_every_steps", "train.checkpoint_every_steps", "train.device",
                     "train.compile", "train.compile_mode", "data.root", "data.download", "data.workers",
                     "data.eval_batch_size")


def quote(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: an error message never echoes a huge value."""
    return cut(repr(value), limit)


def cut(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


MAX_IMAGE_SIZE = 8192  # a side no network here was made for; larger only allocates until memory runs out


@dataclass
class CSGConfig:
    REQUIRED = ("slice_shape", "code_size")  # a csg block must say both: no silent 12x12/72 default

    slice_shape: list[int] = field(default_factory=lambda: [12, 12, 3, 3])  # (S0 out, S1 in, kh, kw)
    code_size: int = 72
    layout: Literal["flat", "tile"] = "flat"
    targets: Union[str, list[str]] = "authors"  # "authors", "all", or roles: stem block pointwise shortcut transition
    init: Literal["authors", "scaled", "binary"] = "authors"
    init_from: Optional[str] = None  # checkpoint (or run dir) whose trained generator this run starts from
    freeze: bool = False  # keep the generator fixed: only codes, norms and the classifier train

    def validate(self, path: str) -> None:
        if len(self.slice_shape) != 4 or min(self.slice_shape) < 1:
            raise ConfigError(f"{path}.slice_shape: expected 4 positive ints [S0, S1, kh, kw], got {self.slice_shape}")
        if self.code_size < 1:
            raise ConfigError(f"{path}.code_size: must be a positive int, got {self.code_size}")
        if isinstance(self.targets, list) and not self.targets:
            raise ConfigError(f"{path}.targets: an empty list generates nothing; give roles, authors or all")


@dataclass
class ModelConfig:
    # The registry checks the name and fills num_classes when the model is built (models.resolve_model_config):
    # a config is a plain description, and reading one never imports the module a factory name points to.
    arch: str = "resnet20"
    num_classes: Optional[int] = None  # default: the architecture's (CIFAR nets 10, ImageNet nets 1000)
    pretrained: Optional[str] = None  # a local state_dict of the original network (e.g. torchvision's .pth)
    pretrained_exclude: list[str] = field(default_factory=list)  # keys not loaded from it, e.g. [fc]: another head
    csg: Optional[CSGConfig] = None  # null: the original network

    def validate(self, path: str) -> None:
        if not self.arch:
            raise ConfigError(f"{path}.arch: must name an architecture (acl list-models)")
        if self.num_classes is not None and self.num_classes < 1:
            raise ConfigError(f"{path}.num_classes: must be >= 1, got {self.num_classes}")


@dataclass
class DataConfig:
    name: Literal["cifar10", "cifar100", "imagefolder", "imagenet", "digits", "synthetic"] = "cifar10"
    root: str = "data"
    download: bool = False  # cifar10/100: fetch with torchvision if missing
    preset: Literal["auto", "cifar", "imagenet", "digits", "none"] = "auto"  # augmentation + normalisation
    image_size: Optional[int] = None  # imagenet crop (224) or synthetic side (32)
    val_split: float = 0.0  # > 0: hold out this fraction of train (class-balanced) as the validation set
    split_seed: int = 0
    train_subset: Optional[int] = None  # use at most this many training images (class-balanced)
    batch_size: int = 128
    eval_batch_size: Optional[int] = None  # default: 2 x batch_size
    workers: int = 2
    loader: Literal["auto", "torch", "device"] = "auto"  # device: the decoded split in device memory, augmented there
    synthetic_size: int = 1024  # synthetic: training images (the held-out split is a quarter of it)
    # Recipe parts of modern references, all off by default (the authors' recipe): a policy after the preset's
    # crop and flip, random erasing after normalisation (DataLoader path only), and batch mixing in the step
    augment: Literal["none", "autoaugment", "randaugment", "trivialaugment"] = "none"
    random_erasing: float = 0.0  # probability an image has a rectangle erased (torchvision's RandomErasing)
    mixup: float = 0.0  # Beta(alpha, alpha) of MixUp; 0: off
    cutmix: float = 0.0  # Beta(alpha, alpha) of CutMix; 0: off
    mixup_switch_prob: float = 0.5  # with both on: the chance a batch is cut-mixed rather than mixed up

    def validate(self, path: str) -> None:
        self.root = os.path.expanduser(self.root)  # --set data.root=~/data: no shell expands it there
        if not 0.0 <= self.val_split < 1.0:
            raise ConfigError(f"{path}.val_split: must be in [0, 1), got {self.val_split}")
        for key in ("batch_size", "eval_batch_size", "image_size", "train_subset", "synthetic_size"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"{path}.{key}: must be >= 1, got {value}")
        if self.image_size is not None and self.image_size > MAX_IMAGE_SIZE:  # one float image of 8192² is 800 MB
            raise ConfigError(f"{path}.image_size: must be at most {MAX_IMAGE_SIZE}, got {self.image_size}")
        if self.workers < 0:
            raise ConfigError(f"{path}.workers: must be >= 0, got {self.workers}")
        if not 0 <= self.split_seed < SEED_LIMIT:
            raise ConfigError(f"{path}.split_seed: must be in [0, 2**32), got {self.split_seed}")
        self._validate_recipe(path)

    def _validate_recipe(self, path: str) -> None:
        for key in ("random_erasing", "mixup_switch_prob"):
            if not 0 <= getattr(self, key) <= 1:
                raise ConfigError(f"{path}.{key}: must be in [0, 1], got {getattr(self, key)}")
        for key in ("mixup", "cutmix"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{path}.{key}: must be >= 0 (the Beta distribution's alpha; 0 is off), got "
                                  f"{getattr(self, key)}")
        if self.loader == "device":  # its augmentation is arithmetic on a seed: crop and flip only, so far
            if self.augment != "none":
                raise ConfigError(f"{path}.augment: {self.augment} is not on the device loader yet; use "
                                  "data.loader: torch (or auto, which then picks it)")
            if self.random_erasing:
                raise ConfigError(f"{path}.random_erasing: not on the device loader yet; use data.loader: torch "
                                  "(or auto, which then picks it)")

    @property
    def per_image_augment(self) -> str | None:
        """The per-image recipe parts set (``data.augment``, ``data.random_erasing``), named for a message;
        None when neither is: the device loader has neither."""
        parts = ([f"data.augment: {self.augment}"] if self.augment != "none" else []) + \
            ([f"data.random_erasing: {self.random_erasing:g}"] if self.random_erasing else [])
        return ", ".join(parts) or None


@dataclass
class OptimConfig:
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    decay_csg: bool = True  # weight decay on codes and generator (the authors: yes)
    csg_lr_scale: float = 1.0  # codes and generator train at this multiple of lr (the authors: 1)
    csg_weight_decay: Optional[float] = None  # their weight decay; None: weight_decay (the authors)
    decay_norm: bool = True  # weight decay on norm weights and all biases (the authors: yes)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    grad_clip: Optional[float] = None  # max global grad norm
    lr_scaling: Literal["none", "linear"] = "none"  # linear: lr x N processes (Goyal et al. 2017; add warmup)
    fused: bool = False  # torch's fused optimizer kernel: one launch for the whole update

    def validate(self, path: str) -> None:
        if self.lr <= 0:
            raise ConfigError(f"{path}.lr: must be > 0, got {self.lr}")
        if self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ConfigError(f"{path}: weight_decay must be >= 0 and momentum in [0, 1)")
        if not self.csg_lr_scale > 0:
            raise ConfigError(f"{path}.csg_lr_scale: must be > 0, got {self.csg_lr_scale}")
        if self.csg_weight_decay is not None and self.csg_weight_decay < 0:
            raise ConfigError(f"{path}.csg_weight_decay: must be >= 0, got {self.csg_weight_decay}")
        if self.csg_weight_decay is not None and not self.decay_csg:
            raise ConfigError(f"{path}: csg_weight_decay {self.csg_weight_decay} with decay_csg false; give one of them")
        if self.nesterov and (self.name != "sgd" or self.momentum == 0):
            raise ConfigError(f"{path}.nesterov: needs optim.name sgd and momentum > 0")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"{path}.betas: expected two values in [0, 1), got {self.betas}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError(f"{path}.grad_clip: must be > 0, got {self.grad_clip}")


@dataclass
class ScheduleConfig:
    name: Literal["multistep", "cosine", "onecycle", "constant"] = "multistep"
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])  # multistep: fractions of the run if all < 1, else epochs
    gamma: float = 0.1  # multistep factor
    warmup_epochs: float = 0.0  # linear warmup from warmup_factor * lr (not with onecycle)
    warmup_factor: float = 0.1
    min_lr: float = 0.0  # cosine floor
    pct_start: float = 0.3  # onecycle

    def validate(self, path: str) -> None:
        if self.warmup_epochs < 0 or not 0 < self.warmup_factor <= 1:
            raise ConfigError(f"{path}: warmup_epochs must be >= 0 and warmup_factor in (0, 1]")
        if sorted(self.milestones) != list(self.milestones) or any(m <= 0 for m in self.milestones):
            raise ConfigError(f"{path}.milestones: must be increasing and positive, got {self.milestones}")
        if any(m < 1 for m in self.milestones) and any(m >= 1 for m in self.milestones):
            raise ConfigError(f"{path}.milestones: give all as fractions of the run (< 1) or all as epochs, got "
                              f"{self.milestones}")
        if not 0 < self.pct_start < 1 or self.gamma <= 0 or self.min_lr < 0:
            raise ConfigError(f"{path}: pct_start must be in (0, 1), gamma > 0, min_lr >= 0")


@dataclass
class EMAConfig:
    """An exponential moving average of the weights (and BatchNorm statistics), evaluated and checkpointed
    beside them: ``ema = decay * ema + (1 - decay) * weights`` every ``every_steps`` optimizer steps; for the
    first ``warmup_steps`` optimizer steps the average is the weights themselves (torchvision's reference
    restarts it during its lr warm-up likewise)."""

    decay: float = 0.9998
    every_steps: int = 1
    warmup_steps: int = 0

    def validate(self, path: str) -> None:
        if not 0 < self.decay < 1:
            raise ConfigError(f"{path}.decay: must be in (0, 1), got {self.decay}")
        if self.every_steps < 1:
            raise ConfigError(f"{path}.every_steps: must be >= 1, got {self.every_steps}")
        if self.warmup_steps < 0:
            raise ConfigError(f"{path}.warmup_steps: must be >= 0, got {self.warmup_steps}")


@dataclass
class TrainConfig:
    epochs: int = 200
    device: str = "auto"  # auto (cuda if available), cpu, cuda, cuda:N
    seed: int = 0
    label_smoothing: float = 0.0
    checkpoint_every_steps: Optional[int] = None  # also write last.pt every N steps (mid-epoch)
    log_every_steps: int = 50  # TensorBoard train scalars every N steps
    progress: bool = True  # tqdm bar per epoch
    on_nonfinite: Literal["stop", "skip"] = "stop"  # a NaN/Inf loss stops the run, or skips that step
    amp: Literal["off", "bf16", "fp16"] = "off"  # autocast dtype; fp16 adds a GradScaler
    channels_last: bool = False
    compile: bool = False  # torch.compile the model
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"
    sync_bn: bool = False  # SyncBatchNorm across processes under torchrun
    ema: Optional[EMAConfig] = None  # null: no weight averaging (the authors' recipe)
    accumulate_steps: int = 1  # the optimizer steps every N batches of data.batch_size (global batch x N)

    def validate(self, path: str) -> None:
        if self.accumulate_steps < 1:
            raise ConfigError(f"{path}.accumulate_steps: must be >= 1, got {self.accumulate_steps}")
        if self.epochs < 1:
            raise ConfigError(f"{path}.epochs: must be >= 1, got {self.epochs}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"{path}.label_smoothing: must be in [0, 1), got {self.label_smoothing}")
        if self.checkpoint_every_steps is not None and self.checkpoint_every_steps < 1:
            raise ConfigError(f"{path}.checkpoint_every_steps: must be >= 1, got {self.checkpoint_every_steps}")
        if not 0 <= self.seed < SEED_LIMIT:
            raise ConfigError(f"{path}.seed: must be in [0, 2**32), got {self.seed}")
        if self.log_every_steps < 1:
            raise ConfigError(f"{path}.log_every_steps: must be >= 1, got {self.log_every_steps}")
        if not re.fullmatch(DEVICE_PATTERN, self.device):
            raise ConfigError(f"{path}.device: expected auto, cpu, cuda or cuda:N, got {quote(self.device)}")


@dataclass
class DistillConfig:
    """Knowledge distillation (Hinton et al. 2015): the loss is ``(1 - alpha) * CE(labels) + alpha * T^2 *
    KL(teacher || student)`` at temperature T. The teacher is an acl checkpoint or run folder, or an
    architecture with a state_dict of its weights (``arch`` and ``pretrained``)."""

    teacher: Optional[str] = None  # an acl checkpoint (or run folder: its best.pt)
    arch: Optional[str] = None  # instead: an architecture (e.g. torchvision:resnet50) ...
    pretrained: Optional[str] = None  # ... with its weights (a state_dict such as torchvision's .pth)
    alpha: float = 0.9  # weight of the teacher's term
    temperature: float = 4.0

    def validate(self, path: str) -> None:
        self.teacher, self.pretrained = (None if p is None else os.path.expanduser(p) for p in (self.teacher,
                                                                                               self.pretrained))
        if (self.teacher is None) == (self.arch is None):
            raise ConfigError(f"{path}: give teacher (an acl checkpoint or run folder) or arch with pretrained, "
                              "not both" if self.teacher else f"{path}: no teacher; give teacher: PATH (an acl "
                              "checkpoint or run folder) or arch: NAME with pretrained: WEIGHTS.pth")
        if self.arch is not None and not self.pretrained:
            raise ConfigError(f"{path}.pretrained: a teacher given by arch needs its trained weights (a state_dict "
                              "file); a randomly initialised teacher teaches nothing")
        if self.teacher is not None and self.pretrained is not None:
            raise ConfigError(f"{path}.pretrained: only with arch; an acl checkpoint carries its own weights")
        if not 0 <= self.alpha <= 1:
            raise ConfigError(f"{path}.alpha: must be in [0, 1], got {self.alpha}")
        if self.temperature <= 0:
            raise ConfigError(f"{path}.temperature: must be > 0, got {self.temperature}")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: Optional[DistillConfig] = None  # null: labels only

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)
