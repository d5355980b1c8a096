"""The model zoo: each architecture written once, its convs made by an injected factory."""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..csg import AUTHORS_TARGETS, ROLES, GeneratedConvFactory, SliceGenerator, attach_generator, convert
from ..config import ConfigError, ModelConfig, quote
from .registry import MODELS, AuthorsCSGInit, ModelEntry, register_model
from . import cifar_resnet, densenet_bc, imagenet_densenet, imagenet_resnet, mobilenet_v2, shufflenet_v2
from . import cifar_resnet_baselines, densenet_bc_baselines

# importing a family registers its models; the baselines extend the CIFAR ResNet and DenseNet-BC families
FAMILIES = (cifar_resnet, densenet_bc, imagenet_densenet, imagenet_resnet, mobilenet_v2, shufflenet_v2,
            cifar_resnet_baselines, densenet_bc_baselines)

__all__ = ["MODELS", "create_model", "get_model_entry", "list_models", "register_model", "resolve_model_config",
           "resolve_targets"]


def list_models() -> list[str]:
    return sorted(MODELS)


def get_model_entry(arch: str) -> ModelEntry:
    """A zoo entry, or one for ``torchvision:NAME``, ``timm:NAME`` or ``package.module:factory``."""
    if arch in MODELS:
        return MODELS[arch]
    if ":" in arch:
        from .external import external_entry
        return external_entry(arch)
    raise ValueError(f"unknown arch {quote(arch)}; valid: {', '.join(list_models())}, or torchvision:NAME, "
                     "timm:NAME, package.module:factory")


def resolve_targets(targets: str | list[str], arch: str | None = None) -> tuple[str, ...]:
    """``"authors"`` -> the convs the authors generated in ``arch``, ``"all"`` -> every role, or a list of roles."""
    if targets == "authors":
        return get_model_entry(arch).authors_targets if arch else AUTHORS_TARGETS
    if targets == "all":
        return ROLES
    roles = [targets] if isinstance(targets, str) else list(targets)
    unknown = [r for r in roles if r not in ROLES]
    if unknown or not roles:
        raise ValueError(f"unknown conv role(s) {unknown}; valid: authors, all, or a list of {', '.join(ROLES)}")
    return tuple(roles)


def resolve_model_config(model: ModelConfig, where: str = "model") -> ModelConfig:
    """The model section as a run builds it: the arch known to the registry (a ``package.module:factory``
    name imports that module), the csg targets known roles, ``num_classes`` the architecture's when the
    config leaves it out. Fills ``model`` in place and returns it; a ConfigError names the key."""
    try:
        entry = get_model_entry(model.arch)
    except ValueError as e:
        raise ConfigError(f"{where}.arch: {e}") from None
    if model.num_classes is None:
        model.num_classes = entry.num_classes
    if model.csg is not None:
        try:
            resolve_targets(model.csg.targets)
        except ValueError as e:
            raise ConfigError(f"{where}.csg.targets: {e}") from None
    return model


def _external_model(entry: ModelEntry, num_classes: int) -> nn.Module:
    model = entry.constructor(num_classes=num_classes)
    if not isinstance(model, nn.Module):
        raise ValueError(f"{entry.name} returned {type(model).__name__} ({quote(model)}), not an nn.Module")
    return model


def create_model(arch: str, num_classes: int | None = None, csg: Any = None) -> nn.Module:
    """Build a registered architecture, original (``csg=None``) or with generated convs.

    ``num_classes`` defaults to the architecture's (10 for the CIFAR nets, 1000 for the ImageNet ones).
    ``csg`` is a :class:`acl_cli.config.CSGConfig` or a mapping with ``slice_shape``, ``code_size`` and
    optionally ``layout``, ``targets``, ``init``, ``freeze`` (``init_from`` is applied by the trainer),
    checked as strictly as a YAML config: a misspelt or missing key is an error.
    """
    from ..config import CSGConfig, from_dict

    entry = get_model_entry(arch)
    num_classes = entry.num_classes if num_classes is None else num_classes
    if csg is None:
        return _external_model(entry, num_classes) if entry.external else entry.constructor(num_classes=num_classes)
    try:
        spec = csg if isinstance(csg, CSGConfig) else from_dict(CSGConfig, dict(csg), "csg")
    except (ConfigError, TypeError) as e:
        raise ValueError(str(e)) from None
    targets = resolve_targets(spec.targets, arch)
    if entry.external:  # built plain, then its eligible convs replaced; roles read off each conv
        model = _external_model(entry, num_classes)
        try:
            # "all" and "authors" as convert() reads them: the roles it can tell apart on any network
            generator = convert(model, spec.slice_shape, spec.code_size,
                                spec.targets if isinstance(spec.targets, str) else targets, spec.layout)
        except ValueError as e:
            raise ValueError(f"{arch}: {e}") from None
    else:
        generator = SliceGenerator(spec.slice_shape, spec.code_size, spec.layout)
        model = entry.constructor(num_classes=num_classes, conv=GeneratedConvFactory(generator, targets))
        if not generator.layers:
            raise ValueError(f"{arch}: no conv of the targeted roles has a {generator.slice_shape[2]}x"
                             f"{generator.slice_shape[3]} kernel, so nothing would be generated"
                             + (f"; {entry.csg_note}" if entry.csg_note else ""))
        attach_generator(model, generator)
    init_csg(generator, spec.init, entry.csg_init)
    generator.weight.requires_grad_(not spec.freeze)
    return model


@torch.no_grad()
def init_csg(generator: SliceGenerator, scheme: str, authors: AuthorsCSGInit) -> None:
    """Initialise the generator as the authors did, then the codes by ``scheme``.

    * ``authors``: codes ~ N(authors.code_mean, 1): for the CIFAR ResNet their ``normal_(1/1000)``, which
      is mean 0.001 and std 1 (not std 0.001); elsewhere ``randn``. Kernels then have a large variance that
      BatchNorm absorbs.
    * ``binary``: the generator of the authors' MobileNetV2/ShuffleNetV2 ``_bcsg`` files, ``sign(kaiming_normal)
      * 0.5`` (with ``freeze: true`` it stays binary, as theirs), codes ``randn``.
    * ``scaled``: codes ~ N(0, s^2) with s per layer such that the generated kernel has the variance of a
      He (fan-out) initialised plain conv, 2 / (kh*kw*out).
    """
    if authors.generator == "kaiming_normal":
        torch.nn.init.kaiming_normal_(generator.weight)
    if scheme == "binary" or (scheme == "authors" and authors.generator == "binary"):  # their *_bcsg.py files
        torch.nn.init.kaiming_normal_(generator.weight)
        generator.weight.copy_(generator.weight.sign() * 0.5)
        for layer in generator.layers:
            layer.codes.normal_(0.0, 1.0)
    elif scheme == "authors":
        for layer in generator.layers:
            layer.codes.normal_(authors.code_mean, 1.0)
    elif scheme == "scaled":
        w = generator.weight
        w_rms = 1.0 if w.is_meta else float(w.pow(2).mean().sqrt())
        kh, kw = generator.slice_shape[2:]
        for layer in generator.layers:
            kernel_std = math.sqrt(2.0 / (kh * kw * layer.out_channels))
            layer.codes.normal_(0.0, kernel_std / (math.sqrt(generator.code_size) * w_rms))
    else:
        raise ValueError(f"unknown CSG init {scheme!r}; valid: authors, scaled, binary")
