"""What a run records besides its checkpoints: the metrics.csv rows, the TensorBoard HParams entry, and
run.json's account of each session (command, versions, commit, machine)."""
from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from . import distributed
from .config import Config, flatten
from .errors import UserError
from .files import atomic_write, read_text

METRIC_FIELDS = ["epoch", "step", "lr", "train_loss", "train_top1", "train_top5", "val_loss", "val_top1",
                 "val_top5", "epoch_time", "eval_time", "img_s"]
EMA_FIELDS = ["ema_val_loss", "ema_val_top1", "ema_val_top5"]  # a run with train.ema: its average's, after img_s


def _fields(rows: list[dict[str, Any]]) -> list[str]:
    """The columns: the EMA's only where a row has them, so a run without one keeps the file it always had."""
    return METRIC_FIELDS + (EMA_FIELDS if any(k in row for row in rows for k in EMA_FIELDS) else [])


def read_history(path: Path, keep_epochs: int) -> list[dict[str, Any]]:
    """Rows of a ``metrics.csv`` up to ``keep_epochs`` (for checkpoints older than the history they carry)."""
    if not path.is_file():
        return []
    rows = [r for r in csv.DictReader(io.StringIO(read_text(path), newline=""))
            if (r.get("epoch") or "").isdigit() and None not in r.values()]
    def value(row, key):
        text = row.get(key) or ""
        return None if text == "" else int(text) if key in ("epoch", "step") else float(text)
    fields = _fields(rows)
    return [{k: value(r, k) for k in fields} for r in rows if int(r["epoch"]) <= keep_epochs]


def metrics_csv(history: list[dict[str, Any]]) -> str:
    fields = _fields(history)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    w.writerows({k: row.get(k) for k in fields} for row in history)
    return buf.getvalue()


HPARAM_METRICS = ("best_val_top1", "val_top1", "val_top5", "val_loss", "params", "wall_s")


def hparams(cfg: Config) -> dict[str, Any]:
    """The config flattened to dotted keys with TensorBoard-ready values (each key filters on its own)."""
    def scalar(value):
        return value if isinstance(value, (bool, int, float, str)) else "none" if value is None else json.dumps(value)
    return {key: scalar(value) for key, value in flatten(cfg.to_dict()).items()}


HPARAMS_EVENTS = "events.out.tfevents.0000000000.acl-hparams"  # sorts first among a run's event files


def write_hparams(tb_dir: Path, cfg: Config) -> None:
    """The HParams entry, in an event file of its own that TensorBoard reads before the others (it keeps
    the first value of a tag), rewritten when a resume changes settings: it always shows the settings the
    run has now. Written when the run starts, so a crashed or running run shows up too; the metrics are
    scalars under ``hparam/``, written at the end (params at once)."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.summary.writer.record_writer import RecordWriter
    from torch.utils.tensorboard.summary import hparams as hparams_summary

    experiment, session_start, _ = hparams_summary(hparams(cfg), {f"hparam/{k}": 0.0 for k in HPARAM_METRICS})
    events = [Event(wall_time=time.time(), file_version="brain.Event:2")]
    events += [Event(wall_time=time.time(), step=0, summary=summary) for summary in (experiment, session_start)]

    def write(f) -> None:
        for event in events:
            RecordWriter(f).write(event.SerializeToString())

    try:
        atomic_write(tb_dir / HPARAMS_EVENTS, write)
    except OSError as e:
        raise UserError(f"cannot write {tb_dir / HPARAMS_EVENTS}: {e.strerror or e}") from None


def _git_commit() -> str | None:
    """The project's commit when acl runs from a git checkout (``+dirty`` with uncommitted changes)."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "--no-optional-locks", "status", "--porcelain", "-uno"],
                               capture_output=True, text=True, timeout=5).stdout.strip()  # no index.lock, no write
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def _cpu_name() -> str:
    """"CPU AMD EPYC (x86_64), 2 cores, 2 threads": the model where Linux says it, the cores torch may use."""
    import platform

    model = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    name = f"{model} ({platform.machine()})" if model else platform.machine()
    return f"CPU {name}, {cores} cores, {torch.get_num_threads()} threads"


def run_record(env: distributed.DistEnv, device: torch.device, resumed_at: int | None,
               loader: str | None = None) -> dict[str, Any]:
    """How this session of a run was started: command, versions, commit, machine, and what it shared the
    machine with (threads, cores, the load average when it began: other runs make speeds incomparable)."""
    import datetime
    import platform
    import socket
    from importlib import metadata

    import torchvision

    try:
        version = metadata.version("acl_cli")
    except metadata.PackageNotFoundError:
        version = None
    return {"started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": [Path(sys.argv[0]).name, *sys.argv[1:]], "resumed_at_step": resumed_at,
            "versions": {"acl": version, "torch": torch.__version__, "torchvision": torchvision.__version__,
                         "python": platform.python_version()},
            "git_commit": _git_commit(), "host": socket.gethostname(),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
            "processes": env.world_size, "threads": torch.get_num_threads(), "cpus": len(os.sched_getaffinity(0)),
            "load_1min": round(os.getloadavg()[0], 2), "loader": loader}
