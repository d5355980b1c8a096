"""``--set key=value`` overrides, and the dotted keys (``model.csg.code_size``) they and every report name."""
from __future__ import annotations

import copy
from typing import Any

from .schema import ConfigError, quote
from .yaml_files import parse_yaml


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """A nested config dict as ``{"model.csg.code_size": 72, ...}``."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def lookup(tree: Any, key: str) -> Any:
    """``tree["model"]["arch"]`` for ``"model.arch"``; None where a level is missing or not a mapping."""
    for part in key.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {quote(item)}: expected key=value, e.g. --set optim.lr=0.1")
    key, _, text = item.partition("=")
    keys = key.strip().split(".")
    if not all(keys):
        raise ConfigError(f"--set {quote(item)}: empty key")
    try:
        value = parse_yaml(text, f"--set {key}") if text.strip() else None
    except ConfigError as e:
        raise ConfigError(f"--set {quote(item)}: the value is not valid YAML ({e})") from None
    return keys, value


def apply_overrides(data: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """A new config dict: ``data`` (a checkpoint's stored config, say) is never changed."""
    data = copy.deepcopy(data)
    for item in overrides:
        keys, value = parse_override(item)
        node = data
        for k in keys[:-1]:
            if not isinstance(node.get(k), dict):
                node[k] = {}
            node = node[k]
        node[keys[-1]] = value
    return data
