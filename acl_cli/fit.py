"""A CSG network fitted to a trained original of the same architecture (``model.csg.init: fit``).

Every tensor the two networks share (stem, norms, classifier, plain convs) is copied. The generated convs'
kernels are cut into slices in each layer's layout, giving one matrix of all slices (a row per code). Its
truncated SVD at rank ``code_size`` is the least-squares optimum for one shared linear generator
(Eckart-Young): codes ``U_k * sqrt(N)`` (unit-variance entries, as the authors' random codes), generator
``V_k S_k / sqrt(N)``. Padding outside a layer's kernel is fitted as zeros.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .csg import GENERATOR_ATTR, GeneratedConv2d, find_generator, generated_convs
from .errors import UserError


def slices_of(layer: GeneratedConv2d, kernel: Tensor) -> Tensor:
    """``(out, in, kh, kw)`` kernel -> ``(num_slices, prod(slice_shape))``: the inverse of ``layer.assemble``
    (the padding the crop removes comes back as zeros)."""
    s0, s1, kh, kw = layer.generator.slice_shape
    gi, gj = layer.grid
    padded = kernel.new_zeros(gi * s0, gj * s1, kh, kw)
    padded[: layer.out_channels, : layer.in_channels] = kernel
    if layer.generator.layout == "flat":
        return padded.reshape(layer.num_slices, -1)
    return padded.reshape(gi, s0, gj, s1, kh, kw).transpose(1, 2).reshape(layer.num_slices, -1)


@torch.no_grad()
def fit_to_original(model: nn.Module, original: dict[str, Tensor], source: str) -> str:
    """Copy ``original``'s shared tensors into the CSG ``model`` and fit its generator and codes to the
    original's kernels; returns a line with the relative reconstruction error ``|M - M_k| / |M|``."""
    generator = find_generator(model)
    names = {id(layer): name for name, layer in generated_convs(model)}
    layers = [(names[id(layer)], layer) for layer in generator.layers] if generator is not None else []
    if not layers:  # in the generator's order: its codes are cut from the fitted matrix in that order
        raise UserError("model.csg.init: fit needs a CSG model (model.csg set)")
    own = model.state_dict()
    generated = {k for k in own if k.endswith(".codes") or k.split(".")[0] == GENERATOR_ATTR}
    kernels = [f"{name}.weight" for name, _ in layers]
    shared = [k for k in own if k not in generated]
    missing = [k for k in shared + kernels if k not in original]
    shapes = [k for k in shared if k in original and original[k].shape != own[k].shape]
    shapes += [k for k, (_, layer) in zip(kernels, layers) if k in original and tuple(original[k].shape) !=
               (layer.out_channels, layer.in_channels, *layer.kernel_size)]
    if missing or shapes:
        first = f"it has no {missing[0]}" if missing else f"{shapes[0]} is {tuple(original[shapes[0]].shape)}"
        raise UserError(f"model.csg.init: fit: {source} is not the original of this architecture ({first}); the "
                        "teacher must be the same network without CSG")
    model.load_state_dict({k: original[k] for k in shared}, strict=False)
    matrix = torch.cat([slices_of(layer, original[k].float().cpu()) for k, (_, layer) in zip(kernels, layers)])
    k = generator.code_size
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    rank = min(k, s.numel())
    scale = math.sqrt(matrix.shape[0])
    codes = torch.zeros(matrix.shape[0], k)
    codes[:, :rank] = u[:, :rank] * scale
    weight = torch.zeros(matrix.shape[1], k)
    weight[:, :rank] = vh[:rank].T * (s[:rank] / scale)
    generator.weight.copy_(weight)
    for layer, chunk in zip(generator.layers, codes.split([layer.num_slices for layer in generator.layers])):
        layer.codes.copy_(chunk)
    fitted = codes @ weight.T
    error = float((matrix - fitted).norm() / matrix.norm().clamp_min(1e-12))
    return (f"fitted to {source}: {len(shared)} tensors copied, generator and {matrix.shape[0]:,} codes from a rank-{k} "
            f"SVD of its kernels' slices; relative reconstruction error {error:.3f}")
