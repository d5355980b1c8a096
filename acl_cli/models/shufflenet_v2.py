"""ShuffleNetV2 for CIFAR (Ma et al., "ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture
Design", ECCV 2018), as the ACL authors' Implementations/CIFAR10/models/shufflenetv2.py builds it: a 3x3 stem
without pooling, three stages of a down-sampling block and n basic blocks (3, 7, 3), a final 1x1 conv to
1024 channels, 4x4 average pooling, a linear classifier. Their module names, so their checkpoints import.

The authors' CSG variant generates only that final 1x1 conv (role ``pointwise.head``), from 16x16x1x1 slices
and code size 16; depthwise convs are never generated.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..csg import ConvFactory, plain_conv
from .registry import DEFAULT_CSG_INIT, register_model

WIDTHS = {0.5: (48, 96, 192, 1024), 1.0: (116, 232, 464, 1024), 1.5: (176, 352, 704, 1024), 2.0: (224, 488, 976, 2048)}


def _shuffle(x: Tensor, groups: int = 2) -> Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class BasicBlock(nn.Module):
    """Half the channels pass; the other half go 1x1 -> depthwise 3x3 -> 1x1; then a channel shuffle."""

    def __init__(self, channels: int, conv: ConvFactory) -> None:
        super().__init__()
        half = channels // 2
        self.conv1 = conv(half, half, 1, role="pointwise")
        self.bn1 = nn.BatchNorm2d(half)
        self.conv2 = conv(half, half, 3, padding=1, groups=half, role="block")
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = conv(half, half, 1, role="pointwise")
        self.bn3 = nn.BatchNorm2d(half)

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = x.chunk(2, dim=1)
        out = F.relu(self.bn1(self.conv1(x2)))
        out = F.relu(self.bn3(self.conv3(self.bn2(self.conv2(out)))))
        return _shuffle(torch.cat([x1, out], 1))


class DownBlock(nn.Module):
    """Two stride-2 branches (depthwise 3x3 -> 1x1, and 1x1 -> depthwise 3x3 -> 1x1), concatenated, shuffled."""

    def __init__(self, in_channels: int, out_channels: int, conv: ConvFactory) -> None:
        super().__init__()
        mid = out_channels // 2
        self.conv1 = conv(in_channels, in_channels, 3, stride=2, padding=1, groups=in_channels, role="block")
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = conv(in_channels, mid, 1, role="pointwise")
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = conv(in_channels, mid, 1, role="pointwise")
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = conv(mid, mid, 3, stride=2, padding=1, groups=mid, role="block")
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = conv(mid, mid, 1, role="pointwise")
        self.bn5 = nn.BatchNorm2d(mid)

    def forward(self, x: Tensor) -> Tensor:
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = F.relu(self.bn3(self.conv3(x)))
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return _shuffle(torch.cat([left, right], 1))


class ShuffleNetV2(nn.Module):
    def __init__(self, net_size: float, num_classes: int = 10, conv: ConvFactory = plain_conv,
                 blocks: tuple[int, int, int] = (3, 7, 3)) -> None:
        super().__init__()
        widths = WIDTHS[net_size]
        self.conv1 = conv(3, 24, 3, padding=1, role="stem")
        self.bn1 = nn.BatchNorm2d(24)
        stages, in_channels = [], 24
        for width, n in zip(widths[:3], blocks):
            stages.append(nn.Sequential(DownBlock(in_channels, width, conv), *(BasicBlock(width, conv)
                                                                               for _ in range(n))))
            in_channels = width
        self.layer1, self.layer2, self.layer3 = stages
        self.conv2 = conv(widths[2], widths[3], 1, role="pointwise.head")
        self.bn2 = nn.BatchNorm2d(widths[3])
        self.linear = nn.Linear(widths[3], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.linear(F.adaptive_avg_pool2d(x, 1).flatten(1))


def _make(net_size: float):
    def constructor(num_classes: int = 10, conv: ConvFactory = plain_conv, **kwargs) -> ShuffleNetV2:
        return ShuffleNetV2(net_size, num_classes, conv, **kwargs)
    constructor.__name__ = f"shufflenet_v2_{str(net_size).replace('.', '_')}"
    constructor.__doc__ = f"ShuffleNetV2 {net_size}x for CIFAR (widths {WIDTHS[net_size]}), the authors' layout."
    return register_model(input_size=32, csg_init=DEFAULT_CSG_INIT, authors_targets=("pointwise.head",))(constructor)


shufflenet_v2_0_5, shufflenet_v2_1_0, shufflenet_v2_1_5, shufflenet_v2_2_0 = map(_make, (0.5, 1.0, 1.5, 2.0))
