"""Networks acl did not write: ``torchvision:NAME``, ``timm:NAME`` and ``package.module:factory``.

They are built plain (no weights are downloaded) and, for a CSG model, converted afterwards by
:func:`acl_cli.csg.convert`, which infers each conv's role from the conv itself.
"""
from __future__ import annotations

import functools
import importlib
import inspect

from ..config import lookup, quote
from ..errors import UserError
from .registry import DEFAULT_CSG_INIT, ModelEntry

PREFIXES = {
    "torchvision:NAME": "any torchvision classification model, built with weights=None (e.g. torchvision:mobilenet_v2)",
    "timm:NAME": "any timm model, pretrained=False (needs pip install -e '.[timm]')",
    "package.module:factory": "your own function returning an nn.Module, called with num_classes",
}


def _torchvision(name: str) -> ModelEntry:
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        raise ValueError(f"unknown torchvision model {quote(name)}; torchvision has {len(known)} classification models, "
                         f"e.g. {', '.join(known[:4])} (acl list-models --all lists them)")

    def constructor(num_classes: int = 1000):
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes)

    return ModelEntry(f"torchvision:{name}", constructor, 299 if name == "inception_v3" else 224, DEFAULT_CSG_INIT,
                      1000, ("block",), external=True)


def _timm(name: str) -> ModelEntry:
    try:
        import timm
    except ImportError:
        raise ValueError(f"timm:{name} needs timm: pip install -e '.[timm]' (or pip install timm)") from None
    if not timm.is_model(name):
        raise ValueError(f"unknown timm model {quote(name)}; see timm.list_models()")

    def constructor(num_classes: int = 1000):
        return timm.create_model(name, pretrained=False, num_classes=num_classes)

    size = timm.get_pretrained_cfg_value(name, "input_size") or (3, 224, 224)
    return ModelEntry(f"timm:{name}", constructor, int(size[-1]), DEFAULT_CSG_INIT, 1000, ("block",), external=True)


def factory_module(arch: str) -> str | None:
    """The module a ``package.module:factory`` arch imports (its top-level code runs), else None: the zoo,
    ``torchvision:`` and ``timm:`` names import nothing but those installed libraries."""
    prefix, colon, _ = arch.partition(":")
    return prefix if colon and prefix not in ("torchvision", "timm") else None


# Every setting whose value names a network acl builds, and so may import a module: a new one goes here.
BUILT_FROM = ("model.arch", "distill.arch")


def modules_imported(config: dict) -> dict[str, str]:
    """``{setting: module}`` for each ``package.module:factory`` a config (plain data) would import."""
    named = {}
    for key in BUILT_FROM:
        value = lookup(config, key)
        module = factory_module(value) if isinstance(value, str) else None
        if module is not None:
            named[key] = module
    return named


def check_import_allowed(stored: dict, used: dict, source: str, allowed: tuple[str, ...] | list[str]) -> None:
    """The one gate for code named by a file someone sent. ``stored``: the config a checkpoint or run folder
    holds; ``used``: what will be built from it (overrides applied). A module the stored config names and the
    command still builds is imported only when the command line says so (``--allow-import MODULE``); one the
    user named on the command line is theirs, as with --config/--set."""
    mine = modules_imported(stored)
    for key, module in modules_imported(used).items():
        if mine.get(key) == module and not all(p.isidentifier() for p in module.split(".")):
            raise UserError(f"{source} names {key} {quote(lookup(used, key))}: {quote(module)} is not a module name, "
                            "so nothing can be imported for it")
        if mine.get(key) == module and module not in allowed:
            raise UserError(f"{source} names {key} {quote(lookup(used, key))}: building it imports the module "
                            f"{quote(module)}, which runs that module's code; if you trust it, add --allow-import {module}")




def _importable(module_name: str, arch: str) -> None:
    """Only a factory's home is imported: never a script's entry point or a private module."""
    parts = module_name.split(".")
    if not all(p.isidentifier() for p in parts):
        raise ValueError(f"{arch}: {quote(module_name)} is not a module name (package.module:factory)")
    if "__main__" in parts:
        raise ValueError(f"{arch}: refusing to import {module_name}: a __main__ module is a script's entry point "
                         "(importing it runs the script), not a home for a model factory")
    private = next((p for p in parts if p.startswith("_")), None)
    if private:
        raise ValueError(f"{arch}: refusing to import {module_name}: {private} is private (leading underscore); "
                         "name the public module that defines the factory")


def _factory(arch: str) -> ModelEntry:
    module_name, _, attr = arch.partition(":")
    _importable(module_name, arch)
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # any error in a user's module: report it, don't crash
        where = (f"; put the folder that holds {module_name.split('.')[0]} on PYTHONPATH (acl does not add the "
                 "working directory)") if isinstance(e, ModuleNotFoundError) and module_name.startswith(
                     str(e.name)) else ""
        raise ValueError(f"{arch}: cannot import {module_name}: {type(e).__name__}: {e}{where}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"{arch}: {module_name} has no function {attr!r}")
    try:
        default = inspect.signature(factory).parameters.get("num_classes")
    except (TypeError, ValueError):
        default = None
    if default is None:
        raise ValueError(f"{arch}: the factory must take num_classes (it is called as {attr}(num_classes=N))")
    classes = default.default if isinstance(default.default, int) else 1000
    return ModelEntry(arch, factory, int(getattr(factory, "input_size", 224)), DEFAULT_CSG_INIT, classes,
                      ("block",), external=True)


@functools.lru_cache(maxsize=None)
def external_entry(arch: str) -> ModelEntry:
    """The entry of a prefixed name; ValueError with a one-line reason if it cannot be had."""
    prefix, _, name = arch.partition(":")
    if not name:
        raise ValueError(f"unknown arch {quote(arch)}: after ':' a model name is needed")
    if prefix == "torchvision":
        return _torchvision(name)
    if prefix == "timm":
        return _timm(name)
    return _factory(arch)
