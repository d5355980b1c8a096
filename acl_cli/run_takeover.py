"""A run taking its folder: created or taken over under the run's lock (held for the run's life), cleared of
what ``--overwrite`` replaces, then the run's first files written, the run record first. A run that fails
before its first step leaves nothing behind: the rerun needs no ``--overwrite``.

What may be done in a folder (a run or not, replaceable, resumable) is :mod:`acl_cli.rundir`'s to say; this
is the order a run writes in.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Iterator

from . import rundir
from .compute import add_macs
from .errors import UserError
from .files import read_json, write_text
from .records import run_record
from .run_log import RunLog
from .run_setup import RunSetup
from .run_state import Resumed, RunState


@contextmanager
def take_over(setup: RunSetup, state: RunState, log: RunLog, overwrite: bool,
              resumed: Resumed | None) -> Iterator[None]:
    """Hold the run folder (rank 0; the others write nothing) while the body trains, with the logs open."""
    if not setup.env.is_main:
        yield
        return
    run_dir = setup.run_dir
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create run directory {run_dir}: {e.strerror or e}") from None
    try:
        with rundir.RunLock(run_dir):
            _write_first_files(setup, state, log, overwrite, resumed)
            try:
                yield
            except BaseException:
                if resumed is None and state.step == 0:  # failed before its first step (an image that
                    log.close()  # cannot be decoded, a model that does not take the data)
                    rundir.clear(run_dir)  # leaves nothing behind: the rerun needs no --overwrite
                raise
            finally:
                log.close()
    finally:
        if created and resumed is None and state.step == 0:
            rundir.remove_if_only_lock(run_dir)


def _write_first_files(setup: RunSetup, state: RunState, log: RunLog, overwrite: bool,
                       resumed: Resumed | None) -> None:
    """Under the lock: check again (another process may have written here while this one prepared), clear
    what ``--overwrite`` replaces, then write the run record first and the run's files."""
    run_dir, cfg = setup.run_dir, setup.cfg
    if resumed is not None:
        if resumed.path.stat().st_mtime_ns != resumed.mtime_ns:
            raise UserError(f"{resumed.path} changed while this run prepared; run the command again")
    else:
        rundir.check_run_dir(run_dir, resume=False, overwrite=overwrite)
    try:
        if overwrite and resumed is None:
            rundir.clear(run_dir)
        rundir.remove_stale_temps(run_dir)
    except OSError as e:
        raise UserError(f"cannot prepare run directory {run_dir}: {e.strerror or e}") from None
    write_run_record(setup, None if resumed is None else state.step)  # first: the mark that acl made this folder
    write_text(run_dir / "config.yaml", cfg.to_yaml())
    add_macs(setup.report, cfg.model, setup.input_shape, "the run's images")  # counted on copies, never this model
    write_text(run_dir / "params.json", json.dumps(setup.report.to_dict(per_layer=True), indent=2))
    log.write_metrics(state.history)
    log.open_tensorboard(setup.report, state.step, resumed is not None,
                         resumed is not None and resumed.settings_changed)


def write_run_record(setup: RunSetup, resumed_at: int | None) -> None:
    """``run.json``: the splits, and one entry per session (the first, then each resume at its step)."""
    path, sessions = setup.run_dir / rundir.RECORD, []
    if resumed_at is not None and path.exists():
        try:
            sessions = list(read_json(path, what="run record")["sessions"])
        except (UserError, KeyError, TypeError):
            sessions = []  # unreadable: start the record afresh rather than refuse to resume
    sessions.append(run_record(setup.env, setup.device, resumed_at, setup.feed))
    write_text(path, json.dumps({"splits": setup.splits.sources, "sessions": sessions}, indent=2))
