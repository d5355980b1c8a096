"""Parameter reports: totals, a breakdown by kind, compression against the original twin, unused codes; with the
forward MACs of :mod:`acl_cli.compute` where counted."""
from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from .compute import MacReport
from .csg import GeneratedConv2d, SliceGenerator, find_generator, kept_plain_summary

KINDS = ("generator", "codes", "conv", "norm", "classifier", "other")
CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


@dataclass
class LayerRow:
    name: str
    shape: list[int]  # (out, in, kh, kw); (out, in) for a linear layer
    generated: bool
    slices: int
    params: int
    kind: str = "conv"  # or "linear"
    macs: int | None = None  # per image, where counted
    generation_macs: int = 0  # this layer's kernel generation, per forward pass


@dataclass
class ParamReport:
    arch: str
    csg: dict | None
    total: int
    trainable: int
    frozen: int
    by_kind: dict[str, int]
    original_total: int  # the original's: for a baseline (resnet56_sep), the network it stands in for
    compression: float  # original_total / total
    num_codes: int = 0
    unused_codes: int = 0
    unused_code_params: int = 0
    kept_plain: str = ""  # convs convert() left plain although targeted, and why ("16 StdConv2d (weight ...)")
    layers: list[LayerRow] = field(default_factory=list)
    macs: MacReport | None = None  # acl_cli.compute.add_macs fills it
    original_arch: str = ""  # what original_total counts: arch, or a baseline's original

    def to_dict(self, per_layer: bool = False) -> dict[str, Any]:
        d = asdict(self)
        if not per_layer:
            d.pop("layers")
        return d


def _kind(module: nn.Module, name: str) -> str:
    if isinstance(module, SliceGenerator):
        return "generator"
    if isinstance(module, GeneratedConv2d):
        return "codes" if name == "codes" else "conv"
    if isinstance(module, CONVS):
        return "conv"
    if isinstance(module, _NORMS):
        return "norm"
    if isinstance(module, nn.Linear):
        return "classifier"
    return "other"


def count_by_kind(model: nn.Module) -> tuple[dict[str, int], int, int]:
    """Parameters by kind, each tensor counted once; also (trainable, frozen)."""
    by_kind = dict.fromkeys(KINDS, 0)
    seen: set[int] = set()
    trainable = frozen = 0
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            by_kind[_kind(module, name)] += p.numel()
            if p.requires_grad:
                trainable += p.numel()
            else:
                frozen += p.numel()
    return by_kind, trainable, frozen


def layer_rows(model: nn.Module) -> list[LayerRow]:
    """One row per conv and per linear layer: the layers whose MACs a count attributes."""
    rows = []
    for name, m in model.named_modules():
        if isinstance(m, GeneratedConv2d):
            shape = [m.out_channels, m.in_channels, *m.kernel_size]
            params = m.codes.numel() + (m.bias.numel() if m.bias is not None else 0)
            rows.append(LayerRow(name, shape, True, m.num_slices, params))
        elif isinstance(m, CONVS):  # every conv, 1-d, 3-d and transposed ones too; generated are only 2-d
            params = sum(p.numel() for p in m.parameters(recurse=False))
            rows.append(LayerRow(name, list(m.weight.shape), False, 0, params))
        elif isinstance(m, nn.Linear):
            params = sum(p.numel() for p in m.parameters(recurse=False))
            rows.append(LayerRow(name, [m.out_features, m.in_features], False, 0, params, "linear"))
    return rows


def original_arch(arch: str) -> str:
    """The network a model is compared with: ``arch`` itself (its twin without CSG), or for a baseline of the
    authors' comparison (``resnet56_sep``) the original it stands in for (``resnet56``), so the baselines'
    compression and MACs ratio are against the same network as the CSG model's."""
    from .models import MODELS

    # the zoo only: an external arch (package.module:factory) is never a baseline, and looking it up would
    # import its module, which acl report and the readers of a sent run folder must never do
    entry = MODELS.get(arch)
    return entry.baseline_of or arch if entry is not None else arch


def parameter_report(model: nn.Module, original: nn.Module, arch: str = "", csg: dict | None = None,
                     compared_with: str = "") -> ParamReport:
    by_kind, trainable, frozen = count_by_kind(model)
    total = trainable + frozen
    original_total = sum(count_by_kind(original)[1:])
    report = ParamReport(arch, csg, total, trainable, frozen, by_kind, original_total,
                         round(original_total / total, 4), layers=layer_rows(model),
                         original_arch=compared_with or arch)
    generator = find_generator(model)
    if generator is not None:
        report.num_codes = sum(layer.num_slices for layer in generator.layers)
        report.unused_codes = sum(layer.unused_codes() for layer in generator.layers)
        report.unused_code_params = report.unused_codes * generator.code_size
        report.kept_plain = kept_plain_summary(model)
    return report


def outweighs(report: ParamReport) -> str:
    """Why a CSG network has more parameters than its original, naming the larger part first."""
    generator, codes = report.by_kind["generator"], report.by_kind["codes"]
    replaced = report.original_total - (report.total - generator - codes)  # the kernel weights now generated
    parts = sorted([(generator, "the generator"), (codes, "the codes")], reverse=True)
    first, second = (f"{name} ({n:,})" for n, name in parts)
    return (f"{first} and {second} outweigh the {replaced:,} kernel weights they replace; a smaller code_size, or "
            "a conv network with more or larger kernels, shrinks instead")


def report_for_config(model_cfg, model: nn.Module | None = None) -> ParamReport:
    """The report for a ``ModelConfig``; builds the models on the meta device (no memory, no init cost)."""
    from .models import create_model

    from .errors import UserError, one_line

    csg = None if model_cfg.csg is None else asdict(model_cfg.csg)
    # a baseline is compared with the original it stands in for; a CSG on one with that baseline, its twin
    compared = original_arch(model_cfg.arch) if csg is None else model_cfg.arch

    def build(device: str):
        with torch.device(device):
            built = model
            if built is None:
                try:
                    built = create_model(model_cfg.arch, model_cfg.num_classes, csg)
                except ValueError as e:
                    raise UserError(f"model: {e}") from None
            return built, create_model(compared, model_cfg.num_classes, None)

    try:
        built, original = build("meta")
    except (NotImplementedError, RuntimeError):  # a builder that reads tensors it made (torchvision's RegNet)
        try:
            built, original = build("cpu")
        except (RuntimeError, OverflowError, MemoryError) as e:  # a code_size or num_classes too large to allocate
            raise UserError(f"model: cannot build {model_cfg.arch} with these settings: {one_line(e, 160)}") from None
    return parameter_report(built, original, model_cfg.arch, csg, compared)


# --------------------------------------------------------------------------------------------------
# Formatting


def _csg_summary(r: ParamReport) -> str:
    if not r.csg:
        return "none (the original network)"
    return f"slice {'x'.join(map(str, r.csg['slice_shape']))}, code {r.csg['code_size']}, {r.csg['layout']} layout"


def _macs_rows(r: ParamReport) -> list[tuple[str, str]]:
    m = r.macs
    if m is None:
        return []
    image = f"{'x'.join(map(str, m.input_shape))} ({m.input_from})"
    if m.error:
        return [("input", image), ("MACs", f"not counted: {m.error}")]
    rows = [("input", image), ("MACs", f"{m.per_image:,} per image (convs and linear layers, as the network runs them)")]
    if r.csg:
        share = f" ({m.generation / m.per_image:.1%} of one image's)" if m.per_image else ""
        rows.append(("generation MACs", f"{m.generation:,} per forward pass, whatever its batch{share}"))
    ratio = "-" if m.ratio is None else f"{m.ratio:.2f}x"
    label = "original MACs" if r.original_arch in ("", r.arch) else f"original MACs ({r.original_arch})"
    return rows + [(label, f"{m.original_per_image:,}"), ("MACs ratio", ratio)]


def _summary_rows(r: ParamReport) -> list[tuple[str, str]]:
    rows = [("arch", r.arch)]
    if r.csg:
        rows.append(("csg", _csg_summary(r)))
    rows += [("total", f"{r.total:,}"), ("trainable", f"{r.trainable:,}"), ("frozen", f"{r.frozen:,}")]
    rows += [(f"  {k}", f"{v:,}") for k, v in r.by_kind.items() if v]
    compared = "original total" if r.original_arch in ("", r.arch) else f"original total ({r.original_arch})"
    rows += [(compared, f"{r.original_total:,}"), ("compression", f"{r.compression:.2f}x")]
    if r.csg:
        rows.append(("codes", f"{r.num_codes:,}"))
        rows.append(("unused codes", f"{r.unused_codes:,} ({r.unused_code_params:,} params never reach a kernel)"))
        if r.kept_plain:
            rows.append(("kept plain", r.kept_plain))
    return rows + _macs_rows(r)


LAYER_HEADER = ["layer", "shape", "type", "slices", "params", "macs", "generation_macs"]


def _layer_cells(r: ParamReport, number=lambda n: f"{n:,}") -> list[list]:
    """The per-layer rows, and one for the MACs outside every conv and linear layer where there are some: the
    MACs column sums to the MACs per image."""
    def macs(n: int | None):
        return "-" if n is None else number(n)
    rows = [[row.name, "x".join(map(str, row.shape)),
             "linear" if row.kind == "linear" else "generated" if row.generated else "plain",
             row.slices, number(row.params), macs(row.macs), number(row.generation_macs)] for row in r.layers]
    if r.macs is not None and r.macs.other:
        rows.append(["(other ops)", "", "other", 0, number(0), number(r.macs.other), number(0)])
    return rows


def _csv(r: ParamReport, per_layer: bool) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["key", "value"])
    flat = r.to_dict()
    by_kind = flat.pop("by_kind")
    csg = flat.pop("csg") or {}
    macs = flat.pop("macs") or {}
    w.writerow(["arch", flat.pop("arch")])
    w.writerow(["csg", _csg_summary(r)])
    for k, v in flat.items():
        w.writerow([k, v])
    for k, v in csg.items():
        w.writerow([f"csg.{k}", v])
    for k, v in by_kind.items():
        w.writerow([f"by_kind.{k}", v])
    for k, v in macs.items():
        w.writerow([f"macs.{k}", "x".join(map(str, v)) if k == "input_shape" else v])
    if per_layer:
        w.writerow([])
        w.writerow(LAYER_HEADER)
        w.writerows(_layer_cells(r, number=lambda n: n))
    return buf.getvalue().rstrip("\n")


def format_report(r: ParamReport, fmt: str = "table", per_layer: bool = False) -> str:
    if fmt == "json":
        return json.dumps(r.to_dict(per_layer), indent=2)
    if fmt == "csv":
        return _csv(r, per_layer)
    header = ["layer", "shape", "type", "slices", "params", "MACs", "generation MACs"]
    table = [[str(c) for c in row] for row in _layer_cells(r)]
    if fmt == "markdown":
        lines = ["| key | value |", "|---|---|"] + [f"| {k.strip()} | {v} |" for k, v in _summary_rows(r)]
        if per_layer:
            lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(row) + " |" for row in table]
        return "\n".join(lines)
    width = max(len(k) for k, _ in _summary_rows(r))
    lines = [f"{k:<{width}}  {v}" for k, v in _summary_rows(r)]
    if per_layer:
        table = [header] + table
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        lines.append("")
        for row in table:
            lines.append("  ".join(c.rjust(w) if i >= 4 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))))
    return "\n".join(lines)
