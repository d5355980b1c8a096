"""Config files: safe YAML (bounded in size, integers read as YAML 1.2 reads them), the configs that ship
with acl, and the ``base:`` chain a file inherits from."""
from __future__ import annotations

import difflib
import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserError
from ..files import read_bytes
from .schema import ConfigError, cut, quote

MAX_CONFIG_BYTES = 1 << 20  # a config is a page of YAML; anything this large is not one
MAX_YAML_VALUES = 100_000  # values after expanding aliases: refuses "billion laughs" documents


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """Values in ``node`` with every alias expanded; computed per distinct node, so bombs cost nothing here."""
    if id(node) not in memo:
        memo[id(node)] = 1  # a node reached again through itself (a recursive alias) counts once
        children = node.value if isinstance(node, (yaml.SequenceNode, yaml.MappingNode)) else []
        pairs = [c for kv in children for c in kv] if isinstance(node, yaml.MappingNode) else children
        memo[id(node)] = 1 + sum(_expanded_size(c, memo) for c in pairs)
    return memo[id(node)]


class _Loader(yaml.SafeLoader):
    """Safe YAML whose integers are read as YAML 1.2 (and every ML config writer) reads them: PyYAML's YAML 1.1
    takes ``010`` as octal 8 (``--set train.seed=010`` would be seed 8), ``1:20`` as 80 (base 60) and
    ``1_000`` as 1000. Here ``010`` is 10, ``0o10`` octal, ``0x10`` hex, and anything else is text."""


_INT = "tag:yaml.org,2002:int"
_Loader.yaml_implicit_resolvers = {first: [(tag, rx) for tag, rx in resolvers if tag != _INT]
                                   for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(_INT, re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789"))


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node)
    return int(text, 0) if text.startswith(("0o", "0x")) else int(text, 10)  # base 10 keeps leading zeros decimal


_Loader.add_constructor(_INT, _construct_int)


def parse_yaml(text: str, where: str) -> Any:
    """Safe YAML (no tags that run code), refusing documents that expand past ``MAX_YAML_VALUES`` values:
    the document is composed and measured before anything is constructed."""
    try:
        loader = _Loader(text)  # its reader refuses a control character (a NUL) at once
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: not YAML text: {str(e).splitlines()[0]} (character {e.position + 1})") from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}) > MAX_YAML_VALUES:
            raise ConfigError(f"{where}: refusing a YAML document of more than {MAX_YAML_VALUES:,} values "
                              "(aliases expanded)")
        return loader.construct_document(node)
    except RecursionError:
        raise ConfigError(f"{where}: YAML nested too deeply") from None
    except (ValueError, LookupError, AttributeError, TypeError) as e:  # an int of thousands of digits, Python refuses
        if "integer string conversion" not in str(e):  # a tag on text it cannot take: !!int 0x, !!bool x, !!timestamp
            raise ConfigError(f"{where}: YAML syntax error: a value its tag cannot hold ({type(e).__name__}: "
                              f"{cut(str(e), 100)})") from None
        raise ConfigError(f"{where}: a number with more than 4,300 digits; no setting takes such a value") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark else where
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{at}: YAML syntax error: {problem}") from None
    finally:
        loader.dispose()


def _read_yaml(path: Path) -> dict:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{path} is a directory, not a config file")
    if st.st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: {st.st_size:,} bytes is too large for a config file")
    try:  # a regular file only (/dev/zero or a FIFO would never end), at most the cap
        data = read_bytes(path, MAX_CONFIG_BYTES, "config file")
    except UserError as e:
        raise ConfigError(str(e)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text file (a YAML config is expected)") from None
    data = parse_yaml(text, str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (model, data, ...)")
    return data


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def shipped_configs_dir() -> Path:
    """The configs that ship with acl: inside the installed package, or the clone's ``configs/``."""
    package = Path(__file__).resolve().parents[1]  # acl_cli, above this subpackage
    installed, clone = package / "configs", package.parent / "configs"
    return installed if installed.is_dir() or not (package.parent / "setup.cfg").is_file() else clone


def shipped_configs() -> dict[str, Path]:
    """Shipped config name (its path under configs/ without .yaml, e.g. ``cifar10/resnet56_csg_12_72``) -> file."""
    root = shipped_configs_dir()
    if not root.is_dir():
        return {}
    return {p.relative_to(root).with_suffix("").as_posix(): p for p in sorted(root.rglob("*.yaml"))}


def describe(path: Path) -> str:
    """A config's first comment line: what it is."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
        if line.strip():
            break
    return ""


def resolve_config_path(path: str | os.PathLike) -> Path:
    """A config file: ``path`` itself when a file is there (a file in the working directory always wins),
    else the shipped config of that name (``quickstart``, ``cifar10/resnet56_csg_12_72``). A folder is not a
    config: a sweep's output folder ``cifar10/resnet20`` does not hide the shipped config of that name."""
    candidate = Path(path)
    try:
        if candidate.is_symlink() or (candidate.exists() and not candidate.is_dir()):
            return candidate
        yaml_file = candidate.with_name(candidate.name + ".yaml")
        if candidate.suffix != ".yaml" and yaml_file.is_file():
            return yaml_file  # your quickstart.yaml over the shipped quickstart
    except (OSError, ValueError) as e:  # a name too long for the filesystem, a NUL byte
        raise ConfigError(f"--config {cut(str(path))}: not a usable file name ({getattr(e, 'strerror', None) or e})"
                          ) from None
    name = str(path).removesuffix(".yaml").removeprefix("configs/")
    shipped = shipped_configs()
    if name in shipped:
        return shipped[name]
    if candidate.is_dir():
        raise ConfigError(f"{cut(str(path))} is a directory, not a config file (nor a shipped config's name)")
    close = difflib.get_close_matches(name, list(shipped), n=3, cutoff=0.6)
    hint = (f"; closest shipped configs: {', '.join(close)}" if close else
            "; acl config list shows the shipped ones" if shipped else "")
    raise ConfigError(f"config file not found: {cut(str(path))} (no such file, nor a shipped config){hint}")


def is_shipped(path: Path) -> bool:
    """Whether ``path`` is one of the configs that ship with acl."""
    return path.resolve().is_relative_to(shipped_configs_dir().resolve())


def load_raw(path: str | os.PathLike, _seen: tuple = ()) -> dict:
    """A YAML file (or a shipped config's name) merged over its ``base:`` chain (paths relative to the file
    that names them, else a shipped config's name)."""
    path = resolve_config_path(path) if not _seen else Path(path)
    data = _read_yaml(path)  # first: a link loop is one line here, where resolve() would raise RuntimeError
    if path.resolve() in _seen:
        raise ConfigError(f"{path}: 'base' chain loops back to itself")
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str) or "\0" in base or not base.strip():
        raise ConfigError(f"{path}: 'base' must be a file name or a shipped config's name, got {quote(base)}")
    base_path = path.parent / base
    if not base_path.exists() and not Path(base).is_absolute() and base.removesuffix(".yaml") in shipped_configs():
        base_path = shipped_configs()[base.removesuffix(".yaml")]
    return _merge(load_raw(base_path, _seen + (path.resolve(),)), data)
