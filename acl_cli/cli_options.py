"""What every ``acl`` command shares: the group that turns errors into one line and an exit status, and the
options several commands take (``--config``, ``--set``, ``--allow-import``)."""
from __future__ import annotations

import os
import sys
import traceback

import click

from .errors import UserError, one_line

_DEBUG = False


class AclGroup(click.Group):
    """Turns every user error into one line on stderr and exit status 2 (``--debug`` shows tracebacks)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as e:  # usage errors: one line instead of click's usage block
            hint = _set_hint(e, sys.argv[1:] if args is None else list(args)) if isinstance(e, click.UsageError) \
                else None
            message = e.format_message().rstrip(".") + hint if hint else e.format_message() + (
                " (see --help)" if isinstance(e, click.UsageError) else "")
            click.echo(f"error: {message}", err=True)
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("interrupted", err=True)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, SystemExit):
            raise
        except BrokenPipeError:  # acl list-models | head: the reader left, which is not an error
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nor is the flush at exit
            ctx.exit(0)
        except click.ClickException:
            raise
        except UserError as e:
            if _DEBUG:
                traceback.print_exc()
            click.echo(f"error: {one_line(e)}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except Exception as e:  # a bug on our side: still one line, the details behind --debug
            if _DEBUG:
                raise
            click.echo(f"error: {type(e).__name__}: {one_line(e)} (rerun with --debug for the traceback)", err=True)
            ctx.exit(1)


def _set_hint(error: click.UsageError, args: list[str]) -> str | None:
    """The ``--set`` a user meant: ``--epochs 1`` is ``--set train.epochs=1``, ``--set train.epochs 1`` too."""
    from .config import keys_named

    if isinstance(error, click.NoSuchOption):
        keys = keys_named(error.option_name.lstrip("-").replace("-", "_"))
        if keys:
            at = args.index(error.option_name) if error.option_name in args else -1
            value = args[at + 1] if 0 <= at < len(args) - 1 and not args[at + 1].startswith("-") else "VALUE"
            return f"; settings are given with --set: --set {keys[0]}={value}"
    if "extra argument" in error.format_message():
        for i in range(len(args) - 2):
            if args[i] == "--set" and "=" not in args[i + 1]:
                return f"; did you mean --set {args[i + 1]}={args[i + 2]}?"
    return None


def set_debug(ctx, param, value):
    global _DEBUG
    _DEBUG = bool(value)
    return value


set_option = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                          help="Override a config value (dotted key, YAML value); repeatable.")
allow_import_option = click.option(
    "--allow-import", "allow_imports", multiple=True, metavar="MODULE",
    help="Let a checkpoint or run whose model.arch is MODULE:factory import MODULE (its code runs); repeatable.")
config_option = click.option("--config", "config_path", type=click.Path(),  # a folder: resolve_config_path says
                             help="YAML experiment config: a file, or a shipped config's name (acl config list).")
