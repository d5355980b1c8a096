"""Summaries of finished (or running) runs: one row per run directory, and accuracy vs parameters."""
from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path
from typing import Any

from .config import ConfigError, build_config, load_raw
from .errors import UserError
from .rundir import check_output_file

COLUMNS = ["run", "arch", "csg", "params", "compression", "best_top1", "final_top1", "selected_on", "epochs",
           "wall_min", "img_s"]


def _selected_on(run: Path, cfg) -> str:
    """The split best_top1 was chosen on: a held-out part of train, a validation set, or the test set."""
    try:
        return json.loads((run / "run.json").read_text())["splits"]["val"]
    except (OSError, ValueError, KeyError, TypeError):  # a run from before run.json: its config says
        if cfg.data.val_split > 0:
            return f"{cfg.data.val_split:.0%} of train held out"
        return "the dataset's val/ or test set"


def collect(run_dir: str | Path) -> dict[str, Any]:
    run = Path(run_dir)
    if not (run / "config.yaml").is_file() or not (run / "params.json").is_file():
        raise UserError(f"{run} is not a run directory (no config.yaml / params.json)")
    try:
        raw = load_raw(run / "config.yaml")
        if "model" not in raw:  # an empty or cut file would silently read as the defaults
            raise ConfigError(f"{run / 'config.yaml'} is empty or has no model section")
        cfg = build_config(raw)
        params = json.loads((run / "params.json").read_text())
        total, compression = int(params["total"]), float(params["compression"])
    except ConfigError as e:
        raise UserError(f"{run}: {e}") from None
    except (ValueError, KeyError, TypeError, OSError):
        raise UserError(f"{run}: params.json is not readable (cut short or edited?)") from None
    try:
        rows = []
        if (run / "metrics.csv").is_file():
            with open(run / "metrics.csv", newline="") as f:
                rows = [r for r in csv.DictReader(f) if (r.get("epoch") or "").isdigit()]
        top1 = [float(r["val_top1"]) for r in rows]
        wall_min = round(sum(float(r["epoch_time"]) + float(r.get("eval_time") or 0) for r in rows) / 60, 1)
        img_s = round(statistics.median(float(r["img_s"]) for r in rows)) if rows else None
    except (ValueError, KeyError, TypeError, csv.Error, UnicodeDecodeError):
        raise UserError(f"{run}: metrics.csv is not readable (cut short or edited?)") from None
    csg = cfg.model.csg
    return {
        "run": run.name,
        "arch": cfg.model.arch,
        "csg": "-" if csg is None else f"{'x'.join(map(str, csg.slice_shape))}/{csg.code_size} {csg.layout}"
                                        + (" frozen" if csg.freeze else ""),
        "params": total,
        "compression": compression,
        "best_top1": round(max(top1), 2) if top1 else None,
        "final_top1": round(top1[-1], 2) if top1 else None,
        "selected_on": _selected_on(run, cfg),
        "epochs": f"{len(rows)}/{cfg.train.epochs}",
        "wall_min": wall_min,
        "img_s": img_s,
    }


def format_rows(rows: list[dict[str, Any]], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        return buf.getvalue().rstrip("\n")
    cell = lambda v: "-" if v is None else (f"{v:,}" if isinstance(v, int) else str(v))  # noqa: E731
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(r[c]) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: str | Path) -> None:
    """Best validation top-1 against parameters (log scale), one point per run."""
    check_output_file(Path(path), overwrite=True)  # replaces a file, never a folder, a link or a run's file
    try:
        import matplotlib
    except ImportError:
        raise UserError("--plot needs matplotlib: pip install 'acl_cli[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for csg in (False, True):
        pts = [r for r in rows if (r["csg"] != "-") == csg and r["best_top1"] is not None]
        ax.scatter([r["params"] for r in pts], [r["best_top1"] for r in pts], label="CSG" if csg else "original",
                   marker="o" if csg else "s")
        for r in pts:
            ax.annotate(r["run"], (r["params"], r["best_top1"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("best validation top-1 (%)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
