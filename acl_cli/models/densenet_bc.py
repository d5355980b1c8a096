"""DenseNet-BC for CIFAR (Huang et al., "Densely Connected Convolutional Networks", CVPR 2017).

Depth 6m+4: a 3x3 stem to 2k channels, three dense blocks of m bottlenecks (BN-ReLU-1x1 to 4k,
BN-ReLU-3x3 to k; the new features are concatenated in front), transitions halving channels
(compression 0.5) with 2x2 average pooling, then BN-ReLU, global pooling and a linear classifier.
This is the layout of the ACL authors' code; PyTorch's default initialisation.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..csg import ConvFactory, plain_conv
from .registry import DEFAULT_CSG_INIT, register_model


class Bottleneck(nn.Module):
    def __init__(self, in_planes: int, growth: int, conv: ConvFactory, norm_layer: Callable[[int], nn.Module]):
        super().__init__()
        self.bn1 = norm_layer(in_planes)
        self.conv1 = conv(in_planes, 4 * growth, 1, role="pointwise")
        self.bn2 = norm_layer(4 * growth)
        self.conv2 = conv(4 * growth, growth, 3, padding=1, role="block")

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([out, x], 1)


class Transition(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, conv: ConvFactory, norm_layer: Callable[[int], nn.Module]):
        super().__init__()
        self.bn = norm_layer(in_planes)
        self.conv = conv(in_planes, out_planes, 1, role="transition")

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class DenseNetBC(nn.Module):
    def __init__(self, depth: int, growth: int, num_classes: int = 10, reduction: float = 0.5,
                 conv: ConvFactory = plain_conv, norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d):
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"DenseNet-BC depth must be 6m+4 (40, 100, 190, ...), got {depth}")
        m = (depth - 4) // 6
        planes = 2 * growth
        self.conv1 = conv(3, planes, 3, padding=1, role="stem")
        for i in (1, 2, 3):
            layers = []
            for _ in range(m):
                layers.append(Bottleneck(planes, growth, conv, norm_layer))
                planes += growth
            setattr(self, f"dense{i}", nn.Sequential(*layers))
            if i < 3:
                out_planes = int(math.floor(planes * reduction))
                setattr(self, f"trans{i}", Transition(planes, out_planes, conv, norm_layer))
                planes = out_planes
        self.bn = norm_layer(planes)
        self.linear = nn.Linear(planes, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        x = self.trans1(self.dense1(x))
        x = self.trans2(self.dense2(x))
        x = F.relu(self.bn(self.dense3(x)))
        return self.linear(F.adaptive_avg_pool2d(x, 1).flatten(1))


def _make(depth: int, growth: int):
    def constructor(num_classes: int = 10, conv: ConvFactory = plain_conv, **kwargs) -> DenseNetBC:
        return DenseNetBC(depth, growth, num_classes, conv=conv, **kwargs)
    constructor.__name__ = f"densenet_bc_{depth}_{growth}"
    constructor.__doc__ = f"DenseNet-BC-{depth} for CIFAR, growth rate k={growth}."
    return register_model(input_size=32, csg_init=DEFAULT_CSG_INIT)(constructor)


SIZES = ((40, 12), (40, 36), (40, 48), (100, 12), (190, 40))  # (depth, growth) registered (and their baselines)
densenet_bc_40_12, densenet_bc_40_36, densenet_bc_40_48, densenet_bc_100_12, densenet_bc_190_40 = (
    _make(depth, growth) for depth, growth in SIZES)
