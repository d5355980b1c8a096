"""A Config from a file (or the defaults) and overrides, checked as a whole; paths made absolute for a run."""
from __future__ import annotations

import os

from .overrides import apply_overrides
from .schema import Config, ConfigError
from .typed import from_dict
from .yaml_files import load_raw


def build_config(data: dict) -> Config:
    cfg = from_dict(Config, data)
    if cfg.data.name == "digits" and cfg.data.val_split == 0:
        raise ConfigError("data.val_split: digits has no held-out split; set a fraction such as 0.2")
    return cfg


def absolute_paths(cfg: Config) -> Config:
    """The data root and the teacher's files as absolute paths, in place: a run stores them so (eval and
    resume from another directory read the same files), and ``config diff`` compares them so."""
    cfg.data.root = os.path.abspath(cfg.data.root)
    if cfg.distill is not None:
        for key in ("teacher", "pretrained"):
            if getattr(cfg.distill, key) is not None:
                setattr(cfg.distill, key, os.path.abspath(getattr(cfg.distill, key)))
    return cfg


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Resolve a config file (or the defaults) with ``key=value`` overrides into a validated Config."""
    data = load_raw(path) if path is not None else {}
    return build_config(apply_overrides(data, overrides))
