"""Experiment configuration: typed dataclasses, YAML files with ``base:`` inheritance, ``--set`` overrides.

Every key is checked before anything runs: unknown keys name the closest valid one, wrong types and
impossible values say which key and why.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import os
import re
import stat
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from ..errors import UserError
from ..files import read_bytes


class ConfigError(UserError):
    pass


MAX_CONFIG_BYTES = 1 << 20  # a config is a page of YAML; anything this large is not one
MAX_YAML_VALUES = 100_000  # values after expanding aliases: refuses "billion laughs" documents
SEED_LIMIT = 2**32
DEVICE_PATTERN = r"auto|cpu|cuda(:\d{1,3})?"  # train.device and every --device
# Settings that change how a run is carried out, not what it computes: a resume may change them, and
# acl report groups runs that differ only in these (and their seed).
NOT_COMPUTATIONAL = ("train.progress", "train.log_every_steps", "train.checkpoint_every_steps", "train.device",
                     "train.compile", "train.compile_mode", "data.root", "data.download", "data.workers",
                     "data.eval_batch_size")
_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def quote(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: an error message never echoes a huge value."""
    return cut(repr(value), limit)


def cut(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


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

    def validate(self, path: str) -> None:
        self.root = os.path.expanduser(self.root)  # --set data.root=~/data: no shell expands it there
        if not 0.0 <= self.val_split < 1.0:
            raise ConfigError(f"{path}.val_split: must be in [0, 1), got {self.val_split}")
        for key in ("batch_size", "eval_batch_size", "image_size", "train_subset", "synthetic_size"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"{path}.{key}: must be >= 1, got {value}")
        if self.workers < 0:
            raise ConfigError(f"{path}.workers: must be >= 0, got {self.workers}")
        if not 0 <= self.split_seed < SEED_LIMIT:
            raise ConfigError(f"{path}.split_seed: must be in [0, 2**32), got {self.split_seed}")


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

    def validate(self, path: str) -> None:
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


# --------------------------------------------------------------------------------------------------
# Building typed configs from plain data


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an int", float: "a number", bool: "true/false", str: "a string", type(None): "null"}.get(
        tp, str(tp))


def _convert(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        arms = [a for a in args if a is not type(None)]
        if len(arms) == 1 or (isinstance(value, dict) and any(dataclasses.is_dataclass(a) for a in arms)):
            arm = next((a for a in arms if dataclasses.is_dataclass(a)), arms[0]) if isinstance(value, dict) else arms[0]
            return _convert(value, arm, path)
        for arg in arms:
            try:
                return _convert(value, arg, path)
            except ConfigError:
                continue
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {quote(value)}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{path}: expected {_type_name(tp)}, got {quote(value)}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected {_type_name(tp)}, got {quote(value)}")
        (item,) = typing.get_args(tp)
        return [_convert(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if tp is float and isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string; every ML config writes it so
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }.get(tp)
    if not ok:
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {quote(value)}")
    if tp is int and not -2**63 <= value < 2**63:
        raise ConfigError(f"{path}: {quote(value)} is out of range")
    if tp is float and isinstance(value, int) and abs(value) >= 2**1023:  # float() of it overflows (or nearly)
        raise ConfigError(f"{path}: {quote(value)} is out of range")
    if tp is float and not math.isfinite(value):
        raise ConfigError(f"{path}: must be a finite number, got {value}")
    if tp is str and "\0" in value:  # no path, name or setting holds one; the OS would refuse it later, unclearly
        raise ConfigError(f"{path}: a NUL byte is not allowed, got {quote(value)}")
    return float(value) if tp is float else value


def _fields_of(tp: Any) -> list[str]:
    """The setting names inside a section's type (``Optional[DistillConfig]`` too); none for a plain value."""
    section = next((a for a in (tp, *typing.get_args(tp)) if dataclasses.is_dataclass(a)), None)
    return [f.name for f in dataclasses.fields(section)] if section is not None else []


def keys_named(name: str) -> list[str]:
    """The dotted settings called ``name`` in any section (``epochs`` -> ``["train.epochs"]``)."""
    hints = typing.get_type_hints(Config)
    return [f"{section.name}.{name}" for section in dataclasses.fields(Config) if name in _fields_of(hints[section.name])]


def from_dict(cls: type, data: Any, path: str = "config") -> Any:
    """A validated ``cls`` instance from plain data; raises :class:`ConfigError` naming the bad key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping, got {quote(data)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        where = f"{path}.{key}" if path != "config" else str(key)
        if key not in names:
            inside = [f"{section}.{key}" for section in names if key in _fields_of(hints[section])]
            close = inside or difflib.get_close_matches(str(key), names, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(names)}"
            raise ConfigError(f"unknown key {quote(where)}{hint}")
        kwargs[key] = _convert(value, hints[key], where)
    missing = [k for k in getattr(cls, "REQUIRED", ()) if k not in data]
    if missing:
        raise ConfigError(f"{path}: missing {', '.join(missing)} (a csg block needs slice_shape and code_size, "
                          "e.g. {slice_shape: [12, 12, 3, 3], code_size: 72}; null for the original network)")
    obj = cls(**kwargs)
    if hasattr(obj, "validate"):
        obj.validate(path if path != "config" else cls.__name__.removesuffix("Config").lower())
    return obj


# --------------------------------------------------------------------------------------------------
# Files and overrides


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """Values in ``node`` with every alias expanded; computed per distinct node, so bombs cost nothing here."""
    if id(node) not in memo:
        memo[id(node)] = 1  # a node reached again through itself (a recursive alias) counts once
        children = node.value if isinstance(node, (yaml.SequenceNode, yaml.MappingNode)) else []
        pairs = [c for kv in children for c in kv] if isinstance(node, yaml.MappingNode) else children
        memo[id(node)] = 1 + sum(_expanded_size(c, memo) for c in pairs)
    return memo[id(node)]


class _Loader(yaml.SafeLoader):
    """Safe YAML whose integers are read as YAML 1.2 (and every ML config writer) reads them: PyYAML's YAML 1.1
    takes ``010`` as octal 8 (``--set train.seed=010`` would be seed 8), ``1:20`` as 80 (base 60) and
    ``1_000`` as 1000. Here ``010`` is 10, ``0o10`` octal, ``0x10`` hex, and anything else is text."""


_INT = "tag:yaml.org,2002:int"
_Loader.yaml_implicit_resolvers = {first: [(tag, rx) for tag, rx in resolvers if tag != _INT]
                                   for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(_INT, re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789"))


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node)
    return int(text, 0) if text.startswith(("0o", "0x")) else int(text, 10)  # base 10 keeps leading zeros decimal


_Loader.add_constructor(_INT, _construct_int)


def parse_yaml(text: str, where: str) -> Any:
    """Safe YAML (no tags that run code), refusing documents that expand past ``MAX_YAML_VALUES`` values:
    the document is composed and measured before anything is constructed."""
    try:
        loader = _Loader(text)  # its reader refuses a control character (a NUL) at once
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: not YAML text: {str(e).splitlines()[0]} (character {e.position + 1})") from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}) > MAX_YAML_VALUES:
            raise ConfigError(f"{where}: refusing a YAML document of more than {MAX_YAML_VALUES:,} values "
                              "(aliases expanded)")
        return loader.construct_document(node)
    except RecursionError:
        raise ConfigError(f"{where}: YAML nested too deeply") from None
    except (ValueError, LookupError, AttributeError, TypeError) as e:  # an int of thousands of digits, Python refuses
        if "integer string conversion" not in str(e):  # a tag on text it cannot take: !!int 0x, !!bool x, !!timestamp
            raise ConfigError(f"{where}: YAML syntax error: a value its tag cannot hold ({type(e).__name__}: "
                              f"{cut(str(e), 100)})") from None
        raise ConfigError(f"{where}: a number with more than 4,300 digits; no setting takes such a value") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark else where
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{at}: YAML syntax error: {problem}") from None
    finally:
        loader.dispose()


def _read_yaml(path: Path) -> dict:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{path} is a directory, not a config file")
    if st.st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: {st.st_size:,} bytes is too large for a config file")
    try:  # a regular file only (/dev/zero or a FIFO would never end), at most the cap
        data = read_bytes(path, MAX_CONFIG_BYTES, "config file")
    except UserError as e:
        raise ConfigError(str(e)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text file (a YAML config is expected)") from None
    data = parse_yaml(text, str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (model, data, ...)")
    return data


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """A nested config dict as ``{"model.csg.code_size": 72, ...}``."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def lookup(tree: Any, key: str) -> Any:
    """``tree["model"]["arch"]`` for ``"model.arch"``; None where a level is missing or not a mapping."""
    for part in key.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def shipped_configs_dir() -> Path:
    """The configs that ship with acl: inside the installed package, or the clone's ``configs/``."""
    package = Path(__file__).resolve().parents[1]  # acl_cli, above this subpackage
    installed, clone = package / "configs", package.parent / "configs"
    return installed if installed.is_dir() or not (package.parent / "setup.cfg").is_file() else clone


def shipped_configs() -> dict[str, Path]:
    """Shipped config name (its path under configs/ without .yaml, e.g. ``cifar10/resnet56_csg_12_72``) -> file."""
    root = shipped_configs_dir()
    if not root.is_dir():
        return {}
    return {p.relative_to(root).with_suffix("").as_posix(): p for p in sorted(root.rglob("*.yaml"))}


def describe(path: Path) -> str:
    """A config's first comment line: what it is."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
        if line.strip():
            break
    return ""


def resolve_config_path(path: str | os.PathLike) -> Path:
    """A config file: ``path`` itself when a file is there (a file in the working directory always wins),
    else the shipped config of that name (``quickstart``, ``cifar10/resnet56_csg_12_72``). A folder is not a
    config: a sweep's output folder ``cifar10/resnet20`` does not hide the shipped config of that name."""
    candidate = Path(path)
    try:
        if candidate.is_symlink() or (candidate.exists() and not candidate.is_dir()):
            return candidate
        yaml_file = candidate.with_name(candidate.name + ".yaml")
        if candidate.suffix != ".yaml" and yaml_file.is_file():
            return yaml_file  # your quickstart.yaml over the shipped quickstart
    except (OSError, ValueError) as e:  # a name too long for the filesystem, a NUL byte
        raise ConfigError(f"--config {cut(str(path))}: not a usable file name ({getattr(e, 'strerror', None) or e})"
                          ) from None
    name = str(path).removesuffix(".yaml").removeprefix("configs/")
    shipped = shipped_configs()
    if name in shipped:
        return shipped[name]
    if candidate.is_dir():
        raise ConfigError(f"{cut(str(path))} is a directory, not a config file (nor a shipped config's name)")
    close = difflib.get_close_matches(name, list(shipped), n=3, cutoff=0.6)
    hint = (f"; closest shipped configs: {', '.join(close)}" if close else
            "; acl config list shows the shipped ones" if shipped else "")
    raise ConfigError(f"config file not found: {cut(str(path))} (no such file, nor a shipped config){hint}")


def is_shipped(path: Path) -> bool:
    """Whether ``path`` is one of the configs that ship with acl."""
    return path.resolve().is_relative_to(shipped_configs_dir().resolve())


def load_raw(path: str | os.PathLike, _seen: tuple = ()) -> dict:
    """A YAML file (or a shipped config's name) merged over its ``base:`` chain (paths relative to the file
    that names them, else a shipped config's name)."""
    path = resolve_config_path(path) if not _seen else Path(path)
    data = _read_yaml(path)  # first: a link loop is one line here, where resolve() would raise RuntimeError
    if path.resolve() in _seen:
        raise ConfigError(f"{path}: 'base' chain loops back to itself")
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str) or "\0" in base or not base.strip():
        raise ConfigError(f"{path}: 'base' must be a file name or a shipped config's name, got {quote(base)}")
    base_path = path.parent / base
    if not base_path.exists() and not Path(base).is_absolute() and base.removesuffix(".yaml") in shipped_configs():
        base_path = shipped_configs()[base.removesuffix(".yaml")]
    return _merge(load_raw(base_path, _seen + (path.resolve(),)), data)


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {quote(item)}: expected key=value, e.g. --set optim.lr=0.1")
    key, _, text = item.partition("=")
    keys = key.strip().split(".")
    if not all(keys):
        raise ConfigError(f"--set {quote(item)}: empty key")
    try:
        value = parse_yaml(text, f"--set {key}") if text.strip() else None
    except ConfigError as e:
        raise ConfigError(f"--set {quote(item)}: the value is not valid YAML ({e})") from None
    return keys, value


def apply_overrides(data: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """A new config dict: ``data`` (a checkpoint's stored config, say) is never changed."""
    data = copy.deepcopy(data)
    for item in overrides:
        keys, value = parse_override(item)
        node = data
        for k in keys[:-1]:
            if not isinstance(node.get(k), dict):
                node[k] = {}
            node = node[k]
        node[keys[-1]] = value
    return data


def build_config(data: dict) -> Config:
    cfg = from_dict(Config, data)
    if cfg.data.name == "digits" and cfg.data.val_split == 0:
        raise ConfigError("data.val_split: digits has no held-out split; set a fraction such as 0.2")
    return cfg


def absolute_paths(cfg: Config) -> Config:
    """The data root and the teacher's files as absolute paths, in place: a run stores them so (eval and
    resume from another directory read the same files), and ``config diff`` compares them so."""
    cfg.data.root = os.path.abspath(cfg.data.root)
    if cfg.distill is not None:
        for key in ("teacher", "pretrained"):
            if getattr(cfg.distill, key) is not None:
                setattr(cfg.distill, key, os.path.abspath(getattr(cfg.distill, key)))
    return cfg


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Resolve a config file (or the defaults) with ``key=value`` overrides into a validated Config."""
    data = load_raw(path) if path is not None else {}
    return build_config(apply_overrides(data, overrides))
