"""Export a trained model: plain convolutions that need nothing of ours, or the compact CSG form."""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any

import torch

from .checkpoint import checkpoint_file, save_checkpoint
from .files import atomic_path, atomic_write
from .csg import GeneratedConv2d, materialize
from .data import input_side
from .evaluate import load_model
from .errors import UserError, one_line
from .models import get_model_entry
from .rundir import check_output_file

FORMATS = ("state_dict", "torchscript", "pt2", "onnx")


def input_shape(model: torch.nn.Module, cfg, state: dict[str, Any]) -> tuple[list[int], str]:
    """(C, H, W) of the images the run was trained on, and where that comes from: recorded in the checkpoint,
    else the first conv's input channels and the data's image size (a run from before it was recorded),
    else the architecture's designed size."""
    if state.get("input_shape"):
        return list(state["input_shape"]), "the image shape recorded in the checkpoint"
    first = next((m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, GeneratedConv2d))), None)
    channels = first.in_channels if first is not None else 3
    found = input_side(cfg.data)
    if found is not None:
        return [channels, found[0], found[0]], found[1]
    side = get_model_entry(cfg.model.arch).input_size
    return [channels, side, side], f"{cfg.model.arch}'s designed size (the run's data is not at {cfg.data.root})"


@contextlib.contextmanager
def _quiet_tracing():
    """torch.export and the ONNX exporter log and print pages of tracebacks and graphs before raising: the
    reason is in the error, which becomes one line."""
    loggers = [logging.getLogger(n) for n in ("torch", "torch._dynamo", "torch.export", "torch.onnx", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        quiet = io.StringIO()  # and torch.onnx prints its progress: our one line says what was written
        with warnings.catch_warnings(), contextlib.redirect_stderr(quiet), contextlib.redirect_stdout(quiet):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export(checkpoint: str | Path, out: str | Path, fmt: str = "state_dict", compact: bool = False,
           fp16: bool = False, overwrite: bool = False, allow_imports: tuple[str, ...] = ()) -> dict[str, Any]:
    """Write ``out``; returns what was written (format, bytes, params)."""
    out = Path(out)
    check_output_file(out, overwrite, reads=checkpoint_file(checkpoint))
    model, cfg, state = load_model(checkpoint, allow_imports=allow_imports)
    try:
        with _quiet_tracing():
            return _write(model, cfg, state, out, fmt, compact, fp16)
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror or e}") from None
    except UserError:
        raise
    except Exception as e:  # a model the tracer or exporter cannot take: the reason, in one line
        raise UserError(f"cannot export {cfg.model.arch} as {fmt}: {type(e).__name__}: {one_line(e, 300)}") from None


def _write(model, cfg, state, out: Path, fmt: str, compact: bool, fp16: bool) -> dict[str, Any]:
    if compact:  # generator + codes + the rest: the smallest faithful file, still an acl checkpoint
        weights = {k: v.half() if fp16 and v.is_floating_point() else v for k, v in model.state_dict().items()}
        save_checkpoint({"config": state["config"], "model": weights, "progress": state.get("progress", {}),
                         "classes": state.get("classes")}, out)
        return {"format": "compact" + ("-fp16" if fp16 else ""), "bytes": out.stat().st_size}
    if fp16:
        raise UserError("--fp16 applies to --compact only")
    plain = materialize(model).eval()
    shape, source = input_shape(model, cfg, state)
    x = torch.randn(2, *shape)  # batch 2: a batch of 1 would be specialised as a constant
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
        try:
            with atomic_path(out) as tmp:
                torch.onnx.export(plain, (x,), str(tmp), input_names=["images"], output_names=["logits"],
                                  dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), external_data=False)
        except ImportError as e:
            raise UserError(f"ONNX export needs {e.name}: pip install onnx onnxscript") from None
    else:
        raise UserError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")
    return {"format": fmt, "bytes": out.stat().st_size, "input": f"(batch, {', '.join(map(str, shape))})",
            "input_from": source}
