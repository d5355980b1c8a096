"""MobileNetV2 for CIFAR (Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018),
as the ACL authors' Implementations/CIFAR10/models/mobilenetv2_bcsg.py builds it: a 3x3 stem at stride 1,
the second stage at stride 1 (for 32x32 images), inverted residual blocks (1x1 expansion -> depthwise 3x3 ->
1x1 projection, a 1x1 shortcut when the width changes at stride 1), a 1x1 conv to 1280, average pooling and
a linear classifier. Their module names.

Their CSG variant generates the 1x1 expansion conv of every block (role ``pointwise.expand``) from 16x16x1x1
slices, code size 16, with a binary generator (``sign(kaiming_normal) * 0.5``) that they froze.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..csg import ConvFactory, plain_conv
from .registry import AuthorsCSGInit, register_model

# (expansion, out channels, blocks, first stride); the authors' CIFAR table
STAGES = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
BINARY_CSG_INIT = AuthorsCSGInit("binary", 0.0)  # their *_bcsg.py generator; codes randn


class Block(nn.Module):
    """Expand (1x1) -> depthwise 3x3 -> project (1x1); the residual only at stride 1, as theirs."""

    def __init__(self, in_planes: int, out_planes: int, expansion: int, stride: int, conv: ConvFactory) -> None:
        super().__init__()
        self.stride = stride
        planes = expansion * in_planes
        self.conv1 = conv(in_planes, planes, 1, role="pointwise.expand")
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv(planes, planes, 3, stride=stride, padding=1, groups=planes, role="block")
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv(planes, out_planes, 1, role="pointwise")
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential()
        if stride == 1 and in_planes != out_planes:
            self.shortcut = nn.Sequential(conv(in_planes, out_planes, 1, role="shortcut"), nn.BatchNorm2d(out_planes))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return out + self.shortcut(x) if self.stride == 1 else out


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 10, conv: ConvFactory = plain_conv) -> None:
        super().__init__()
        self.conv1 = conv(3, 32, 3, padding=1, role="stem")
        self.bn1 = nn.BatchNorm2d(32)
        blocks, in_planes = [], 32
        for expansion, out_planes, n, stride in STAGES:
            for s in [stride] + [1] * (n - 1):
                blocks.append(Block(in_planes, out_planes, expansion, s, conv))
                in_planes = out_planes
        self.layers = nn.Sequential(*blocks)
        self.conv2 = conv(320, 1280, 1, role="pointwise.head")
        self.bn2 = nn.BatchNorm2d(1280)
        self.linear = nn.Linear(1280, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layers(F.relu(self.bn1(self.conv1(x))))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.linear(F.adaptive_avg_pool2d(x, 1).flatten(1))


@register_model(input_size=32, csg_init=BINARY_CSG_INIT, authors_targets=("pointwise.expand",))
def mobilenet_v2_cifar(num_classes: int = 10, conv: ConvFactory = plain_conv) -> MobileNetV2:
    """MobileNetV2 for CIFAR (the authors' layout: stride-1 stem and second stage)."""
    return MobileNetV2(num_classes, conv)
