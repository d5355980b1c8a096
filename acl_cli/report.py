"""Summaries of finished (or running) runs: one row per run directory, runs that differ only by their seed
grouped into mean ± std, and accuracy against parameters and against MACs."""
from __future__ import annotations

import csv
import html
import io
import json
import math
import re
import statistics
from pathlib import Path
from typing import Any

from .config import NOT_COMPUTATIONAL, ConfigError, build_config, flatten, load_raw, quote
from .errors import UserError
from .files import atomic_write, read_text
from .params import original_arch
from .rundir import check_output_file

COLUMNS = ["run", "arch", "csg", "distilled", "params", "trainable", "compression", "macs", "best_top1", "final_top1",
           "selected_on", "epochs", "status", "wall_min", "s_epoch", "img_s", "seed", "made"]


def _run_record(run: Path) -> dict[str, Any]:
    """The run's ``run.json`` (splits, sessions), or {} for a run from before it or one unreadable."""
    try:
        record = json.loads(read_text(run / "run.json", what="run record"))
    except (UserError, ValueError, RecursionError):  # RecursionError: JSON nested thousands deep
        return {}
    return record if isinstance(record, dict) else {}


def _selected_on(record: dict[str, Any], cfg) -> str:
    """The split best_top1 was chosen on: a held-out part of train, a validation set, or the test set. Paths
    are shown under the data root (``train/``), not the folder of the machine that trained the run."""
    try:
        text = str(record["splits"]["val"])
        root = cfg.data.root.rstrip("/")
        return text.replace(root + "/", "") if root else text
    except (KeyError, TypeError):  # a run from before run.json: its config says
        if cfg.data.val_split > 0:
            return f"{cfg.data.val_split:.0%} of train held out"
        return "the dataset's val/ or test set"


def _sessions(record: dict[str, Any]) -> list[dict[str, Any]]:
    sessions = record.get("sessions")
    return [s for s in sessions if isinstance(s, dict)] if isinstance(sessions, list) else []


def _made(record: dict[str, Any]) -> str:
    """How the run was made, over its sessions: the commits (``+dirty``: from uncommitted code), the threads,
    the loader, and the machine's load when each began (other work sharing it), where recorded."""
    def each(key: str) -> list[str]:
        return list(dict.fromkeys(str(s[key]) for s in _sessions(record) if s.get(key) not in (None, "")))

    commits = [c[:7] + ("+dirty" if c.endswith("+dirty") else "") for c in each("git_commit")]
    parts = ["commit " + ", ".join(commits)] if commits else []
    threads = each("threads")
    if threads:
        parts.append(f"{'/'.join(threads)} thread{'' if threads == ['1'] else 's'}")
    parts += each("loader")
    loads = [v for v in (_finite_number(s.get("load_1min")) for s in _sessions(record)) if v is not None]
    if loads:
        parts.append(f"load {max(loads):.1f} at start")
    return "; ".join(parts) or "-"


def _finite_number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value) else None


def _processes(record: dict[str, Any]) -> int:
    """How many processes trained the run (its last session's), so runs of another global batch differ."""
    try:
        return int(record["sessions"][-1]["processes"])
    except (KeyError, IndexError, TypeError, ValueError, OverflowError):  # OverflowError: int(1e999)
        return 1


# Runs that differ only in these (and their seed) are one experiment. The data root is not among them:
# another folder may hold other data, so runs on two roots are never averaged together.
_NOT_THE_EXPERIMENT = ("train.seed", *(k for k in NOT_COMPUTATIONAL if k != "data.root"))
GROUP_COLUMNS = ["group", "arch", "csg", "distilled", "params", "trainable", "compression", "macs", "n", "seeds", "best_top1",
                 "best_top1_std", "final_top1", "final_top1_std", "selected_on", "status"]


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


def _recipe(cfg) -> str:
    """"-", or the recipe parts of modern references the run added to the authors' recipe (issue 34): weight
    EMA, batch mixing, an augmentation policy, random erasing, gradient accumulation."""
    t, d = cfg.train, cfg.data
    parts = []
    if t.ema is not None:
        parts.append(f"ema {t.ema.decay:g}" + (f" every {t.ema.every_steps}" if t.ema.every_steps > 1 else "") +
                     (f" warmup {t.ema.warmup_steps}" if t.ema.warmup_steps else ""))
    parts += [f"{name} {alpha:g}" for name, alpha in (("mixup", d.mixup), ("cutmix", d.cutmix)) if alpha]
    if d.mixup and d.cutmix:
        parts[-1] += f" (switch {d.mixup_switch_prob:g})"
    parts += [d.augment] if d.augment != "none" else []
    parts += [f"erasing {d.random_erasing:g}"] if d.random_erasing else []
    parts += [f"accumulate {t.accumulate_steps}"] if t.accumulate_steps > 1 else []
    return ", ".join(parts) or "-"


def _with_recipe(columns: list[str], rows: list[dict[str, Any]]) -> list[str]:
    """``columns`` with ``recipe`` after ``distilled`` when some run sets a recipe part; reports of runs on
    the authors' recipe keep the columns they always had."""
    if all(r.get("recipe", "-") == "-" for r in rows):
        return columns
    i = columns.index("distilled") + 1
    return columns[:i] + ["recipe"] + columns[i:]


def is_run_dir(path: str | Path) -> bool:
    return (Path(path) / "config.yaml").is_file() and (Path(path) / "params.json").is_file()


def _macs(params: dict[str, Any]) -> int | None:
    """The MACs per image params.json records, or None: a run from before they were counted, one whose model
    could not be counted, or a figure that is no whole number in [0, 2**63)."""
    macs = params.get("macs")
    return _whole(macs.get("per_image"), 2**63 - 1) if isinstance(macs, dict) else None


def _whole(value: Any, upper: int) -> int | None:
    """``value`` if it is a whole number in [0, upper], else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= upper else None


def _compression(params: dict[str, Any], cfg, total: int) -> float:
    """params.json's compression. A baseline recorded before baselines were counted against the original they
    stand in for (resnet56_sep's params.json then said 1.0, against itself) is recounted against it."""
    compared = original_arch(cfg.model.arch)
    if "original_arch" in params or compared == cfg.model.arch or cfg.model.csg is not None or total <= 0:
        return float(params["compression"])
    import torch

    from .models import create_model

    with torch.device("meta"):  # shapes only: nothing allocated, nothing initialised
        original = create_model(compared, cfg.model.num_classes, None)
    return round(sum(p.numel() for p in original.parameters()) / total, 4)


def _params(run: Path, cfg) -> dict[str, Any]:
    """The parameter count, trainable parameters, compression and MACs per image of params.json. A count that
    is no whole number in [0, 2**63) or a ratio that is no finite number is an edited file: refused by name;
    a trainable count that is none (or more than the total) shows as missing."""
    try:
        params = json.loads(read_text(run / "params.json"))
        total = _whole(params["total"], 2**63 - 1)  # 1.5 or true is no count: refused, not shown as 1
        if total is not None:  # more is no network's, and no plot could draw it
            compression = _compression(params, cfg, total)
            if math.isfinite(compression) and compression > 0:
                return {"params": total, "trainable": _whole(params.get("trainable"), total),
                        "compression": compression, "macs": _macs(params)}
    except UserError:
        raise
    except (ValueError, KeyError, TypeError, OverflowError, RecursionError, AttributeError):  # int(1e999), deep JSON
        pass
    raise UserError(f"{run}: params.json is not readable (cut short or edited?)")


def _finite(value: float | None) -> float | None:
    """``value``, or None for NaN and ±inf: they measure nothing, and neither JSON nor int() takes them."""
    return value if value is not None and math.isfinite(value) else None


def _metrics(run: Path) -> dict[str, Any]:
    """Epochs done, best and final val top-1 (a run with weight EMA: its average's, which best.pt holds), wall
    minutes, seconds an epoch and median img/s from metrics.csv. A value that is no finite number (or a top-1
    outside 0..100) shows as missing: an edited cell never breaks the report."""
    rows, top1, wall_s, img_s = [], [], 0.0, []
    if (run / "metrics.csv").exists():
        text = read_text(run / "metrics.csv")
        try:
            rows = [r for r in csv.DictReader(io.StringIO(text, newline="")) if (r.get("epoch") or "").isdigit()]
            top1 = [float(r.get("ema_val_top1") or r["val_top1"]) for r in rows]  # an EMA run: its average's
            times = [t for r in rows for t in (float(r["epoch_time"]), float(r.get("eval_time") or 0))]
            wall_s = sum(times) if all(t >= 0 for t in times) else math.nan  # an edited time measures nothing
            img_s = [v for v in (float(r["img_s"]) for r in rows) if math.isfinite(v)]
        except (ValueError, KeyError, TypeError, csv.Error):
            raise UserError(f"{run}: metrics.csv is not readable (cut short or edited?)") from None
    top1 = [round(v, 2) if 0 <= v <= 100 else None for v in top1]  # NaN fails both comparisons
    seen = [v for v in top1 if v is not None]
    median_img_s = _finite(statistics.median(img_s)) if img_s else None  # two of 1e308 average to inf
    median_img_s = None if median_img_s is None or median_img_s < 0 else median_img_s
    return {"done": len(rows), "best_top1": max(seen) if seen else None, "final_top1": top1[-1] if top1 else None,
            "wall_min": _finite(round(wall_s / 60, 1)), "s_epoch": _finite(round(wall_s / len(rows), 1)) if rows else None,
            "img_s": None if median_img_s is None else round(median_img_s)}


def collect(run_dir: str | Path) -> dict[str, Any]:
    run = Path(run_dir)
    if not is_run_dir(run):
        raise UserError(f"{run} is not a run directory (no config.yaml / params.json)")
    try:
        raw = load_raw(run / "config.yaml")
        if "model" not in raw:  # an empty or cut file would silently read as the defaults
            raise ConfigError(f"{run / 'config.yaml'} is empty or has no model section")
        cfg = build_config(raw)
    except ConfigError as e:
        raise UserError(f"{run}: {e}") from None
    except (ValueError, KeyError, TypeError, OSError, RecursionError):
        raise UserError(f"{run}: config.yaml is not readable (cut short or edited?)") from None
    counts = _params(run, cfg)
    metrics = _metrics(run)
    record = _run_record(run)
    final = run / "final.json"  # a FIFO, a folder or an empty file in its place is no finished run
    finished = final.is_file() and final.stat().st_size > 0
    experiment = {k: v for k, v in flatten(cfg.to_dict()).items() if k not in _NOT_THE_EXPERIMENT}
    experiment["processes"] = _processes(record)  # another global batch: another experiment
    return {
        "run": run.name,
        "arch": cfg.model.arch,
        "csg": _csg(cfg),
        "distilled": _distilled(cfg),
        "recipe": _recipe(cfg),
        **counts,
        "best_top1": metrics["best_top1"],
        "final_top1": metrics["final_top1"],
        "selected_on": _selected_on(record, cfg),
        "status": "finished" if finished else "unfinished",
        "epochs": f"{metrics['done']}/{cfg.train.epochs}",
        "wall_min": metrics["wall_min"],
        "s_epoch": metrics["s_epoch"],
        "img_s": metrics["img_s"],
        "seed": cfg.train.seed,
        "made": _made(record),
        # only finished runs are averaged: an unfinished one is an experiment of its own
        "experiment": json.dumps(experiment, sort_keys=True) if finished else f"unfinished:{run.resolve()}",
    }


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return round(statistics.mean(values), 2), round(statistics.stdev(values), 2) if len(values) > 1 else None


def _repeated_seeds(members: list[dict[str, Any]]) -> str:
    """A note when runs of one group share a seed (a copied run): they are not independent draws, so n and
    the std overstate what was measured."""
    seeds = [r["seed"] for r in members]
    return (f"; {len(seeds) - len(set(seeds))} repeat a seed (copies?): no mean or std" if len(set(seeds)) < len(seeds)
            else "")


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
        independent = len({r["seed"] for r in members}) == len(members)  # a copied run is no second draw
        best_mean, best_std = _mean_std([r["best_top1"] for r in members if r["best_top1"] is not None and independent])
        final_mean, final_std = _mean_std([r["final_top1"] for r in members
                                           if r["final_top1"] is not None and independent])
        out.append({"group": names.pop() if len(names) == 1 else f"{first['run']} (+{len(members) - 1})",
                    "arch": first["arch"], "csg": first["csg"], "distilled": first["distilled"],
                    "recipe": first["recipe"], "params": first["params"], "trainable": first["trainable"],
                    "compression": first["compression"], "macs": first["macs"], "n": len(members),
                    "seeds": " ".join(str(r["seed"]) for r in sorted(members, key=lambda r: r["seed"])),
                    "best_top1": best_mean, "best_top1_std": best_std, "final_top1": final_mean,
                    "final_top1_std": final_std, "selected_on": first["selected_on"],
                    "status": first["status"] + _repeated_seeds(members)})
    return out


# Control characters but tab, LF and CR (an escape sequence in a name would drive the terminal), and what
# is left of the line breaks and tab that Python or a markdown renderer splits on
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x0c\x0e-\x1f\x7f-\x9f]")
_LINE_BREAKS = re.compile(r"[\t\n\r\u2028\u2029]+")


def _value(value: Any) -> Any:
    """A cell as every format can take it: a non-finite float is missing, a string valid UTF-8 (a lone
    surrogate from a JSON escape or an undecodable folder name becomes "?") without control characters."""
    if isinstance(value, float):
        return _finite(value)
    return _CONTROL.sub(" ", value.encode("utf-8", "replace").decode()) if isinstance(value, str) else value


def _markdown_cell(value: Any) -> str:
    """A table cell that stays one cell: no line break, no HTML, ``|`` escaped."""
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return html.escape(_LINE_BREAKS.sub(" ", str(value)), quote=False).replace("|", "\\|")


def _csv_cell(value: Any) -> Any:
    """A string a spreadsheet would run as a formula (``=2+5``, ``@SUM(..)``) gets a leading quote; numbers
    stay numbers, and "-" (none) stays as it is. A CR becomes a newline: the writer quotes a cell holding
    that, not one holding a lone CR, which a reader would take for the row's end."""
    if not isinstance(value, str):
        return value
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    return "'" + value if value != "-" and value[:1] in ("=", "+", "-", "@", "\t", "\n") else value


def _table(rows: list[dict[str, Any]], columns: list[str], fmt: str) -> str:
    cells = [{c: _value(r[c]) for c in columns} for r in rows]
    if fmt == "json":
        return json.dumps(cells, indent=2, allow_nan=False)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        w.writeheader()
        w.writerows({c: _csv_cell(v) for c, v in row.items()} for row in cells)
        return buf.getvalue().rstrip("\n")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_markdown_cell(row[c]) for c in columns) + " |" for row in cells]
    return "\n".join(lines)


def _pm(mean: float | None, std: float | None) -> str | None:
    return None if mean is None else f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def format_rows(rows: list[dict[str, Any]], fmt: str, by_seed: bool = False) -> str:
    """The runs; with ``by_seed`` the seed groups instead. Markdown adds the groups below the runs whenever
    some group has several seeds."""
    groups = group_rows(rows)
    if by_seed:
        return _table(groups, _with_recipe(GROUP_COLUMNS, groups), fmt)
    text = _table(rows, _with_recipe(COLUMNS, rows), fmt)
    if fmt == "markdown" and any(g["n"] > 1 for g in groups):
        shown = [{**g, "best_top1": _pm(g["best_top1"], g["best_top1_std"]),
                  "final_top1": _pm(g["final_top1"], g["final_top1_std"])} for g in groups]
        columns = ["group", "arch", "csg", "distilled", "params", "trainable", "compression", "macs", "n", "best_top1",
                   "final_top1", "selected_on", "status"]
        text += "\n\nGrouped over seeds (mean ± sample std over n runs):\n\n" + _table(shown, _with_recipe(columns, shown), fmt)
    return text


PLOT_FORMATS = ("png", "pdf", "svg", "jpg", "jpeg", "eps", "ps", "tif", "tiff", "webp")


def check_plot_path(path: str | Path, overwrite: bool) -> None:
    """Refuse, before anything is read or drawn, a plot file acl cannot write or must not replace."""
    path = Path(path)
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in PLOT_FORMATS:
        raise UserError(f"--plot {path}: unsupported format {quote(path.suffix or '(none)')}; give a file ending in "
                        f"{', '.join('.' + f for f in PLOT_FORMATS[:4])}, ...")
    check_output_path(path, "--plot", overwrite)


def check_output_path(path: str | Path, option: str, overwrite: bool) -> None:
    """A file ``report`` writes (``--plot``, ``--out``), checked before anything is read: its folder exists (it is
    never made), and it is never a folder, a link, a FIFO or device, or a run's own file; an existing one only
    with ``--overwrite``."""
    path = Path(path)
    if not path.parent.is_dir():
        raise UserError(f"{option} {path}: the folder {path.parent} does not exist")
    check_output_file(path, overwrite)


def _panel(ax, groups: list[dict[str, Any]], key: str, label: str) -> None:
    """Best validation top-1 against ``key`` (log scale): one point per group of seeds, its error bar the std."""
    for csg in (False, True):
        pts = [g for g in groups if (g["csg"] != "-") == csg and g["best_top1"] is not None and g[key]]
        if not pts:  # no series without points in the legend
            continue
        ax.errorbar([g[key] for g in pts], [g["best_top1"] for g in pts],
                    yerr=[g["best_top1_std"] or 0.0 for g in pts], fmt="o" if csg else "s", capsize=3,
                    color="C1" if csg else "C0", label="CSG" if csg else "original")  # one colour in both panels
        for g in pts:
            name = _value(g["group"]) + (f" (n={g['n']})" if g["n"] > 1 else "")
            ax.annotate(name, (g[key], g["best_top1"]), fontsize=7, xytext=(3, 3), textcoords="offset points",
                        parse_math=False, usetex=False)  # a run named lr$\frac$ is a name, not TeX
    if ax.get_legend_handles_labels()[0]:
        ax.set_xscale("log")
        ax.legend()
    else:  # runs from before params.json recorded MACs: say so rather than draw empty axes
        ax.text(0.5, 0.5, f"no run here records {label}\n(params.json from before acl counted them)", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(label)
    ax.grid(True, alpha=0.3)


def plot(rows: list[dict[str, Any]], path: str | Path, overwrite: bool = False) -> None:
    """Best validation top-1 against parameters and against forward MACs per image, side by side."""
    check_plot_path(path, overwrite)
    try:
        import matplotlib
    except ImportError:
        raise UserError("--plot needs matplotlib: pip install 'acl_cli[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_params, by_macs) = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    groups = group_rows(rows)
    _panel(by_params, groups, "params", "parameters")
    _panel(by_macs, groups, "macs", "forward MACs per image")
    by_params.set_ylabel("best validation top-1 (%)")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format=Path(path).suffix.lower().lstrip("."), dpi=120)
    plt.close(fig)
    try:
        atomic_write(Path(path), lambda f: f.write(buffer.getbuffer()))
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
