"""DenseNet-121 for ImageNet (Huang et al., "Densely Connected Convolutional Networks", CVPR 2017).

torchvision's layout and parameter names (``features.denseblock1.denselayer1.conv1`` ...), so a
torchvision ``state_dict`` loads into the original network. By default only the 3x3 conv of each
bottleneck ("block") is generated, as in the ACL authors' code.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..csg import ConvFactory, plain_conv
from .registry import DEFAULT_CSG_INIT, register_model

NormLayer = Callable[[int], nn.Module]


class DenseLayer(nn.Module):
    def __init__(self, in_features: int, growth: int, bn_size: int, conv: ConvFactory, norm_layer: NormLayer):
        super().__init__()
        self.norm1 = norm_layer(in_features)
        self.conv1 = conv(in_features, bn_size * growth, 1, role="pointwise")
        self.norm2 = norm_layer(bn_size * growth)
        self.conv2 = conv(bn_size * growth, growth, 3, padding=1, role="block")

    def forward(self, features: list[Tensor]) -> Tensor:
        out = self.conv1(F.relu(self.norm1(torch.cat(features, 1))))
        return self.conv2(F.relu(self.norm2(out)))


class DenseBlock(nn.ModuleDict):
    def __init__(self, num_layers: int, in_features: int, growth: int, bn_size: int, conv: ConvFactory,
                 norm_layer: NormLayer):
        super().__init__()
        for i in range(num_layers):
            self[f"denselayer{i + 1}"] = DenseLayer(in_features + i * growth, growth, bn_size, conv, norm_layer)

    def forward(self, x: Tensor) -> Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    def __init__(self, in_features: int, out_features: int, conv: ConvFactory, norm_layer: NormLayer):
        super().__init__()
        self.norm = norm_layer(in_features)
        self.relu = nn.ReLU(inplace=True)
        self.conv = conv(in_features, out_features, 1, role="transition")
        self.pool = nn.AvgPool2d(2, 2)


class DenseNet(nn.Module):
    def __init__(self, growth: int = 32, block_config: tuple[int, ...] = (6, 12, 24, 16), init_features: int = 64,
                 bn_size: int = 4, num_classes: int = 1000, conv: ConvFactory = plain_conv,
                 norm_layer: NormLayer = nn.BatchNorm2d):
        super().__init__()
        self.features = nn.Sequential()
        self.features.add_module("conv0", conv(3, init_features, 7, stride=2, padding=3, role="stem"))
        self.features.add_module("norm0", norm_layer(init_features))
        self.features.add_module("relu0", nn.ReLU(inplace=True))
        self.features.add_module("pool0", nn.MaxPool2d(3, stride=2, padding=1))
        features = init_features
        for i, num_layers in enumerate(block_config, start=1):
            self.features.add_module(f"denseblock{i}",
                                     DenseBlock(num_layers, features, growth, bn_size, conv, norm_layer))
            features += num_layers * growth
            if i < len(block_config):
                self.features.add_module(f"transition{i}", Transition(features, features // 2, conv, norm_layer))
                features //= 2
        self.features.add_module("norm5", norm_layer(features))
        self.classifier = nn.Linear(features, num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.features(x), inplace=True)
        return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))


@register_model(input_size=224, csg_init=DEFAULT_CSG_INIT)
def densenet121(num_classes: int = 1000, conv: ConvFactory = plain_conv, **kwargs) -> DenseNet:
    """ImageNet DenseNet-121 (growth 32, blocks 6-12-24-16), torchvision layout."""
    return DenseNet(32, (6, 12, 24, 16), 64, num_classes=num_classes, conv=conv, **kwargs)
