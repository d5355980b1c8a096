"""ResNet for CIFAR (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, section 4.2).

Depth 6n+2: a 3x3 stem, three stages of n basic blocks (16, 32, 64 channels), global average pooling and
a linear classifier. Shortcuts that change shape are parameter-free ("option A"): subsample by 2 and
append zero channels. Initialisation as in the ACL authors' code: convs N(0, 2/(k*k*out)), BN 1/0,
the classifier Kaiming-normal.
"""
from __future__ import annotations

import math
from typing import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from ..csg import ConvFactory, plain_conv
from .registry import CIFAR_RESNET_INIT, register_model


def init_as_authors(model: nn.Module) -> None:
    """The authors' CIFAR ResNet init: convs N(0, 2/(k*k*out)), norms 1/0, linears Kaiming-normal with zero bias."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / k))
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):  # the authors' resnet_bcsg.py: kaiming_normal, zero bias
            nn.init.kaiming_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class OptionAShortcut(nn.Module):
    """Every second pixel, then zero channels appended (no parameters)."""

    def __init__(self, stride: int, extra_channels: int) -> None:
        super().__init__()
        self.stride, self.extra_channels = stride, extra_channels

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, conv: ConvFactory,
                 norm_layer: Callable[[int], nn.Module]) -> None:
        super().__init__()
        self.conv_a = conv(in_planes, planes, 3, stride=stride, padding=1, role="block.first")
        self.bn_a = norm_layer(planes)
        self.conv_b = conv(planes, planes, 3, stride=1, padding=1, role="block.second")
        self.bn_b = norm_layer(planes)
        changes_shape = stride != 1 or in_planes != planes
        self.shortcut = OptionAShortcut(stride, planes - in_planes) if changes_shape else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn_a(self.conv_a(x)))
        out = self.bn_b(self.conv_b(out))
        return F.relu(out + self.shortcut(x))


def blocks_per_stage(depth: int) -> int:
    """n of a CIFAR ResNet of depth 6n+2: three stages of n two-conv blocks, a stem and a classifier."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110, ...), got {depth}")
    return (depth - 2) // 6


class CifarResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int = 10, conv: ConvFactory = plain_conv,
                 norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d) -> None:
        super().__init__()
        n = blocks_per_stage(depth)
        self.conv1 = conv(3, 16, 3, stride=1, padding=1, role="stem")
        self.bn1 = norm_layer(16)
        stages, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(n):
                blocks.append(BasicBlock(in_planes, planes, stride if i == 0 else 1, conv, norm_layer))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.stage1, self.stage2, self.stage3 = stages
        self.classifier = nn.Linear(64, num_classes)
        init_as_authors(self)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.stage3(self.stage2(self.stage1(x)))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.classifier(x)


def _make(depth: int):
    def constructor(num_classes: int = 10, conv: ConvFactory = plain_conv, **kwargs) -> CifarResNet:
        return CifarResNet(depth, num_classes, conv, **kwargs)
    constructor.__name__ = f"resnet{depth}"
    constructor.__doc__ = f"CIFAR ResNet-{depth} ({(depth - 2) // 6} basic blocks per stage)."
    return register_model(input_size=32, csg_init=CIFAR_RESNET_INIT)(constructor)


DEPTHS = (20, 32, 44, 56, 110, 1202)  # the registered depths (the baselines register the same)
resnet20, resnet32, resnet44, resnet56, resnet110, resnet1202 = map(_make, DEPTHS)
