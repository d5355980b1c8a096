"""Experiment configuration (interim: the whole module moved here as it is, to be split next)."""
from .schema import (DEVICE_PATTERN, NOT_COMPUTATIONAL, Config, ConfigError, CSGConfig, DataConfig, DistillConfig,
                     ModelConfig, OptimConfig, ScheduleConfig, TrainConfig, absolute_paths, apply_overrides,
                     build_config, describe, flatten, from_dict, is_shipped, keys_named, load_config, load_raw, lookup,
                     quote, resolve_config_path, shipped_configs, shipped_configs_dir)

__all__ = ["CSGConfig", "Config", "ConfigError", "DEVICE_PATTERN", "DataConfig", "DistillConfig", "ModelConfig",
           "NOT_COMPUTATIONAL", "OptimConfig", "ScheduleConfig", "TrainConfig", "absolute_paths", "apply_overrides",
           "build_config", "describe", "flatten", "from_dict", "is_shipped", "keys_named", "load_config", "load_raw",
           "lookup", "quote", "resolve_config_path", "shipped_configs", "shipped_configs_dir"]
