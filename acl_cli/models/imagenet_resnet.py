"""ResNet for ImageNet (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016).

torchvision's layout and parameter names, so a torchvision ``state_dict`` loads into the original network.
The conv factory decides which convs are generated: by default the k x k convs inside blocks ("block"),
never the 7x7 stem, the 1x1 convs ("pointwise") or the projection shortcuts ("shortcut").
"""
from __future__ import annotations

from typing import Callable, Type

import torch.nn.functional as F
from torch import Tensor, nn

from ..csg import ConvFactory, plain_conv
from .registry import DEFAULT_CSG_INIT, register_model

NormLayer = Callable[[int], nn.Module]


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None,
                 conv: ConvFactory, norm_layer: NormLayer) -> None:
        super().__init__()
        self.conv1 = conv(inplanes, planes, 3, stride=stride, padding=1, role="block.first")
        self.bn1 = norm_layer(planes)
        self.conv2 = conv(planes, planes, 3, padding=1, role="block.second")
        self.bn2 = norm_layer(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity, inplace=True)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None,
                 conv: ConvFactory, norm_layer: NormLayer) -> None:
        super().__init__()
        self.conv1 = conv(inplanes, planes, 1, role="pointwise")
        self.bn1 = norm_layer(planes)
        self.conv2 = conv(planes, planes, 3, stride=stride, padding=1, role="block")
        self.bn2 = norm_layer(planes)
        self.conv3 = conv(planes, planes * self.expansion, 1, role="pointwise")
        self.bn3 = norm_layer(planes * self.expansion)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = F.relu(self.bn2(self.conv2(out)), inplace=True)
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity, inplace=True)


class ResNet(nn.Module):
    def __init__(self, block: Type[BasicBlock | Bottleneck], layers: list[int], num_classes: int = 1000,
                 conv: ConvFactory = plain_conv, norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        super().__init__()
        self.conv1 = conv(3, 64, 7, stride=2, padding=3, role="stem")
        self.bn1 = norm_layer(64)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = 64
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers), start=1):
            stride = 1 if i == 1 else 2
            downsample = None
            if stride != 1 or inplanes != planes * block.expansion:
                downsample = nn.Sequential(
                    conv(inplanes, planes * block.expansion, 1, stride=stride, role="shortcut"),
                    norm_layer(planes * block.expansion))
            stage = [block(inplanes, planes, stride, downsample, conv, norm_layer)]
            inplanes = planes * block.expansion
            stage += [block(inplanes, planes, 1, None, conv, norm_layer) for _ in range(1, blocks)]
            setattr(self, f"layer{i}", nn.Sequential(*stage))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x)), inplace=True))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def _make(name: str, block, layers: list[int], authors_targets: tuple[str, ...] = ("block",)):
    def constructor(num_classes: int = 1000, conv: ConvFactory = plain_conv, **kwargs) -> ResNet:
        return ResNet(block, layers, num_classes, conv, **kwargs)
    constructor.__name__ = name
    constructor.__doc__ = f"ImageNet {name} (torchvision layout), blocks per stage {layers}."
    return register_model(input_size=224, csg_init=DEFAULT_CSG_INIT, authors_targets=authors_targets)(constructor)


# The authors' ResNet-18 (their BasicBlock2) generates only the first 3x3 conv of each block; their
# ResNet-34 both; ResNet-50/101 the 3x3 of each bottleneck (Implementations/Imagenet-1000/models/resnet.py).
resnet18 = _make("resnet18", BasicBlock, [2, 2, 2, 2], authors_targets=("block.first",))
resnet34 = _make("resnet34", BasicBlock, [3, 4, 6, 3])
resnet50 = _make("resnet50", Bottleneck, [3, 4, 6, 3])
resnet101 = _make("resnet101", Bottleneck, [3, 4, 23, 3])
