"""Plain data (parsed YAML) to the typed settings: every key and value checked against the dataclasses'
annotations, unknown keys named with the closest valid one."""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from typing import Any, Literal, Union

from .schema import Config, ConfigError, quote

_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an int", float: "a number", bool: "true/false", str: "a string", type(None): "null"}.get(
        tp, str(tp))


def _convert(value: Any, tp: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        arms = [a for a in args if a is not type(None)]
        if len(arms) == 1 or (isinstance(value, dict) and any(dataclasses.is_dataclass(a) for a in arms)):
            arm = next((a for a in arms if dataclasses.is_dataclass(a)), arms[0]) if isinstance(value, dict) else arms[0]
            return _convert(value, arm, path)
        for arg in arms:
            try:
                return _convert(value, arg, path)
            except ConfigError:
                continue
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {quote(value)}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{path}: expected {_type_name(tp)}, got {quote(value)}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected {_type_name(tp)}, got {quote(value)}")
        (item,) = typing.get_args(tp)
        return [_convert(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if tp is float and isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string; every ML config writes it so
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }.get(tp)
    if not ok:
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {quote(value)}")
    if tp is int and not -2**63 <= value < 2**63:
        raise ConfigError(f"{path}: {quote(value)} is out of range")
    if tp is float and isinstance(value, int) and abs(value) >= 2**1023:  # float() of it overflows (or nearly)
        raise ConfigError(f"{path}: {quote(value)} is out of range")
    if tp is float and not math.isfinite(value):
        raise ConfigError(f"{path}: must be a finite number, got {value}")
    if tp is str and "\0" in value:  # no path, name or setting holds one; the OS would refuse it later, unclearly
        raise ConfigError(f"{path}: a NUL byte is not allowed, got {quote(value)}")
    return float(value) if tp is float else value


def _fields_of(tp: Any) -> list[str]:
    """The setting names inside a section's type (``Optional[DistillConfig]`` too); none for a plain value."""
    section = next((a for a in (tp, *typing.get_args(tp)) if dataclasses.is_dataclass(a)), None)
    return [f.name for f in dataclasses.fields(section)] if section is not None else []


def keys_named(name: str) -> list[str]:
    """The dotted settings called ``name`` in any section (``epochs`` -> ``["train.epochs"]``)."""
    hints = typing.get_type_hints(Config)
    return [f"{section.name}.{name}" for section in dataclasses.fields(Config) if name in _fields_of(hints[section.name])]


def from_dict(cls: type, data: Any, path: str = "config") -> Any:
    """A validated ``cls`` instance from plain data; raises :class:`ConfigError` naming the bad key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping, got {quote(data)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        where = f"{path}.{key}" if path != "config" else str(key)
        if key not in names:
            inside = [f"{section}.{key}" for section in names if key in _fields_of(hints[section])]
            close = inside or difflib.get_close_matches(str(key), names, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(names)}"
            raise ConfigError(f"unknown key {quote(where)}{hint}")
        kwargs[key] = _convert(value, hints[key], where)
    missing = [k for k in getattr(cls, "REQUIRED", ()) if k not in data]
    if missing:
        raise ConfigError(f"{path}: missing {', '.join(missing)} (a csg block needs slice_shape and code_size, "
                          "e.g. {slice_shape: [12, 12, 3, 3], code_size: 72}; null for the original network)")
    obj = cls(**kwargs)
    if hasattr(obj, "validate"):
        obj.validate(path if path != "config" else cls.__name__.removesuffix("Config").lower())
    return obj
