"""Import checkpoints published with the authors' code (hamedomidvar/associativeconv).

Their files are ``{'net': state_dict, 'acc': float, 'epoch': int}`` with ``module.`` prefixes, the generator
repeated under every block as ``CSG.weight`` (older files: ``CLG.weight``), codes as ``code`` / ``code2``,
sometimes float16. We rename the keys to our architectures', keep one generator, infer the slice shape and
code size from the tensor shapes (file names are not always right) and load strictly: a file that does not
fit the named architecture is refused, never partially loaded.

Their baselines (``resnet_{sep,crelu,gcnn}.py``, ``densenet_{sep,crelu,gcnn}.py``) import into ``resnet{N}_sep``
... ``densenet_bc_{D}_{k}_gcnn``: a separable pair ``conv_dw``/``conv_pw`` becomes ``depthwise``/``pointwise`` of
one conv, GrouPy's p4 filters are converted to ours (:func:`.models.p4_conv.weight_from_groupy`) and its
``transform_indices`` buffers dropped (indices it recomputes from the kernel size), and the G-CNN DenseNet's
unused ``CSG.weight`` is its ``unused_csg.weight``, not a generator.
"""
from __future__ import annotations

import math
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from .checkpoint import save_checkpoint, torch_load
from .config import Config, CSGConfig, DataConfig, ModelConfig, quote
from .errors import UserError
from .models import create_model, get_model_entry
from .models.p4_conv import weight_from_groupy
from .rundir import check_output_file

_RESNET_RULES = [  # (pattern, replacement) applied in order to each key of their CIFAR ResNet
    (r"^conv_1_3x3\.", "conv1."),
    (r"^bn_1\.", "bn1."),
    (r"^stage_(\d)\.(\d+)\.code$", r"stage\1.\2.conv_a.codes"),
    (r"^stage_(\d)\.(\d+)\.code2$", r"stage\1.\2.conv_b.codes"),
    (r"^stage_(\d)\.", r"stage\1."),
]
_DENSENET_RULES = [
    (r"^dense(\d)\.(\d+)\.code2$", r"dense\1.\2.conv2.codes"),
    (r"^trans3\.bn\.", "bn."),
]
_SHUFFLENET_RULES = [
    (r"^code2$", "conv2.codes"),  # their CSG ShuffleNetV2 generates the final 1x1 conv only
]
_GENERATOR = re.compile(r"(^|\.)(CSG|CLG)\.weight$")
_MOBILENET_RULES = [
    (r"^layers\.(\d+)\.code1$", r"layers.\1.conv1.codes"),  # mobilenetv2_bcsg.py: each block's expansion conv
]
_SEPARABLE_STEM_RULES = [(r"^conv_dw1\.", "conv1.depthwise."), (r"^conv_pw1\.", "conv1.pointwise.")]
_RULES = {"resnet": _RESNET_RULES, "densenet": _DENSENET_RULES, "shufflenet": _SHUFFLENET_RULES,
          "mobilenet": _MOBILENET_RULES,
          "resnet_sep": _SEPARABLE_STEM_RULES + [  # ResNetBasicblockSep1: its first 3x3 conv is a separable pair
              (r"^stage_(\d)\.(\d+)\.conv_dw1\.", r"stage_\1.\2.conv_a.depthwise."),
              (r"^stage_(\d)\.(\d+)\.conv_pw1\.", r"stage_\1.\2.conv_a.pointwise.")] + _RESNET_RULES,
          "resnet_crelu": _RESNET_RULES, "resnet_gcnn": _RESNET_RULES,
          "densenet_sep": _SEPARABLE_STEM_RULES + [
              (r"^dense(\d)\.(\d+)\.conv_dw\.", r"dense\1.\2.conv2.depthwise."),
              (r"^dense(\d)\.(\d+)\.conv_pw\.", r"dense\1.\2.conv2.pointwise.")] + _DENSENET_RULES,
          "densenet_crelu": _DENSENET_RULES,
          "densenet_gcnn": [(r"^CSG\.weight$", "unused_csg.weight")] + _DENSENET_RULES}  # a CSG nothing calls
_KERNEL = {"resnet": 3, "densenet": 3, "shufflenet": 1, "mobilenet": 1}  # the slice window of their generators
_GROUPY_INDICES = re.compile(r"\.transform_indices$")  # GrouPy's buffers: computed from the kernel size, not learned


def _family(arch: str) -> str:
    try:
        module = get_model_entry(arch).constructor.__module__
    except ValueError as e:
        raise UserError(str(e)) from None
    if module.endswith("cifar_resnet"):
        return "resnet"
    if module.endswith("densenet_bc"):
        return "densenet"
    if module.endswith(("cifar_resnet_baselines", "densenet_bc_baselines")):  # resnet56_sep -> resnet_sep
        return ("resnet_" if module.endswith("cifar_resnet_baselines") else "densenet_") + arch.rsplit("_", 1)[1]
    if module.endswith("shufflenet_v2"):
        return "shufflenet"
    if module.endswith("mobilenet_v2"):
        return "mobilenet"
    raise UserError(f"import-original supports the authors' CIFAR ResNets, DenseNet-BC, ShuffleNetV2 and "
                    f"MobileNetV2, not {arch}")


def _read(src: Path) -> dict[str, Any]:
    if not src.exists():
        raise UserError(f"checkpoint not found: {src}")
    data = torch_load(src, "PyTorch checkpoint")
    net = data.get("net") if isinstance(data, dict) else None
    if not isinstance(net, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in net.items()):
        raise UserError(f"{src} is not in the authors' format (a dict with a 'net' state_dict)")
    return data


def convert_state(net: dict[str, torch.Tensor], arch: str) -> tuple[dict[str, torch.Tensor], CSGConfig | None, int]:
    """Their state_dict -> (ours, the CSG settings it implies, num_classes)."""
    family = _family(arch)
    rules, k = _RULES[family], _KERNEL.get(family, 3)
    state, generators = {}, []
    for key, value in net.items():
        key = key.removeprefix("module.")
        value = value.float() if value.is_floating_point() else value
        if family.endswith("_gcnn") and _GROUPY_INDICES.search(key):
            continue
        ours = key
        for pattern, repl in rules:
            ours = re.sub(pattern, repl, ours)
        if _GENERATOR.search(ours):
            generators.append((key, value))
        elif family.endswith("_gcnn") and value.dim() == 5 and value.shape[2] == 4 and value.shape[3] == value.shape[4]:
            # a P4ConvP4 weight (out, in, 4, k, k); any other shape is named by the strict load below
            state[ours] = weight_from_groupy(value)
        else:
            state[ours] = value
    csg = None
    if generators:
        weight = generators[0][1]
        differing = [k for k, v in generators[1:] if not torch.equal(v, weight)]
        if differing:
            warnings.warn(f"{len(differing)} of {len(generators)} generator copies differ from {generators[0][0]} "
                          f"(e.g. {differing[0]}); using {generators[0][0]}", stacklevel=2)
        if weight.dim() != 2:  # checked first: a 0-d or 1-d tensor has no shape[1]
            raise UserError(f"generator of shape {tuple(weight.shape)} is not a square {k}x{k} slice generator")
        side = math.isqrt(weight.shape[0] // (k * k))
        if side * side * k * k != weight.shape[0]:
            raise UserError(f"generator of shape {tuple(weight.shape)} is not a square {k}x{k} slice generator")
        state["csg.weight"] = weight
        csg = CSGConfig(slice_shape=[side, side, k, k], code_size=int(weight.shape[1]), layout="flat")
    head = next((v for k, v in state.items() if k in ("classifier.weight", "linear.weight")), None)
    if head is None:
        raise UserError("no classifier weight (classifier.weight / linear.weight) in the checkpoint")
    if head.dim() != 2 or head.shape[0] < 1:
        raise UserError(f"the classifier weight has shape {tuple(head.shape)}: expected (classes >= 1, features)")
    return state, csg, int(head.shape[0])


def import_original(src: str | Path, arch: str, dst: str | Path, overwrite: bool = False) -> Config:
    """Convert an authors' checkpoint into ours (with a config), so ``acl eval DST`` needs nothing else."""
    src, dst = Path(src), Path(dst)
    check_output_file(dst, overwrite, reads=src)
    _family(arch)
    data = _read(src)
    acc = data.get("acc", -1.0)
    if isinstance(acc, torch.Tensor) and acc.numel() == 1:
        acc = acc.item()
    if isinstance(acc, bool) or not isinstance(acc, (int, float)) or not math.isfinite(acc):
        raise UserError(f"{src}: 'acc' should be the test accuracy (a number), got {quote(acc)}")
    epoch = data.get("epoch", 0) or 0
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise UserError(f"{src}: 'epoch' should be a non-negative int, got {quote(epoch)}")
    state, csg, num_classes = convert_state(data["net"], arch)
    model = create_model(arch, num_classes, None if csg is None else vars(csg))
    expected = model.state_dict()
    for key in [k for k in expected if k.endswith("num_batches_tracked") and k not in state]:
        state[key] = torch.zeros((), dtype=torch.long)  # files from before PyTorch 0.4.1 lack it
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        detail = "; ".join(f"{name} {len(keys)} (e.g. {keys[0]})" for name, keys in
                           (("missing", missing), ("unexpected", unexpected)) if keys)
        raise UserError(f"{src} does not fit {arch}" + (" with a CSG" if csg else "") + f": {detail}")
    wrong = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in expected.items() if state[k].shape != v.shape]
    if wrong:
        k, got, want = wrong[0]
        raise UserError(f"{src} does not fit {arch}: {len(wrong)} tensors have other shapes (e.g. {k}: {got}, "
                        f"expected {want})")
    model.load_state_dict(state, strict=True)
    dataset = "cifar100" if num_classes == 100 else "cifar10"
    cfg = Config(model=ModelConfig(arch=arch, num_classes=num_classes, csg=csg),
                 data=DataConfig(name=dataset, preset="cifar", batch_size=128))
    save_checkpoint({"config": cfg.to_dict(), "model": model.state_dict(),
                     "progress": {"epoch": epoch, "batch": 0, "step": 0, "best_top1": float(acc)},
                     "imported": {"source": str(src), "acc": float(acc), "epoch": epoch}}, dst)
    return cfg
