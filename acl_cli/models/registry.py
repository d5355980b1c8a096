"""Named model constructors (``@register_model``), as timm does."""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

from torch import nn


@dataclass(frozen=True)
class AuthorsCSGInit:
    """How the ACL authors initialised the generator and codes for an architecture family."""
    generator: str  # "kaiming_normal", "linear_default" (nn.Linear's kaiming-uniform, a=sqrt(5)) or "binary"
    code_mean: float  # codes ~ N(code_mean, 1)


# CIFAR ResNet: ``kaiming_normal_`` generator; codes ``normal_(1/1000)``, i.e. mean 0.001 and std 1.
CIFAR_RESNET_INIT = AuthorsCSGInit("kaiming_normal", 1e-3)
# DenseNet and ImageNet: nn.Linear's default generator init, codes ``randn``.
DEFAULT_CSG_INIT = AuthorsCSGInit("linear_default", 0.0)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    constructor: Callable[..., nn.Module]
    input_size: int  # the image side the architecture is designed for
    csg_init: AuthorsCSGInit
    num_classes: int  # classifier outputs when a config does not say: the constructor's default
    authors_targets: tuple[str, ...]  # the conv roles the authors generated in this architecture
    external: bool = False  # built plain (torchvision, timm, a user's factory) and converted afterwards
    baseline_of: str | None = None  # a baseline the authors compared CSG with: the original it stands in for
    csg_note: str = ""  # why a CSG finds nothing to generate with the default targets, where that is so


MODELS: dict[str, ModelEntry] = {}


def register_model(*, input_size: int, csg_init: AuthorsCSGInit, authors_targets: tuple[str, ...] = ("block",),
                   baseline_of: str | None = None, csg_note: str = ""):
    def decorate(constructor):
        classes = inspect.signature(constructor).parameters["num_classes"].default
        MODELS[constructor.__name__] = ModelEntry(constructor.__name__, constructor, input_size, csg_init, classes,
                                                  tuple(authors_targets), baseline_of=baseline_of, csg_note=csg_note)
        return constructor
    return decorate
