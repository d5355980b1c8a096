"""``acl config`` (list, show, diff) and ``acl plan``: what a config holds, and what a sweep does with a run."""
from __future__ import annotations

import sys

import click

from .cli_options import config_option, set_option
from .config import ConfigError, load_config
from .errors import UserError, one_line


@click.group("config")
def config_group():
    """Inspect experiment configs.

    \b
    Example:
      acl config show --config configs/quickstart.yaml --set optim.lr=0.1
    """


@config_group.command("list")
def config_list():
    """The configs that ship with acl, one per line with what each is; pass a name to --config.

    \b
    Example:
      acl config list
      acl train --config cifar10/resnet56_csg_12_72 --set data.root=~/data
    """
    from .config import describe, shipped_configs

    configs = shipped_configs()
    width = max(map(len, configs), default=0)
    for name, path in configs.items():
        click.echo(f"{name:<{width}}  {describe(path)}".rstrip())


@config_group.command("show")
@config_option
@set_option
def config_show(config_path, overrides):
    """Print the fully resolved config (bases merged, overrides applied, defaults filled in).

    \b
    Example:
      acl config show --config configs/cifar10/resnet20_csg_16_72.yaml
    """
    from .models import resolve_model_config
    from .models.external import factory_module

    cfg = load_config(config_path, overrides)
    if factory_module(cfg.model.arch) is None:  # a factory's module is never imported just to show a config
        resolve_model_config(cfg.model)
    click.echo(cfg.to_yaml(), nl=False)


@config_group.command("diff")
@click.argument("run", type=click.Path())
@config_option
@set_option
@click.option("--all", "show_all", is_flag=True,
              help="Also the settings that do not change results (data.root, data.workers, train.compile, ...).")
def config_diff(run, config_path, overrides, show_all):
    """Compare RUN's config (a run folder or a config file) with --config and --set: one line per setting that
    would change the result, `key: RUN's -> the config's`; exit status 0 when there is none, 1 when some differ.

    \b
    Example:
      acl config diff runs/r20 --config cifar10/resnet20 --set train.epochs=30
    """
    from .config import NOT_COMPUTATIONAL
    from .plan import differences

    try:  # exit 1 means "settings differ" to the sweeps: every failure here is 2
        lines = differences(run, config_path, overrides, ignoring=() if show_all else NOT_COMPUTATIONAL)
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"config diff: {type(e).__name__}: {one_line(e)}") from None
    for line in lines:
        click.echo(line)
    sys.exit(1 if lines else 0)


@click.command("plan")
@click.argument("run", type=click.Path())
@config_option
@set_option
def plan_cmd(run, config_path, overrides):
    """What a sweep does with the job --config/--set whose run folder is RUN, in one line: `train`, `resume`,
    `skip (finished)` or `conflict: <what differs>` (a finished run made with other settings, or a checkpoint
    a resume cannot bring to them). Exit 0 when decided, 2 on bad input; imports nothing a run names, writes
    nothing. A teacher is compared by the weights the run recorded, wherever it lies now.

    \b
    Example:
      acl plan runs/r20 --config cifar10/resnet20 --set data.root=~/data --set train.epochs=30
    """
    from .plan import plan

    if not config_path:
        raise ConfigError("give --config (the job's config; see acl plan --help)")
    try:
        decision = plan(run, config_path, overrides)
    except UserError:
        raise
    except Exception as e:  # an unreadable folder or file is bad input: 2, as a sweep reads it
        raise UserError(f"plan: {type(e).__name__}: {one_line(e)}") from None
    click.echo(str(decision))
