"""A model from a config: built from the registry, then the original network's weights (``model.pretrained``)
or another run's generator (``model.csg.init_from``) loaded into it; and strict loading with one-line errors."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from ..checkpoint import load_checkpoint, torch_load
from ..config import Config, lookup
from ..csg import GENERATOR_ATTR, find_generator, generated_convs
from ..errors import UserError, one_line
from . import create_model, resolve_model_config


def build_model(cfg: Config, pretrained: bool = True) -> nn.Module:
    """The config's model; with ``pretrained``, ``model.pretrained`` loaded into it (a resumed or evaluated
    run takes its weights from its checkpoint instead)."""
    resolve_model_config(cfg.model)
    csg = None if cfg.model.csg is None else asdict(cfg.model.csg)
    try:
        model = create_model(cfg.model.arch, cfg.model.num_classes, csg)
    except ValueError as e:
        raise UserError(f"model: {e}") from None
    except (RuntimeError, OverflowError, MemoryError) as e:  # e.g. a code_size or num_classes too large to allocate
        raise UserError(f"model: cannot build {cfg.model.arch} with these settings: {one_line(e, 160)}") from None
    if pretrained and cfg.model.pretrained:
        load_pretrained(model, cfg.model.pretrained, cfg.model.pretrained_exclude)
    return model


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``model.load_state_dict(state)``, strict; a mismatch is one line naming the first key that differs
    (torch's own message starts with a header line and lists every key)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        first = (f"{shapes[0]} is {tuple(state[shapes[0]].shape)} in {source}, {tuple(own[shapes[0]].shape)} in the "
                 "model" if shapes else f"{missing[0]} is missing from {source}" if missing else
                 f"{source} has {unexpected[0]}, which the model has not")
        count = len(missing) + len(unexpected) + len(shapes)
        raise UserError(f"{source} does not fit this model: {first}" + (f" ({count} differences)" if count > 1 else ""))
    model.load_state_dict(state)


def _excluded(key: str, prefixes: list[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


@torch.no_grad()
def load_pretrained(model: nn.Module, path: str | Path, exclude: list[str] | tuple[str, ...] = ()) -> str:
    """The weights of the original network (a plain state_dict, such as torchvision's ``.pth``) into
    ``model``: every tensor except the generated convs' kernels, which their codes replace, and those under
    the ``exclude`` prefixes (e.g. ``["fc"]``: a classifier for another number of classes keeps its own
    init). Returns a line saying what was loaded from where."""
    try:
        state = torch_load(path, "state_dict")
    except UserError as e:
        raise UserError(f"model.pretrained: {e}") from None
    if isinstance(state, dict) and state.get("format") == "acl-checkpoint":
        state = state.get("model")  # missing: "not a state_dict" below
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"model.pretrained: {path} is not a state_dict (a mapping of names to tensors)")
    skipped = sorted(k for k in state if _excluded(k, exclude))
    state = {k: v for k, v in state.items() if k not in skipped}
    own = model.state_dict()
    kernels = {f"{name}.weight" for name, _ in generated_convs(model)}
    generated = {k for k in own if k.endswith(".codes") or k.split(".")[0] == GENERATOR_ATTR}
    problems = [f"missing {k}" for k in own if k not in state and k not in generated and not _excluded(k, exclude)]
    problems += [f"unexpected {k}" for k in state if k not in own and k not in kernels]
    shapes = [k for k in state if k in own and state[k].shape != own[k].shape]
    problems = [f"{k} is {tuple(state[k].shape)}, the model has {tuple(own[k].shape)}" for k in shapes] + problems
    if problems:
        hint = (f"; to load everything but that layer (a classifier for other classes), set model.pretrained_exclude: "
                f"[{shapes[0].rsplit('.', 1)[0]}]" if shapes else "")
        raise UserError(f"model.pretrained: {path} does not fit this model: {len(problems)} problems, e.g. "
                        f"{problems[0]}{hint}")
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    loaded = sum(1 for k in state if k in own)
    note = f"pretrained: {loaded} tensors loaded from {path}"
    if skipped:
        note += f"; not loaded (model.pretrained_exclude): {', '.join(skipped[:6])}" + (
            f" and {len(skipped) - 6} more" if len(skipped) > 6 else "")
    if kernels:
        note += f"; {len(kernels)} generated kernels come from codes instead"
    return note


@torch.no_grad()
def load_generator(model: nn.Module, source: str | Path) -> str:
    """Copy the trained generator of another run (any architecture with the same slice shape and code size);
    returns a line saying so."""
    generator = find_generator(model)
    state = load_checkpoint(source)
    weight = state["model"].get("csg.weight")
    if weight is None:
        raise UserError(f"model.csg.init_from: {source} holds an original network, no CSG generator")
    if generator is None or weight.shape != generator.weight.shape:
        src = lookup(state["config"], "model.csg") or {}
        src = src if isinstance(src, dict) else {}
        mine = "none" if generator is None else f"slice {list(generator.slice_shape)}, code {generator.code_size}"
        raise UserError(f"model.csg.init_from: {source} has a generator for slice {src.get('slice_shape')}, code "
                        f"{src.get('code_size')}; this model needs {mine}")
    generator.weight.copy_(weight)
    return f"generator ({tuple(weight.shape)}) loaded from {source}" + (" and frozen" if not
                                                                        generator.weight.requires_grad else "")
