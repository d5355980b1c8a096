"""The baselines the ACL authors set beside CSG on the CIFAR ResNet: separable, CReLU and p4 group convolutions.

Each is the ``resnet56`` of one of their files (hamedomidvar/associativeconv, Implementations/CIFAR10/models/),
registered at every depth of :mod:`.cifar_resnet` as ``resnet{N}_sep``, ``resnet{N}_crelu`` and
``resnet{N}_gcnn``. Parameters, their order and the outputs for the same weights are theirs (``acl
import-original`` maps their key names); the quirks below are part of the networks and kept.

``_sep`` (``resnet_sep.py``, block ``ResNetBasicblockSep1``; Chollet, "Xception", CVPR 2017; Howard et al.,
"MobileNets", 2017):

* the first 3x3 conv of every block is a depthwise 3x3 then a pointwise 1x1, nothing between; the stride sits
  on the pointwise conv, so the depthwise one runs at full resolution (same outputs as a strided one, more
  work). The second 3x3 conv stays plain.
* the stem is separable too: a depthwise 3x3 over the three colours, a 1x1 to 16 channels, BN, ReLU.
* every conv, depthwise ones included, is initialised N(0, 2/(k*k*out)) as in their plain ResNet.

``_crelu`` (``resnet_crelu.py``, block ``ResNetBasicblockCRELU``; Shang et al., "Understanding and Improving
Convolutional Neural Networks via Concatenated Rectified Linear Units", ICML 2016):

* half the widths (8, 16, 32); every ReLU inside a block, after the stem and before the classifier is a CReLU,
  ``cat(relu(x), relu(-x))``, which doubles the channels back: conv_a reads 2x the block input's channels,
  conv_b reads 2x its own outputs.
* the first block sees the stem's CReLU output (16 channels) as it is, and its shortcut adds only the first 8
  of them, ``relu(x)``, dropping ``relu(-x)``.
* every other block, and the classifier, CReLU a block output that a ReLU made non-negative, so the
  ``relu(-x)`` half they read is all zeros: the conv_a and classifier weights on that half never change an
  output (weight decay alone moves them).
* shortcuts that change shape add the block's input before its CReLU (option A: every second pixel, zero
  channels appended).

``_gcnn`` (``resnet_gcnn.py``, block ``ResNetBasicblockG``; Cohen & Welling, "Group Equivariant Convolutional
Networks", ICML 2016):

* both 3x3 convs of every block are p4 group convolutions, GrouPy's ``P4ConvP4(C/4 -> C/4)``: the C channels
  are read as C/4 fields of 4 orientations (:mod:`.p4_conv`, ours in plain torch). Each has a bias (GrouPy's
  default) that the BN after it cancels.
* the stem is a plain 3x3 conv (no lifting ``P4ConvZ2``), BN normalises each channel on its own rather than
  each field, and the head pools space only: the p4 layers are equivariant, the network is not invariant.
* their init loop touches ``nn.Conv2d`` only, so the p4 filters keep GrouPy's Xavier-normal init.

All three: option-A shortcuts, global average pooling (their ``AvgPool2d(8)``: the same on 32x32 images), a
linear classifier. With a CSG (``model.csg``) the plain 3x3 block convs are generated: conv_b of ``_sep``, both
convs of ``_crelu``. Depthwise and p4 convs never are (a slice cannot be cropped from a grouped kernel; a p4
filter acts in four rotations), so ``_gcnn`` with the default targets is refused in one line: name others.
"""
from __future__ import annotations

from typing import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from ..csg import ConvFactory, plain_conv
from .baseline_layers import SeparableConv2d, crelu, replacing
from .cifar_resnet import DEPTHS, CifarResNet, OptionAShortcut, blocks_per_stage, init_as_authors
from .p4_conv import ORIENTATIONS, P4ConvP4
from .registry import CIFAR_RESNET_INIT, register_model


def separable_resnet(depth: int, num_classes: int = 10, conv: ConvFactory = plain_conv,
                     norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d) -> CifarResNet:
    """The CIFAR ResNet with a separable stem and separable first convs (``resnet_sep.py``)."""
    def make(in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int, role: str):
        roles = {"depthwise_role": "stem", "pointwise_role": "stem"} if role == "stem" else {}
        return SeparableConv2d(in_channels, out_channels, conv, kernel_size, stride, **roles)
    return CifarResNet(depth, num_classes, replacing(conv, ("stem", "block.first"), make), norm_layer)


def p4_resnet(depth: int, num_classes: int = 10, conv: ConvFactory = plain_conv,
              norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d) -> CifarResNet:
    """The CIFAR ResNet with p4 group convs in every block (``resnet_gcnn.py``)."""
    def make(in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int, role: str):
        return P4ConvP4(in_channels // ORIENTATIONS, out_channels // ORIENTATIONS, kernel_size, stride, padding)
    model = CifarResNet(depth, num_classes, replacing(conv, ("block.first", "block.second"), make), norm_layer)
    for m in model.modules():  # the authors' init loop did not reach GrouPy's layers: their own init stands
        if isinstance(m, P4ConvP4):
            m.reset_parameters()
    return model


class LeadingChannels(nn.Module):
    """The first ``channels`` channels (the CReLU network's first shortcut: ``relu(x)`` of the stem's CReLU)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x: Tensor) -> Tensor:
        return x[:, : self.channels]


class CReLUBlock(nn.Module):
    """conv_a -> BN -> CReLU -> conv_b -> BN, plus the shortcut of the block's input, then ReLU; the input is
    CReLU'd before conv_a unless it already is (the network's first block)."""

    def __init__(self, in_planes: int, planes: int, stride: int, conv: ConvFactory,
                 norm_layer: Callable[[int], nn.Module], shortcut: nn.Module, crelu_input: bool) -> None:
        super().__init__()
        self.crelu_input = crelu_input
        self.conv_a = conv(in_planes, planes, 3, stride=stride, padding=1, role="block.first")
        self.bn_a = norm_layer(planes)
        self.conv_b = conv(2 * planes, planes, 3, stride=1, padding=1, role="block.second")
        self.bn_b = norm_layer(planes)
        self.shortcut = shortcut

    def forward(self, x: Tensor) -> Tensor:
        out = crelu(self.bn_a(self.conv_a(crelu(x) if self.crelu_input else x)))
        out = self.bn_b(self.conv_b(out))
        return F.relu(out + self.shortcut(x))


class CReLUResNet(nn.Module):
    """The CIFAR ResNet at half width with CReLUs (``resnet_crelu.py``); depth 6n+2."""

    def __init__(self, depth: int, num_classes: int = 10, conv: ConvFactory = plain_conv,
                 norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d) -> None:
        super().__init__()
        n = blocks_per_stage(depth)
        self.conv1 = conv(3, 8, 3, stride=1, padding=1, role="stem")
        self.bn1 = norm_layer(8)
        stages, width = [], 8  # channels of a block's input before its CReLU
        for planes, stride in ((8, 1), (16, 2), (32, 2)):
            blocks = []
            for i in range(n):
                first, step = not stages and i == 0, stride if i == 0 else 1
                shortcut = (LeadingChannels(planes) if first else OptionAShortcut(step, planes - width)
                            if step != 1 or width != planes else nn.Identity())
                blocks.append(CReLUBlock(2 * width, planes, step, conv, norm_layer, shortcut, crelu_input=not first))
                width = planes
            stages.append(nn.Sequential(*blocks))
        self.stage1, self.stage2, self.stage3 = stages
        self.classifier = nn.Linear(2 * width, num_classes)
        init_as_authors(self)

    def forward(self, x: Tensor) -> Tensor:
        x = crelu(self.bn1(self.conv1(x)))
        x = crelu(self.stage3(self.stage2(self.stage1(x))))
        return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))


VARIANTS: dict[str, tuple[Callable[..., nn.Module], str, str]] = {  # builder, what it is, why a CSG finds nothing
    "sep": (separable_resnet, "separable first convs and stem", ""),
    "crelu": (CReLUResNet, "CReLUs at half width", ""),
    "gcnn": (p4_resnet, "p4 group convs in every block",
             "its block convs are p4 group convolutions, which a CSG never generates; name other roles in "
             "model.csg.targets (e.g. [stem])"),
}


def _make(depth: int, variant: str) -> None:
    builder, what, note = VARIANTS[variant]

    def constructor(num_classes: int = 10, conv: ConvFactory = plain_conv, **kwargs) -> nn.Module:
        return builder(depth, num_classes, conv, **kwargs)
    constructor.__name__ = constructor.__qualname__ = f"resnet{depth}_{variant}"
    constructor.__doc__ = f"CIFAR ResNet-{depth} with {what} (the authors' resnet_{variant}.py baseline)."
    register_model(input_size=32, csg_init=CIFAR_RESNET_INIT, baseline_of=f"resnet{depth}", csg_note=note)(constructor)


for _depth in DEPTHS:
    for _variant in VARIANTS:
        _make(_depth, _variant)
