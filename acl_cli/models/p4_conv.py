"""The p4 group convolution (Cohen & Welling, "Group Equivariant Convolutional Networks", ICML 2016), in plain torch.

p4 is the group of translations and rotations by multiples of 90°. A p4 feature map with ``F`` fields has
``4 * F`` channels, field-major: channel ``4 * f + s`` is field ``f`` seen at orientation ``s`` (the layout the
ACL authors' G-CNN baselines read their channels in: ``C`` channels as ``C/4`` fields of 4 rotations).

:class:`P4ConvP4` learns one filter per output field over every input channel, ``(out, 4 * in, k, k)``,
and applies it in four rotations: for output orientation ``r`` the filter is rotated by ``r`` quarter turns and
its input orientations are cycled by ``r``. The four rotated copies form one filter bank, so a layer is one
``F.conv2d``; eagerly the bank is one gather from the filters (the same turns applied once to their positions). Rotating the input by a quarter turn rotates the output and cycles its orientations
(:func:`rotate_p4`): the layer is equivariant.

GrouPy (the authors vendor it: ``groupy/gconv/pytorch_gconv``) stores the same filters as ``(out, in, 4, k, k)``
but reads that memory in ``(k, k, 4)`` order (its PyTorch port kept the TensorFlow port's flat index), a fixed
permutation of the parameters: :func:`weight_from_groupy` and :func:`weight_to_groupy` convert, and with
converted weights the outputs are GrouPy's.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ORIENTATIONS = 4  # the rotations of p4: 0, 90, 180 and 270 degrees


def p4_filter_bank(weight: Tensor) -> Tensor:
    """``(out, 4 * in, k, k)`` learned filters -> ``(4 * out, 4 * in, k, k)``: output channel ``4 * o + r`` is
    filter ``o`` turned ``r`` quarter turns with its input orientations cycled by ``r``."""
    out, channels, kh, kw = weight.shape
    base = weight.reshape(out, channels // ORIENTATIONS, ORIENTATIONS, kh, kw)
    turned = [torch.rot90(base.roll(r, dims=2), r, dims=(3, 4)) for r in range(ORIENTATIONS)]
    return torch.stack(turned, dim=1).reshape(out * ORIENTATIONS, channels, kh, kw)


def p4_bank_index(weight_shape: tuple[int, ...], device: torch.device | str = "cpu") -> Tensor:
    """Where each element of :func:`p4_filter_bank` comes from in the flattened filters: the bank of their positions."""
    positions = torch.arange(math.prod(weight_shape), device=device).reshape(weight_shape)
    return p4_filter_bank(positions).reshape(-1)


def _tracing() -> bool:
    """torch.compile, torch.export or torch.jit.trace is recording the forward (a cached index would be frozen in)."""
    compiler = torch.compiler
    return (compiler.is_compiling() or bool(getattr(compiler, "is_exporting", lambda: False)())
            or torch.jit.is_tracing())


def rotate_p4(x: Tensor, turns: int = 1) -> Tensor:
    """The action of a rotation by ``turns`` quarter turns on a p4 feature map ``(N, 4 * F, H, W)``: every plane
    rotated, and each field's orientations cycled by ``turns``."""
    n, channels, h, w = x.shape
    fields = x.reshape(n, channels // ORIENTATIONS, ORIENTATIONS, h, w)
    turned = torch.rot90(fields, turns, dims=(3, 4)).roll(turns, dims=2)
    return turned.reshape(n, channels, w if turns % 2 else h, h if turns % 2 else w)


def weight_from_groupy(weight: Tensor) -> Tensor:
    """GrouPy's ``P4ConvP4.weight`` ``(out, in, 4, k, k)`` -> ours ``(out, 4 * in, k, k)``, the same layer."""
    out, fields, orientations, kh, kw = weight.shape
    # GrouPy gathers filter (t, u, v) from flat position (u * k + v) * 4 + t of each (4, k, k) block
    read = weight.reshape(out, fields, kh, kw, orientations).permute(0, 1, 4, 2, 3)
    return read.reshape(out, fields * orientations, kh, kw).contiguous()


def weight_to_groupy(weight: Tensor) -> Tensor:
    """Ours ``(out, 4 * in, k, k)`` -> GrouPy's ``(out, in, 4, k, k)`` (the inverse of :func:`weight_from_groupy`)."""
    out, channels, kh, kw = weight.shape
    fields = channels // ORIENTATIONS
    stored = weight.reshape(out, fields, ORIENTATIONS, kh, kw).permute(0, 1, 3, 4, 2)
    return stored.reshape(out, fields, ORIENTATIONS, kh, kw).contiguous()


class P4ConvP4(nn.Conv2d):
    """p4 -> p4 convolution: ``in_fields`` fields (``4 * in_fields`` channels) to ``out_fields`` fields.

    An ``nn.Conv2d`` over the ``4 * in_fields`` input channels holding ``out_fields`` learned square filters (its
    parameters, which count-params lists as a conv); its forward applies each in all four rotations, so it
    outputs ``4 * out_fields`` channels. The bias is one per field, shared by its orientations. Initialised as
    GrouPy's: Xavier-normal over the ``(out, in, 4, k, k)`` filters, zero bias.
    """

    def __init__(self, in_fields: int, out_fields: int, kernel_size: int = 3, stride: int = 1, padding: int = 0,
                 bias: bool = True) -> None:
        if not isinstance(kernel_size, int):
            raise ValueError(f"P4ConvP4 needs a square kernel (one int), got {kernel_size!r}")
        super().__init__(ORIENTATIONS * in_fields, out_fields, kernel_size, stride=stride, padding=padding, bias=bias)
        self.in_fields, self.out_fields = in_fields, out_fields
        self.__dict__["_bank_index"] = {}  # device -> gather index; a plain attribute: no state, nothing to sync

    def reset_parameters(self) -> None:
        out, channels, kh, kw = self.weight.shape
        # GrouPy's xavier_normal on (out, in, 4, k, k): fan_in = in*4*k*k, fan_out = out*4*k*k
        std = math.sqrt(2.0 / ((channels + ORIENTATIONS * out) * kh * kw))
        with torch.no_grad():
            self.weight.normal_(0.0, std)
            if self.bias is not None:
                self.bias.zero_()

    def extra_repr(self) -> str:
        return (f"p4: {self.in_fields} -> {self.out_fields} fields ({self.in_channels} -> "
                f"{ORIENTATIONS * self.out_fields} channels), kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, bias={self.bias is not None}")

    def filter_bank(self) -> Tensor:
        """The ``(4 * out, 4 * in, k, k)`` kernel of this forward: :func:`p4_filter_bank` of the filters."""
        if _tracing():  # compilers and exporters take the turns themselves (and fuse them)
            return p4_filter_bank(self.weight)
        index = self._bank_index.get(self.weight.device)
        if index is None:
            with torch.inference_mode(False):  # built under inference_mode, it could not serve training later
                index = p4_bank_index(tuple(self.weight.shape), self.weight.device)
            self._bank_index[self.weight.device] = index
        out, channels, kh, kw = self.weight.shape
        return self.weight.reshape(-1).index_select(0, index).view(ORIENTATIONS * out, channels, kh, kw)

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias.repeat_interleave(ORIENTATIONS)
        return F.conv2d(x, self.filter_bank(), bias, self.stride, self.padding)
