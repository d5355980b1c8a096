"""The baselines the ACL authors set beside CSG on DenseNet-BC: separable, CReLU and p4 group convolutions.

Each is the k=48 network of one of their files (hamedomidvar/associativeconv, Implementations/CIFAR10/models/:
``densenet_sep.densenet_cifar``, ``densenet_crelu.densenet_cifar_crelu``, ``densenet_gcnn.densenet_cifar_g``),
registered at every depth and growth rate of :mod:`.densenet_bc` as ``densenet_bc_{D}_{k}_sep``, ``_crelu`` and
``_gcnn``. Parameters, their order and the outputs for the same weights are theirs (``acl import-original`` maps
their key names); the quirks below are part of the networks and kept. PyTorch's default init, as theirs.

``_sep`` (``densenet_sep.py``; Chollet, "Xception", CVPR 2017; Howard et al., "MobileNets", 2017):

* each bottleneck's 3x3 conv is a depthwise 3x3 over its 4k channels then a pointwise 1x1 to k, nothing between.
* the stem is a depthwise 3x3 over the colours then a 1x1 conv to 2k **with padding 1**, so the feature maps are
  34x34 (a ring of zeros around the image's), then 17x17 and 8x8 after the transitions.

``_crelu`` (``densenet_crelu.py``, ``BottleneckCRELU``; Shang et al., "Understanding and Improving Convolutional
Neural Networks via Concatenated Rectified Linear Units", ICML 2016):

* half the widths: the stem gives k channels, each bottleneck adds k/2 (a 1x1 conv to 2k, a 3x3 conv to k/2);
  every BN-ReLU is a BN-CReLU, ``cat(relu(bn(x)), relu(-bn(x)))``, so each conv and the classifier read twice
  the channels; transitions compress the width before the CReLU (``floor(in/2)`` from ``2*in`` channels).
* each BN is called twice per CReLU, as they wrote it: the same outputs, but in training the running statistics
  are updated twice per step (:func:`.baseline_layers.crelu_normalized_twice`).

``_gcnn`` (``densenet_gcnn.py``, ``BottleneckG``; Cohen & Welling, "Group Equivariant Convolutional Networks",
ICML 2016):

* each bottleneck's 3x3 conv is GrouPy's ``P4ConvP4(k -> k/4)`` with a bias: its 4k input channels read as k
  fields of 4 orientations, k output channels as k/4 fields (:mod:`.p4_conv`, ours in plain torch). The stem,
  the 1x1 convs and the transitions are plain, and BN normalises each channel on its own.
* their module holds a CSG that nothing calls, ``nn.Linear(72, 12*12*3*3, bias=False)``: 93,312 parameters in
  every count and checkpoint of it, at every growth rate. Kept as ``unused_csg`` (its parameters right after the
  stem's, as theirs), frozen: it never received a gradient in their training either, and a distributed run
  needs every trainable parameter used.

All three: their final ``AvgPool2d(8)`` is global average pooling here (the same on 32x32 images). With a CSG
(``model.csg``) the plain 3x3 convs are generated, i.e. those of ``_crelu``; depthwise and p4 convs never are
(a slice cannot be cropped from a grouped kernel; a p4 filter acts in four rotations), so ``_sep`` and
``_gcnn`` with the default targets are refused in one line: name other roles (their 1x1 convs, a 1x1 slice).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..csg import ConvFactory, plain_conv
from .baseline_layers import SeparableConv2d, crelu_normalized_twice, replacing
from .densenet_bc import SIZES, DenseNetBC
from .p4_conv import ORIENTATIONS, P4ConvP4
from .registry import DEFAULT_CSG_INIT, register_model

UNUSED_CSG_SHAPE = (12 * 12 * 3 * 3, 72)  # densenet_gcnn.py: SLICE_SHAPE [12, 12, 3, 3], CODE_SIZE 72


def separable_densenet(depth: int, growth: int, num_classes: int = 10, conv: ConvFactory = plain_conv,
                       norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d) -> DenseNetBC:
    """DenseNet-BC with separable bottleneck 3x3 convs and the separable, 1-pixel-padded stem (``densenet_sep.py``)."""
    def make(in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int, role: str):
        if role == "stem":
            return SeparableConv2d(in_channels, out_channels, conv, kernel_size, pointwise_padding=1,
                                   depthwise_role="stem", pointwise_role="stem")
        return SeparableConv2d(in_channels, out_channels, conv, kernel_size)
    return DenseNetBC(depth, growth, num_classes, conv=replacing(conv, ("stem", "block"), make), norm_layer=norm_layer)


class UnusedCSG(nn.Module):
    """The generator their G-CNN DenseNet creates and never calls: a frozen weight, nn.Linear's default init."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(UNUSED_CSG_SHAPE), requires_grad=False)
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))


def p4_densenet(depth: int, growth: int, num_classes: int = 10, conv: ConvFactory = plain_conv,
                norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d) -> DenseNetBC:
    """DenseNet-BC with p4 bottleneck 3x3 convs and their unused CSG (``densenet_gcnn.py``)."""
    def make(in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int, role: str):
        return P4ConvP4(in_channels // ORIENTATIONS, out_channels // ORIENTATIONS, kernel_size, stride, padding)
    model = DenseNetBC(depth, growth, num_classes, conv=replacing(conv, ("block",), make), norm_layer=norm_layer)
    after_stem = {name: model._modules.pop(name) for name in list(model._modules) if name != "conv1"}
    model.unused_csg = UnusedCSG()  # registered where theirs is: right after the stem
    for name, module in after_stem.items():
        model.add_module(name, module)
    return model


class CReLUBottleneck(nn.Module):
    """BN-CReLU-1x1 conv to 2k, BN-CReLU-3x3 conv to k/2; the new features concatenated in front."""

    def __init__(self, in_planes: int, growth: int, conv: ConvFactory, norm_layer: Callable[[int], nn.Module]):
        super().__init__()
        self.bn1 = norm_layer(in_planes)
        self.conv1 = conv(2 * in_planes, 2 * growth, 1, role="pointwise")
        self.bn2 = norm_layer(2 * growth)
        self.conv2 = conv(4 * growth, growth // 2, 3, padding=1, role="block")

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(crelu_normalized_twice(self.bn1, x))
        out = self.conv2(crelu_normalized_twice(self.bn2, out))
        return torch.cat([out, x], 1)


class CReLUTransition(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, conv: ConvFactory, norm_layer: Callable[[int], nn.Module]):
        super().__init__()
        self.bn = norm_layer(in_planes)
        self.conv = conv(2 * in_planes, out_planes, 1, role="transition")

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(self.conv(crelu_normalized_twice(self.bn, x)), 2)


class CReLUDenseNet(nn.Module):
    """DenseNet-BC at half width with CReLUs (``densenet_crelu.py``); depth 6m+4, an even growth rate."""

    def __init__(self, depth: int, growth: int, num_classes: int = 10, reduction: float = 0.5,
                 conv: ConvFactory = plain_conv, norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d):
        super().__init__()
        if depth < 10 or (depth - 4) % 6 or growth % 2:
            raise ValueError(f"CReLU DenseNet-BC needs depth 6m+4 and an even growth rate, got {depth}, {growth}")
        m, added = (depth - 4) // 6, growth // 2  # each bottleneck adds k/2 channels
        planes = 2 * added
        self.conv1 = conv(3, planes, 3, padding=1, role="stem")
        for i in (1, 2, 3):
            layers = []
            for _ in range(m):
                layers.append(CReLUBottleneck(planes, growth, conv, norm_layer))
                planes += added
            setattr(self, f"dense{i}", nn.Sequential(*layers))
            if i < 3:
                out_planes = int(math.floor(planes * reduction))
                setattr(self, f"trans{i}", CReLUTransition(planes, out_planes, conv, norm_layer))
                planes = out_planes
        self.bn = norm_layer(planes)
        self.linear = nn.Linear(2 * planes, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        x = self.trans1(self.dense1(x))
        x = self.trans2(self.dense2(x))
        x = crelu_normalized_twice(self.bn, self.dense3(x))
        return self.linear(F.adaptive_avg_pool2d(x, 1).flatten(1))


VARIANTS: dict[str, tuple[Callable[..., nn.Module], str, str]] = {  # builder, what it is, why a CSG finds nothing
    "sep": (separable_densenet, "separable bottleneck 3x3 convs and stem",
            "its bottleneck 3x3 convs are depthwise, which a CSG never generates; name other roles in "
            "model.csg.targets (e.g. [pointwise] with a 1x1 slice)"),
    "crelu": (CReLUDenseNet, "CReLUs at half width", ""),
    "gcnn": (p4_densenet, "p4 group bottleneck 3x3 convs",
             "its bottleneck 3x3 convs are p4 group convolutions, which a CSG never generates; name other roles "
             "in model.csg.targets (e.g. [pointwise] with a 1x1 slice)"),
}


def _make(depth: int, growth: int, variant: str) -> None:
    builder, what, note = VARIANTS[variant]

    def constructor(num_classes: int = 10, conv: ConvFactory = plain_conv, **kwargs) -> nn.Module:
        return builder(depth, growth, num_classes, conv=conv, **kwargs)
    constructor.__name__ = constructor.__qualname__ = f"densenet_bc_{depth}_{growth}_{variant}"
    constructor.__doc__ = (f"DenseNet-BC-{depth}, k={growth}, with {what} (the authors' densenet_{variant}.py "
                           "baseline).")
    register_model(input_size=32, csg_init=DEFAULT_CSG_INIT, baseline_of=f"densenet_bc_{depth}_{growth}",
                   csg_note=note)(constructor)


for _depth, _growth in SIZES:
    for _variant in VARIANTS:
        _make(_depth, _growth, _variant)
