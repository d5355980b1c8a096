"""The Convolutional Slice Generator (CSG) and the convolutions whose kernels it generates.

Omidvar et al., "Associative Convolutional Layers", AISTATS 2021.

One :class:`SliceGenerator` per model is a bias-free linear map ``code_size -> prod(slice_shape)``.
Every :class:`GeneratedConv2d` owns a ``(num_slices, code_size)`` matrix of codes; each code becomes one
slice of that layer's kernel. The generator is registered once, on the model's root, as ``csg``; layers
hold an unregistered reference so ``state_dict()`` and ``parameters()`` list it exactly once.

Kernels for the whole network come from one matrix product per forward pass (all codes concatenated)
and one gather that lays them out in the input's memory format: a forward pre-hook on the root generates
them, the layers look theirs up. In ``eval()`` under ``no_grad`` the kernels are cached until a parameter
changes (tracked by tensor version counters).
"""
from __future__ import annotations

import contextlib
import copy
import math
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair
from torch.profiler import record_function

LAYOUTS = ("flat", "tile")
GENERATOR_ATTR = "csg"  # where the generator lives on the model root

# Every conv an architecture creates declares its role; a config picks which roles are generated. A role
# may be refined with a suffix: the two 3x3 convs of a basic block are "block.first" and "block.second",
# and the target "block" takes both (the authors' ImageNet ResNet-18 generated only the first).
ROLES = ("stem", "block", "block.first", "block.second", "pointwise", "pointwise.expand", "pointwise.head", "shortcut",
         "transition")
AUTHORS_TARGETS = ("block",)  # k x k convs inside residual / dense blocks: what the authors generate mostly


def role_targeted(role: str, targets: Iterable[str]) -> bool:
    """``role`` is generated under ``targets``: named itself, or its family ("block" for "block.first")."""
    return role in targets or role.split(".", 1)[0] in targets


class SliceGenerator(nn.Module):
    """Shared bias-free linear map from a code (``code_size``) to one kernel slice (``slice_shape``).

    ``slice_shape = (S0, S1, kh, kw)``: S0 output channels, S1 input channels, a kh x kw window.
    ``layout`` says how a layer's slices assemble into its kernel (see :class:`GeneratedConv2d`).
    """

    def __init__(self, slice_shape: Sequence[int], code_size: int, layout: str = "flat") -> None:
        super().__init__()
        slice_shape = tuple(int(s) for s in slice_shape)
        if len(slice_shape) != 4 or min(slice_shape) < 1:
            raise ValueError(f"slice_shape must be 4 positive ints (S0, S1, kh, kw), got {list(slice_shape)}")
        if int(code_size) < 1:
            raise ValueError(f"code_size must be a positive int, got {code_size}")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        self.slice_shape = slice_shape
        self.code_size = int(code_size)
        self.layout = layout
        self.weight = nn.Parameter(torch.empty(math.prod(slice_shape), self.code_size))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Linear's default
        # Plain attributes, not submodules: the layers belong to the model tree, not to the generator.
        self.__dict__["layers"] = []
        self.__dict__["_kernels"] = None  # kernels of the forward pass in progress
        self.__dict__["_cache"] = None  # (state key, kernels) kept across eval passes
        self.__dict__["_plans"] = {}  # (device, channels_last) -> gather index and kernel sizes

    def extra_repr(self) -> str:
        return f"slice_shape={list(self.slice_shape)}, code_size={self.code_size}, layout={self.layout}"

    def forward(self, x: Tensor) -> Tensor:
        """A pass-through: an ``nn.Sequential`` root, which calls every child in turn, can hold the generator.
        Kernels are made by :meth:`generate`, from the root's forward hooks."""
        return x

    def register(self, layer: "GeneratedConv2d") -> int:
        self.layers.append(layer)
        self._cache, self._plans = None, {}
        return len(self.layers) - 1

    def generate(self, channels_last: bool = False) -> list[Tensor]:
        """All kernels of the network, from one matrix product over every layer's codes.

        Eager: one gather moves every generated value to its place in every kernel, already in the memory
        format the convs will use, so a step launches a handful of kernels for the whole network instead
        of copies per layer (and per layer again in the backward). Under ``torch.compile`` the plain
        reshape-and-crop is traced instead; the compiler fuses it.
        """
        # named in profiler traces (not while torch.compile traces: it would only warn that it ignores it)
        with contextlib.nullcontext() if torch.compiler.is_compiling() else record_function("csg.generate"):
            layers = self.layers
            codes = torch.cat([layer.codes for layer in layers]) if len(layers) > 1 else layers[0].codes
            slices = F.linear(codes, self.weight)
            if torch.compiler.is_compiling():
                chunks = slices.split([layer.num_slices for layer in layers])
                fmt = torch.channels_last if channels_last else torch.contiguous_format
                return [layer.assemble(chunk).contiguous(memory_format=fmt) for layer, chunk in zip(layers, chunks)]
            index, sizes = self._gather_plan(slices.device, channels_last)
            flat = slices.reshape(-1).index_select(0, index).split(sizes)
            if channels_last:  # stored (out, kh, kw, in): the strides of a channels_last kernel
                return [k.view(layer.out_channels, *layer.kernel_size, layer.in_channels).permute(0, 3, 1, 2)
                        for layer, k in zip(layers, flat)]
            return [k.view(layer.out_channels, layer.in_channels, *layer.kernel_size) for layer, k in zip(layers, flat)]

    def _gather_plan(self, device: torch.device, channels_last: bool) -> tuple[Tensor, list[int]]:
        """Where each element of each kernel comes from in the flattened slices (built once per device)."""
        key = (device, channels_last)
        plan = self._plans.get(key)
        if plan is None:
            per_slice = math.prod(self.slice_shape)
            with torch.inference_mode(False):  # built under inference_mode, it could not serve training later
                source = torch.arange(sum(layer.num_slices for layer in self.layers) * per_slice)
                parts = []
                for layer, chunk in zip(self.layers, source.view(-1, per_slice).split(
                        [layer.num_slices for layer in self.layers])):
                    kernel = layer.assemble(chunk)  # the same reshape and crop, applied to positions
                    parts.append((kernel.permute(0, 2, 3, 1) if channels_last else kernel).reshape(-1))
                dtype = torch.int32 if source.numel() < 2**31 else torch.int64
                plan = (torch.cat(parts).to(device=device, dtype=dtype), [p.numel() for p in parts])
            self._plans = {k: v for k, v in self._plans.items() if k[0] == device}  # drop other devices'
            self._plans[key] = plan
        return plan

    def _state_key(self, channels_last: bool) -> tuple:
        tensors = [self.weight, *(layer.codes for layer in self.layers)]
        return (channels_last, *((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors))

    def begin_pass(self, channels_last: bool = False) -> None:
        """Generate (or reuse) the kernels for one forward pass of the model."""
        if not self.layers:
            return
        cacheable = not (self.training or torch.is_grad_enabled() or torch.compiler.is_compiling())
        if not cacheable:
            self._cache = None  # back in training: never reuse kernels generated before a step
            self._kernels = self.generate(channels_last)
            return
        key = self._state_key(channels_last)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self.generate(channels_last))
        self._kernels = self._cache[1]

    def end_pass(self) -> None:
        self._kernels = None

    def kernel(self, layer: "GeneratedConv2d") -> Tensor:
        if self._kernels is not None:
            return self._kernels[layer.index]
        # Called outside a model forward (a layer used on its own): generate just this kernel.
        return layer.assemble(F.linear(layer.codes, self.weight))

    def __deepcopy__(self, memo):
        # Copy the pass/caches as empty: cached tensors belong to the original's parameters.
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        for k, v in self.__dict__.items():
            new.__dict__[k] = {} if k == "_plans" else None if k in ("_kernels", "_cache") else copy.deepcopy(v, memo)
        return new


class GeneratedConv2d(nn.Module):
    """A conv that behaves like ``nn.Conv2d`` (groups=1) but whose kernel comes from codes.

    The layer has ``num_slices = ceil(out/S0) * ceil(in/S1)`` codes. Each generates ``prod(slice_shape)``
    values; the kernel is assembled on a padded ``(ceil(out/S0)*S0, ceil(in/S1)*S1, kh, kw)`` grid and
    cropped to ``[:out, :in]``:

    * ``flat``: the authors' rule: the slices laid end to end and reshaped row-major, so a "slice" is a
      contiguous chunk of the flattened kernel and the crop can leave whole codes unused.
    * ``tile``: code ``(i, j)`` (row-major) is the block of output channels ``i*S0...`` and input channels
      ``j*S1...``, as the paper describes; no code is unused unless a whole block is padding.

    The authors size ``num_slices`` with ``ceil(in/S0) * ceil(out/S1)``, which only fits their reshape for
    square slices; we use the consistent ``ceil(out/S0) * ceil(in/S1)``, identical for square slices.
    """

    def __init__(
        self,
        generator: SliceGenerator,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        bias: bool = False,
    ) -> None:
        super().__init__()
        s0, s1, kh, kw = generator.slice_shape
        if _pair(kernel_size) != (kh, kw):
            raise ValueError(f"kernel {_pair(kernel_size)} does not match the slice window {(kh, kw)}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = (kh, kw)
        self.stride, self.dilation = _pair(stride), _pair(dilation)
        self.padding = padding if isinstance(padding, str) else _pair(padding)  # "same" / "valid" as nn.Conv2d
        self.grid = (math.ceil(out_channels / s0), math.ceil(in_channels / s1))
        self.num_slices = self.grid[0] * self.grid[1]
        self.codes = nn.Parameter(torch.randn(self.num_slices, generator.code_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.__dict__["generator"] = generator  # unregistered: the model root owns it
        self.index = generator.register(self)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, slices={self.num_slices}, bias={self.bias is not None}")

    def assemble(self, slices: Tensor) -> Tensor:
        """``(num_slices, prod(slice_shape))`` generated slices -> ``(out, in, kh, kw)`` kernel."""
        s0, s1, kh, kw = self.generator.slice_shape
        gi, gj = self.grid
        if self.generator.layout == "flat":
            kernel = slices.reshape(gi * s0, gj * s1, kh, kw)
        else:
            kernel = slices.reshape(gi, gj, s0, s1, kh, kw).transpose(1, 2).reshape(gi * s0, gj * s1, kh, kw)
        return kernel[: self.out_channels, : self.in_channels]

    @property
    def weight(self) -> Tensor:
        """The generated kernel (with autograd), as ``nn.Conv2d.weight`` would hold it."""
        return self.assemble(F.linear(self.codes, self.generator.weight))

    def unused_codes(self) -> int:
        """How many codes never reach the kernel (none in the tile layout unless a block is all padding)."""
        s0, s1, kh, kw = self.generator.slice_shape
        gi, gj = self.grid
        used = torch.zeros(gi * s0, gj * s1, kh, kw, dtype=torch.bool)
        used[: self.out_channels, : self.in_channels] = True
        if self.generator.layout == "flat":
            per_code = used.reshape(self.num_slices, -1)
        else:
            per_code = used.reshape(gi, s0, gj, s1, kh, kw).transpose(1, 2).reshape(self.num_slices, -1)
        return int((~per_code.any(dim=1)).sum())

    def forward(self, x: Tensor) -> Tensor:
        # the generator already laid the kernel out in the input's memory format
        return F.conv2d(x, self.generator.kernel(self), self.bias, self.stride, self.padding, self.dilation)


# ---------------------------------------------------------------------------------------------------
# Conv factories: architectures call ``conv(in, out, k, stride=, padding=, bias=, role=, dilation=, groups=)``; never
# know whether the result is generated.

ConvFactory = Callable[..., nn.Module]


def plain_conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
               bias: bool = False, role: str = "block", dilation: int = 1, groups: int = 1) -> nn.Module:
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation,
                     groups=groups, bias=bias)


class GeneratedConvFactory:
    """Generates the convs whose role is in ``targets`` and whose window matches the slice's kh x kw."""

    def __init__(self, generator: SliceGenerator, targets: Iterable[str] = AUTHORS_TARGETS) -> None:
        self.generator = generator
        self.targets = frozenset(targets)

    def generates(self, kernel_size, role: str, groups: int = 1) -> bool:
        """Whether a conv of this kernel, role and grouping is generated: the one rule, for the zoo and for
        :func:`convert`. Grouped and depthwise convs never are (a slice would mostly be cropped from their
        ``(out, in/groups, kh, kw)`` kernels)."""
        return groups == 1 and role_targeted(role, self.targets) and _pair(kernel_size) == self.generator.slice_shape[2:]

    def __call__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, bias: bool = False, role: str = "block", dilation: int = 1,
                 groups: int = 1) -> nn.Module:
        if self.generates(kernel_size, role, groups):
            return GeneratedConv2d(self.generator, in_channels, out_channels, kernel_size, stride, padding,
                                   dilation, bias=bias)
        return plain_conv(in_channels, out_channels, kernel_size, stride, padding, bias, role, dilation, groups)


def _begin_pass(module: nn.Module, args) -> None:
    # Kernels take the input's memory format: cuDNN runs channels_last convs when both are.
    x = args[0] if args and isinstance(args[0], Tensor) else None
    channels_last = x is not None and x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(
        memory_format=torch.channels_last)
    getattr(module, GENERATOR_ATTR).begin_pass(channels_last)


def _end_pass(module: nn.Module, args, output) -> None:
    getattr(module, GENERATOR_ATTR).end_pass()


def attach_generator(model: nn.Module, generator: SliceGenerator) -> nn.Module:
    """Register the generator once on the model root and generate all kernels at each forward."""
    model.add_module(GENERATOR_ATTR, generator)
    model.register_forward_pre_hook(_begin_pass)
    model.register_forward_hook(_end_pass, always_call=True)
    return model


def find_generator(model: nn.Module) -> SliceGenerator | None:
    generator = getattr(model, GENERATOR_ATTR, None)
    return generator if isinstance(generator, SliceGenerator) else None


def generated_convs(model: nn.Module) -> list[tuple[str, GeneratedConv2d]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, GeneratedConv2d)]


# ---------------------------------------------------------------------------------------------------
# Any network: replace its convs after the fact


def conv_role(conv: nn.Conv2d, first: bool) -> str:
    """A plain conv's role, read off the conv itself: the first in module order sees the image ("stem");
    1x1 convs are "pointwise", other k x k ones "block" (grouped ones are never generated, whatever their role)."""
    if first:
        return "stem"
    return "pointwise" if _pair(conv.kernel_size) == (1, 1) else "block"


# Subclasses of nn.Conv2d that change what the conv computes: a generated conv would silently drop that, so
# convert() keeps them plain and says why (count-params and a run's first lines list them).
_SUBCLASS_REASONS = {"StdConv2d": "weight standardisation", "StdConv2dSame": "weight standardisation",
                     "ScaledStdConv2d": "scaled weight standardisation with a gain",
                     "ScaledStdConv2dSame": "scaled weight standardisation with a gain",
                     "Conv2dSame": "dynamic same padding"}


def kept_plain_reason(conv: nn.Module) -> str | None:
    """Why convert() leaves this ``nn.Conv2d`` plain whatever the targets (a subclass with its own forward, a
    padding mode other than zeros), or None."""
    if not isinstance(conv, nn.Conv2d) or isinstance(conv, GeneratedConv2d):
        return None
    if type(conv) is not nn.Conv2d:
        return _SUBCLASS_REASONS.get(type(conv).__name__, "its own forward")
    if conv.padding_mode != "zeros":
        return f"padding_mode {conv.padding_mode}"
    return None


def _convert_targets(targets: str | Iterable[str]) -> frozenset[str]:
    """Roles convert() can read off a conv: a role, "all", "authors" or a list of roles, each checked."""
    if isinstance(targets, str):
        targets = {"all": ("stem", "block", "pointwise"), "authors": AUTHORS_TARGETS}.get(targets, (targets,))
    roles = list(targets)
    unknown = [r for r in roles if r not in ROLES]
    if unknown or not roles:
        raise ValueError(f"unknown conv role(s) {unknown}; valid: {', '.join(ROLES)}, or all, authors")
    refined = [r for r in roles if "." in r or r in ("shortcut", "transition")]
    if refined:
        raise ValueError(f"role {refined[0]!r} exists in acl's own models only: convert() reads stem (the first "
                         "conv), pointwise (1x1) and block (other k x k) off each conv")
    return frozenset(roles)


def convert(model: nn.Module, slice_shape: Sequence[int], code_size: int,
            targets: str | Iterable[str] = AUTHORS_TARGETS, layout: str = "flat") -> SliceGenerator:
    """Replace the eligible ``nn.Conv2d``s of any model by generated convs sharing one generator on its root.

    A conv is eligible by the zoo's rule (:meth:`GeneratedConvFactory.generates`, its role from
    :func:`conv_role`), when it is exactly ``nn.Conv2d`` with zero padding (a subclass such as timm's
    ``StdConv2d`` computes something a generated conv would not: :func:`kept_plain_reason`), and when its
    weight is its own (tied weights are refused by name). Stride, padding, dilation and bias (its values too)
    are kept. Returns the generator; a model with nothing eligible is a ValueError naming the convs it has.
    """
    roles = _convert_targets(targets)
    generator = SliceGenerator(slice_shape, code_size, layout)
    factory = GeneratedConvFactory(generator, roles)
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    owners: dict[int, str] = {}
    present: dict[str, int] = {}
    for i, (name, conv) in enumerate(convs):
        role = conv_role(conv, i == 0)
        kh, kw = _pair(conv.kernel_size)
        kind = f"{'grouped' if conv.groups > 1 else role} {kh}x{kw}"
        present[kind] = present.get(kind, 0) + 1
        if kept_plain_reason(conv) or not factory.generates(conv.kernel_size, role, conv.groups):
            continue
        if id(conv.weight) in owners:
            raise ValueError(f"{name}.weight is the same tensor as {owners[id(conv.weight)]}.weight (tied weights): "
                             "one kernel cannot come from two sets of codes; leave these convs out of the targets")
        owners[id(conv.weight)] = name
    for name, conv in convs:
        if id(conv.weight) not in owners or owners[id(conv.weight)] != name:
            continue
        generated = factory(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                            bias=conv.bias is not None, role=conv_role(conv, conv is convs[0][1]),
                            dilation=conv.dilation)
        if conv.bias is not None:
            with torch.no_grad():
                generated.bias.copy_(conv.bias)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, generated)
    if not generator.layers:
        have = ", ".join(f"{k} ({n})" for k, n in present.items()) or "no nn.Conv2d at all"
        grouped = " (grouped convs are never generated)" if any(k.startswith("grouped") for k in present) else ""
        kept = kept_plain_summary(model)
        kernel = f"{generator.slice_shape[2]}x{generator.slice_shape[3]}"
        fitting = [k.split()[0] for k in present if k.endswith(" " + kernel) and not k.startswith("grouped")]
        hint = f"; to generate those, --set model.csg.targets=[{', '.join(fitting)}]" if fitting else \
            "; no conv of this model has that kernel size: choose a slice shape it has"
        raise ValueError(f"no conv to generate: targets {sorted(roles)} with a {kernel} slice; this model has "
                         f"{have}{grouped}" + (f"; kept plain: {kept}" if kept else "") + hint)
    attach_generator(model, generator)
    return generator


def kept_plain_summary(model: nn.Module) -> str:
    """"16 StdConv2d (weight standardisation)", for every kind of conv convert() keeps plain; "" if none."""
    counts: dict[str, int] = {}
    for module in model.modules():
        reason = kept_plain_reason(module)
        if reason:
            key = f"{type(module).__name__} ({reason})"
            counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{n} {key}" for key, n in counts.items())


@torch.no_grad()
def materialize(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every generated conv replaced by an ``nn.Conv2d`` holding its kernel."""
    generator = find_generator(model)
    if generator is None:
        return copy.deepcopy(model)
    kernels = dict(zip(map(id, generator.layers), generator.generate()))
    plain = copy.deepcopy(model)
    for name, layer in generated_convs(model):
        conv = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                         layer.dilation, bias=layer.bias is not None)
        conv = conv.to(device=layer.codes.device, dtype=layer.codes.dtype)
        conv.weight.copy_(kernels[id(layer)])
        if layer.bias is not None:
            conv.bias.copy_(layer.bias)
        parent_name, _, child = name.rpartition(".")
        setattr(plain.get_submodule(parent_name), child, conv)
    delattr(plain, GENERATOR_ATTR)
    for hooks, fn in ((plain._forward_pre_hooks, _begin_pass), (plain._forward_hooks, _end_pass)):
        for key in [k for k, h in hooks.items() if h is fn]:
            del hooks[key]
            plain._forward_hooks_always_called.pop(key, None)
    return plain
