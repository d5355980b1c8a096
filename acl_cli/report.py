"""Summaries of finished (or running) runs: one row per run directory, runs that differ only by their seed
grouped into mean ± std, and accuracy against parameters."""
from __future__ import annotations

import csv
import io
import json
import re
import statistics
from pathlib import Path
from typing import Any

from .config import NOT_COMPUTATIONAL, ConfigError, build_config, flatten, load_raw, quote
from .errors import UserError
from .files import atomic_write, read_text
from .rundir import check_output_file

COLUMNS = ["run", "arch", "csg", "distilled", "params", "compression", "best_top1", "final_top1", "selected_on", "epochs",
           "status", "wall_min", "img_s", "seed"]


def _run_record(run: Path) -> dict[str, Any]:
    """The run's ``run.json`` (splits, sessions), or {} for a run from before it or one unreadable."""
    try:
        record = json.loads(read_text(run / "run.json", what="run record"))
    except (UserError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _selected_on(record: dict[str, Any], cfg) -> str:
    """The split best_top1 was chosen on: a held-out part of train, a validation set, or the test set."""
    try:
        return str(record["splits"]["val"])
    except (KeyError, TypeError):  # a run from before run.json: its config says
        if cfg.data.val_split > 0:
            return f"{cfg.data.val_split:.0%} of train held out"
        return "the dataset's val/ or test set"


def _processes(record: dict[str, Any]) -> int:
    """How many processes trained the run (its last session's), so runs of another global batch differ."""
    try:
        return int(record["sessions"][-1]["processes"])
    except (KeyError, IndexError, TypeError, ValueError):
        return 1


# Runs that differ only in these (and their seed) are one experiment. The data root is not among them:
# another folder may hold other data, so runs on two roots are never averaged together.
_NOT_THE_EXPERIMENT = ("train.seed", *(k for k in NOT_COMPUTATIONAL if k != "data.root"))
GROUP_COLUMNS = ["group", "arch", "csg", "distilled", "params", "compression", "n", "seeds", "best_top1", "best_top1_std",
                 "final_top1", "final_top1_std", "selected_on", "status"]


def _distilled(cfg) -> str:
    """"-", or which teacher the run learned from: its run folder (or checkpoint) name, or its arch."""
    d = cfg.distill
    if d is None:
        return "-"
    if d.teacher is not None:
        path = Path(d.teacher)
        name = f"{path.parent.name}/{path.name}" if path.suffix == ".pt" else path.name
    else:
        name = d.arch
    return f"from {name} (alpha {d.alpha:g}, T {d.temperature:g})"


def _csg(cfg) -> str:
    """"-", or the slice shape, code size and layout, and how codes and generator trained where the recipe's
    single optimizer group was not used (a frozen generator, their own lr multiple or weight decay)."""
    csg, optim = cfg.model.csg, cfg.optim
    if csg is None:
        return "-"
    text = f"{'x'.join(map(str, csg.slice_shape))}/{csg.code_size} {csg.layout}" + (" frozen" if csg.freeze else "")
    if optim.csg_lr_scale != 1:
        text += f", lr x{optim.csg_lr_scale:g}"
    if optim.csg_weight_decay is not None:
        text += f", wd {optim.csg_weight_decay:g}"
    return text


def is_run_dir(path: str | Path) -> bool:
    return (Path(path) / "config.yaml").is_file() and (Path(path) / "params.json").is_file()


def collect(run_dir: str | Path) -> dict[str, Any]:
    run = Path(run_dir)
    if not is_run_dir(run):
        raise UserError(f"{run} is not a run directory (no config.yaml / params.json)")
    try:
        raw = load_raw(run / "config.yaml")
        if "model" not in raw:  # an empty or cut file would silently read as the defaults
            raise ConfigError(f"{run / 'config.yaml'} is empty or has no model section")
        cfg = build_config(raw)
        params = json.loads(read_text(run / "params.json"))
        total, compression = int(params["total"]), float(params["compression"])
    except ConfigError as e:
        raise UserError(f"{run}: {e}") from None
    except UserError:
        raise
    except (ValueError, KeyError, TypeError, OSError):
        raise UserError(f"{run}: params.json is not readable (cut short or edited?)") from None
    try:
        rows = []
        if (run / "metrics.csv").exists():
            text = read_text(run / "metrics.csv")
            rows = [r for r in csv.DictReader(io.StringIO(text, newline="")) if (r.get("epoch") or "").isdigit()]
        top1 = [float(r["val_top1"]) for r in rows]
        wall_min = round(sum(float(r["epoch_time"]) + float(r.get("eval_time") or 0) for r in rows) / 60, 1)
        img_s = round(statistics.median(float(r["img_s"]) for r in rows)) if rows else None
    except (ValueError, KeyError, TypeError, csv.Error, UnicodeDecodeError):
        raise UserError(f"{run}: metrics.csv is not readable (cut short or edited?)") from None
    record = _run_record(run)
    finished = (run / "final.json").exists()
    experiment = {k: v for k, v in flatten(cfg.to_dict()).items() if k not in _NOT_THE_EXPERIMENT}
    experiment["processes"] = _processes(record)  # another global batch: another experiment
    return {
        "run": run.name,
        "arch": cfg.model.arch,
        "csg": _csg(cfg),
        "distilled": _distilled(cfg),
        "params": total,
        "compression": compression,
        "best_top1": round(max(top1), 2) if top1 else None,
        "final_top1": round(top1[-1], 2) if top1 else None,
        "selected_on": _selected_on(record, cfg),
        "status": "finished" if finished else "unfinished",
        "epochs": f"{len(rows)}/{cfg.train.epochs}",
        "wall_min": wall_min,
        "img_s": img_s,
        "seed": cfg.train.seed,
        # only finished runs are averaged: an unfinished one is an experiment of its own
        "experiment": json.dumps(experiment, sort_keys=True) if finished else f"unfinished:{run.resolve()}",
    }


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return round(statistics.mean(values), 2), round(statistics.stdev(values), 2) if len(values) > 1 else None


def group_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per experiment: finished runs of the same data, process count and settings but their seed,
    with mean ± std (sample) of best and final top-1 and n. An unfinished run is a row of its own, marked so."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["experiment"], []).append(row)
    out = []
    for members in groups.values():
        first = members[0]
        names = {re.sub(r"_seed\d+$", "", r["run"]) for r in members}
        best_mean, best_std = _mean_std([r["best_top1"] for r in members if r["best_top1"] is not None])
        final_mean, final_std = _mean_std([r["final_top1"] for r in members if r["final_top1"] is not None])
        out.append({"group": names.pop() if len(names) == 1 else f"{first['run']} (+{len(members) - 1})",
                    "arch": first["arch"], "csg": first["csg"], "distilled": first["distilled"],
                    "params": first["params"],
                    "compression": first["compression"], "n": len(members),
                    "seeds": " ".join(str(r["seed"]) for r in sorted(members, key=lambda r: r["seed"])),
                    "best_top1": best_mean, "best_top1_std": best_std, "final_top1": final_mean,
                    "final_top1_std": final_std, "selected_on": first["selected_on"], "status": first["status"]})
    return out


def _table(rows: list[dict[str, Any]], columns: list[str], fmt: str) -> str:
    if fmt == "json":
        return json.dumps([{c: r[c] for c in columns} for r in rows], indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
        return buf.getvalue().rstrip("\n")
    cell = lambda v: "-" if v is None else (f"{v:,}" if isinstance(v, int) else str(v))  # noqa: E731
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def _pm(mean: float | None, std: float | None) -> str | None:
    return None if mean is None else f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def format_rows(rows: list[dict[str, Any]], fmt: str, by_seed: bool = False) -> str:
    """The runs; with ``by_seed`` the seed groups instead. Markdown adds the groups below the runs whenever
    some group has several seeds."""
    groups = group_rows(rows)
    if by_seed:
        return _table(groups, GROUP_COLUMNS, fmt)
    text = _table(rows, COLUMNS, fmt)
    if fmt == "markdown" and any(g["n"] > 1 for g in groups):
        shown = [{**g, "best_top1": _pm(g["best_top1"], g["best_top1_std"]),
                  "final_top1": _pm(g["final_top1"], g["final_top1_std"])} for g in groups]
        columns = ["group", "arch", "csg", "distilled", "params", "compression", "n", "best_top1", "final_top1", "selected_on",
                   "status"]
        text += "\n\nGrouped over seeds (mean ± sample std over n runs):\n\n" + _table(shown, columns, fmt)
    return text


PLOT_FORMATS = ("png", "pdf", "svg", "jpg", "jpeg", "eps", "ps", "tif", "tiff", "webp")


def check_plot_path(path: str | Path, overwrite: bool) -> None:
    """Refuse, before anything is read or drawn, a plot file acl cannot write or must not replace."""
    path = Path(path)
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in PLOT_FORMATS:
        raise UserError(f"--plot {path}: unsupported format {quote(path.suffix or '(none)')}; give a file ending in "
                        f"{', '.join('.' + f for f in PLOT_FORMATS[:4])}, ...")
    if not path.parent.is_dir():
        raise UserError(f"--plot {path}: the folder {path.parent} does not exist")
    check_output_file(path, overwrite)  # never a folder, a link, or a run's own file; an existing one only with --overwrite


def plot(rows: list[dict[str, Any]], path: str | Path, overwrite: bool = False) -> None:
    """Best validation top-1 against parameters (log scale): one point per group of seeds, with error bars."""
    check_plot_path(path, overwrite)
    try:
        import matplotlib
    except ImportError:
        raise UserError("--plot needs matplotlib: pip install 'acl_cli[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for csg in (False, True):  # one point per group of seeds, its error bar the std over them
        pts = [g for g in group_rows(rows) if (g["csg"] != "-") == csg and g["best_top1"] is not None]
        if not pts:  # no series without points in the legend
            continue
        ax.errorbar([g["params"] for g in pts], [g["best_top1"] for g in pts],
                    yerr=[g["best_top1_std"] or 0.0 for g in pts], fmt="o" if csg else "s", capsize=3,
                    label="CSG" if csg else "original")
        for g in pts:
            label = g["group"] + (f" (n={g['n']})" if g["n"] > 1 else "")
            ax.annotate(label, (g["params"], g["best_top1"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("best validation top-1 (%)")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format=Path(path).suffix.lower().lstrip("."), dpi=120)
    plt.close(fig)
    try:
        atomic_write(Path(path), lambda f: f.write(buffer.getbuffer()))
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
