"""Layers of the parameter-saving baselines the ACL authors compared CSG with: depthwise-separable convolutions
and concatenated ReLUs. (The third, the p4 group convolution, is :mod:`.p4_conv`.)"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..csg import ConvFactory

# make(in_channels, out_channels, kernel_size, stride, padding, role) -> the layer that stands in for that conv
LayerMaker = Callable[[int, int, int, int, int, str], nn.Module]


def replacing(conv: ConvFactory, roles: Iterable[str], make: LayerMaker) -> ConvFactory:
    """A conv factory that builds the convs of exactly ``roles`` with ``make`` and every other conv with ``conv``
    (plain or generated): an architecture written once becomes its baseline by the layers it is given."""
    roles = frozenset(roles)

    def factory(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                bias: bool = False, role: str = "block", dilation: int = 1, groups: int = 1) -> nn.Module:
        if role in roles:
            return make(in_channels, out_channels, kernel_size, stride, padding, role)
        return conv(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias, role=role,
                    dilation=dilation, groups=groups)
    return factory


class SeparableConv2d(nn.Module):
    """A k x k depthwise conv, then a 1x1 pointwise conv, nothing between them (Chollet, "Xception", CVPR 2017;
    Howard et al., "MobileNets", 2017), as the authors' ``conv_dw`` / ``conv_pw`` pairs.

    Their pairs put the stride on the pointwise conv (the depthwise one runs at full resolution: the same
    outputs as a strided depthwise conv, at more cost) and one stem gives the pointwise conv padding 1: both are
    parameters here. The depthwise conv is grouped, so a CSG never generates it; the pointwise one has
    ``pointwise_role``.
    """

    def __init__(self, in_channels: int, out_channels: int, conv: ConvFactory, kernel_size: int = 3,
                 stride: int = 1, pointwise_padding: int = 0, depthwise_role: str = "block",
                 pointwise_role: str = "pointwise") -> None:
        super().__init__()
        self.depthwise = conv(in_channels, in_channels, kernel_size, padding=kernel_size // 2, groups=in_channels,
                              role=depthwise_role)
        self.pointwise = conv(in_channels, out_channels, 1, stride=stride, padding=pointwise_padding,
                              role=pointwise_role)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.depthwise(x))


def crelu(x: Tensor) -> Tensor:
    """Concatenated ReLU, ``cat(relu(x), relu(-x))`` over channels (Shang et al., "Understanding and Improving
    Convolutional Neural Networks via Concatenated Rectified Linear Units", ICML 2016): twice the channels."""
    return torch.cat([F.relu(x), F.relu(-x)], 1)


def crelu_normalized_twice(norm: nn.Module, x: Tensor) -> Tensor:
    """``cat(relu(norm(x)), relu(-norm(x)))`` with ``norm`` called twice, as the authors' ``densenet_crelu.py``
    writes it: the outputs are :func:`crelu` of one call, but in training each call updates a BatchNorm's
    running statistics, so they move as with momentum 0.19 instead of 0.1 (and ``num_batches_tracked`` counts
    two per step)."""
    return torch.cat([F.relu(norm(x)), F.relu(-norm(x))], 1)
