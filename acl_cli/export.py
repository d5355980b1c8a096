"""Export a trained model: plain convolutions that need nothing of ours, or the compact CSG form."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from .checkpoint import save_checkpoint
from .files import atomic_write
from .csg import materialize
from .evaluate import load_model
from .errors import UserError
from .models import get_model_entry
from .rundir import check_output_file

FORMATS = ("state_dict", "torchscript", "pt2", "onnx")


def example_input(arch: str, batch: int = 1) -> torch.Tensor:
    side = get_model_entry(arch).input_size
    return torch.randn(batch, 3, side, side)


def export(checkpoint: str | Path, out: str | Path, fmt: str = "state_dict", compact: bool = False,
           fp16: bool = False, overwrite: bool = False, allow_imports: tuple[str, ...] = ()) -> dict[str, Any]:
    """Write ``out``; returns what was written (format, bytes, params)."""
    out = Path(out)
    source = Path(checkpoint)
    check_output_file(out, overwrite, reads=source if source.is_file() else None)
    model, cfg, state = load_model(checkpoint, allow_imports=allow_imports)
    try:
        return _write(model, cfg, state, out, fmt, compact, fp16)
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror or e}") from None


def _write(model, cfg, state, out: Path, fmt: str, compact: bool, fp16: bool) -> dict[str, Any]:
    arch = cfg.model.arch
    if compact:  # generator + codes + the rest: the smallest faithful file, still an acl checkpoint
        weights = {k: v.half() if fp16 and v.is_floating_point() else v for k, v in model.state_dict().items()}
        save_checkpoint({"config": state["config"], "model": weights, "progress": state.get("progress", {}),
                         "classes": state.get("classes")}, out)
        return {"format": "compact" + ("-fp16" if fp16 else ""), "bytes": out.stat().st_size}
    if fp16:
        raise UserError("--fp16 applies to --compact only")
    plain = materialize(model).eval()
    x = example_input(arch, batch=2)  # batch 2: a batch of 1 would be specialised as a constant
    if fmt == "state_dict":
        atomic_write(out, lambda f: torch.save(plain.state_dict(), f))
    elif fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecated upstream in favour of torch.export (pt2), still widely used
            traced = torch.jit.trace(plain, x)
            atomic_write(out, lambda f: torch.jit.save(traced, f))
    elif fmt == "pt2":
        batch = torch.export.Dim("batch", min=1)
        program = torch.export.export(plain, (x,), dynamic_shapes=({0: batch},))
        atomic_write(out, lambda f: torch.export.save(program, f))
    elif fmt == "onnx":
        try:
            import onnx  # noqa: F401
        except ImportError:
            raise UserError("ONNX export needs the onnx package: pip install onnx onnxscript") from None
        tmp = out.with_name(f".{out.name}.tmp")
        try:
            torch.onnx.export(plain, (x,), str(tmp), input_names=["images"], output_names=["logits"],
                              dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), external_data=False)
            tmp.replace(out)
        except ImportError as e:
            raise UserError(f"ONNX export needs {e.name}: pip install onnx onnxscript") from None
        finally:
            tmp.unlink(missing_ok=True)
    else:
        raise UserError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")
    return {"format": fmt, "bytes": out.stat().st_size}
