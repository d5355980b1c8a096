"""Experiment configuration: typed dataclasses, YAML files with ``base:`` inheritance, ``--set`` overrides.

Every key is checked before anything runs: unknown keys name the closest valid one, wrong types and
impossible values say which key and why.

- ``schema``: the settings, one dataclass per section, and ``ConfigError``
- ``typed``: plain data to those dataclasses, every key and value checked
- ``yaml_files``: safe YAML, the shipped configs, the ``base:`` chain
- ``overrides``: ``--set key=value`` and dotted keys
- ``load``: ``load_config``, the one way a run's Config is made
"""
from .load import absolute_paths, build_config, load_config
from .overrides import apply_overrides, flatten, lookup, parse_override
from .schema import (DEVICE_PATTERN, NOT_COMPUTATIONAL, SEED_LIMIT, Config, ConfigError, CSGConfig, DataConfig,
                     DistillConfig, EMAConfig, ModelConfig, OptimConfig, ScheduleConfig, TrainConfig, cut, quote)
from .typed import from_dict, keys_named
from .yaml_files import (MAX_CONFIG_BYTES, MAX_YAML_VALUES, describe, is_shipped, load_raw, parse_yaml,
                         resolve_config_path, shipped_configs, shipped_configs_dir)

__all__ = ["CSGConfig", "Config", "ConfigError", "DEVICE_PATTERN", "DataConfig", "DistillConfig", "EMAConfig", "MAX_CONFIG_BYTES",
           "MAX_YAML_VALUES", "ModelConfig", "NOT_COMPUTATIONAL", "OptimConfig", "SEED_LIMIT", "ScheduleConfig",
           "TrainConfig", "absolute_paths", "apply_overrides", "build_config", "cut", "describe", "flatten",
           "from_dict", "is_shipped", "keys_named", "load_config", "load_raw", "lookup", "parse_override", "parse_yaml",
           "quote", "resolve_config_path", "shipped_configs", "shipped_configs_dir"]
