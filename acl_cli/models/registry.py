"""Named model constructors (``@register_model``), as timm does."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn


@dataclass(frozen=True)
class AuthorsCSGInit:
    """How the ACL authors initialised the generator and codes for an architecture family."""
    generator: str  # "kaiming_normal" or "linear_default" (nn.Linear's kaiming-uniform, a=sqrt(5))
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


MODELS: dict[str, ModelEntry] = {}


def register_model(*, input_size: int, csg_init: AuthorsCSGInit):
    def decorate(constructor):
        MODELS[constructor.__name__] = ModelEntry(constructor.__name__, constructor, input_size, csg_init)
        return constructor
    return decorate
