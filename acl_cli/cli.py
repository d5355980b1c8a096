"""The ``acl`` command line: a thin layer over the library API."""
from __future__ import annotations

import json
import os
import sys

import click

from . import interrupts
from .cli_config import config_group, plan_cmd
from .cli_options import AclGroup, allow_import_option, config_option, set_debug, set_option
from .config import ConfigError, load_config, quote
from .errors import UserError


@click.group(cls=AclGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--debug", is_flag=True, expose_value=False, is_eager=True, callback=set_debug,
              help="Show full tracebacks on errors.")
@click.version_option(package_name="acl_cli", prog_name="acl")
def main():
    """acl: train, evaluate, count and benchmark CNNs with generated (CSG) convolution kernels."""


main.add_command(config_group)
main.add_command(plan_cmd)


@main.command("count-params")
@config_option
@set_option
@click.option("--arch", help="Architecture (instead of --config), e.g. resnet56.")
@click.option("--num-classes", type=int,
              help="Classifier outputs (default: the config's, else the architecture's: 10 for the CIFAR nets, "
                   "1000 for the ImageNet, torchvision and timm ones).")
@click.option("--slice-shape", help="CSG slice shape S0,S1,kh,kw; omit for the original network.")
@click.option("--code-size", type=int, help="CSG code size.")
@click.option("--layout", type=click.Choice(["flat", "tile"]), help="CSG slice layout.")
@click.option("--targets", help="Which convs the CSG generates: authors, all, or roles such as block,pointwise.")
@click.option("--per-layer", is_flag=True,
              help="One row per conv and linear layer: shape, generated or plain, slices, params, MACs.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv", "markdown"]), default="table",
              show_default=True)
def count_params(config_path, overrides, arch, num_classes, slice_shape, code_size, layout, targets, per_layer, fmt):
    """Exact parameter report of a model, with its original twin and the compression ratio, and its forward MACs
    per image at the config's image size (the architecture's own without --config) and the CSG's generation's.

    \b
    Examples:
      acl count-params --arch resnet56 --slice-shape 12,12,3,3 --code-size 72
      acl count-params --config configs/cifar10/resnet56_csg_12_72.yaml --per-layer --format json
    """
    from .compute import add_macs, count_input
    from .params import format_report, report_for_config

    sets = list(overrides)
    if arch:
        sets.append(f"model.arch={arch}")
    if num_classes is not None:
        sets.append(f"model.num_classes={num_classes}")
    if slice_shape is not None:
        try:
            shape = [int(s) for s in slice_shape.replace("x", ",").split(",")]
        except ValueError:
            raise ConfigError(f"--slice-shape {slice_shape!r}: expected four ints like 12,12,3,3") from None
        sets.append(f"model.csg.slice_shape={shape}")
    if code_size is not None:
        sets.append(f"model.csg.code_size={code_size}")
    if layout is not None:
        sets.append(f"model.csg.layout={layout}")
    if targets is not None:  # a role list, or one of the names (authors, all): the config says which is valid
        roles = [r.strip() for r in targets.split(",")]
        sets.append(f"model.csg.targets={roles if len(roles) > 1 or roles[0] not in ('authors', 'all') else roles[0]}")
    if config_path is None and not arch:
        raise ConfigError("give --config FILE or --arch NAME (see acl count-params --help)")
    from .models import resolve_model_config

    cfg = load_config(config_path, sets)
    resolve_model_config(cfg.model)
    shape, source = count_input(cfg, from_data=config_path is not None or any(s.startswith("data.") for s in sets))
    click.echo(format_report(add_macs(report_for_config(cfg.model), cfg.model, shape, source), fmt, per_layer))


def _config_source(config_path: str) -> str:
    """Which file ``--config`` read: a file of the user's, or the shipped config a name stands for."""
    from pathlib import Path

    from .config import is_shipped, resolve_config_path

    path = resolve_config_path(config_path)
    named = path != Path(config_path) and is_shipped(path)  # a name that found a shipped config, not a file given
    return f"{path} (the shipped config {config_path})" if named else str(path)


def _run_dir_default(config_path: str | None) -> str:
    from pathlib import Path
    return str(Path("runs") / (Path(config_path).stem if config_path else "run"))


@main.command()
@config_option
@set_option
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Run directory (default: runs/<config name>).")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False),
              help="Continue the run in this directory from its last.pt, exactly where it stopped.")
@click.option("--overwrite", is_flag=True, help="Replace an existing run directory.")
@allow_import_option
def train(config_path, overrides, out_dir, resume_dir, overwrite, allow_imports):
    """Train a model from a YAML config; logs, checkpoints and reports go to the run directory.

    \b
    Examples:
      acl train --config configs/quickstart.yaml
      acl train --config configs/cifar10/resnet56_csg_12_72.yaml --set data.root=~/data --out runs/r56
      acl train --resume runs/r56 --set train.epochs=300
    """
    from pathlib import Path

    from .rundir import resume_config
    from .training import TrainingInterrupted, train as run_training
    from .rundir import check_not_reading, check_replaceable

    if resume_dir:
        if config_path or out_dir or overwrite:
            raise ConfigError("--resume takes the config from the run's checkpoint; drop --config/--out/--overwrite")
        cfg, run_dir = resume_config(resume_dir, overrides, allow_imports), resume_dir
    else:
        if not config_path:
            raise ConfigError("give --config FILE (or --resume RUN_DIR); try configs/quickstart.yaml")
        cfg, run_dir = load_config(config_path, overrides), out_dir or _run_dir_default(config_path)
        click.echo(f"config: {_config_source(config_path)}")
        if overwrite:  # what --overwrite may clear, and not the config being read
            check_replaceable(Path(run_dir))
            check_not_reading(Path(run_dir), config_path)
    try:
        run_training(cfg, run_dir, resume=bool(resume_dir), overwrite=overwrite, log=click.echo,
                     allow_imports=allow_imports)
    except TrainingInterrupted as e:
        click.echo(str(e), err=True)
        sys.exit(130)


@main.command("eval")
@click.argument("checkpoint", type=click.Path())
@set_option
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="val", show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--batch-size", type=int, help="Evaluation batch size.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--allow-train-overlap", is_flag=True,
              help="Score a split that shares images with the run's training split (an override of data.split_seed, "
                   "val_split or train_subset); the output says how many were trained on.")
@allow_import_option
def eval_cmd(checkpoint, overrides, split, device, batch_size, fmt, allow_train_overlap, allow_imports):
    """Evaluate a checkpoint (a file, or a run directory: its best.pt) on a data split.

    \b
    Examples:
      acl eval runs/quickstart
      acl eval runs/r56/last.pt --split test --format json
      acl eval runs/r56 --set data.name=imagefolder --set data.root=/data/cifar-jpeg --split test
    """
    from .evaluate import evaluate_checkpoint

    overrides = (*overrides, "train.progress=false") if fmt == "json" else overrides
    m = evaluate_checkpoint(checkpoint, split, overrides, device, batch_size, allow_imports, allow_train_overlap)
    if fmt == "json":
        click.echo(json.dumps(m))
    else:
        top5 = "n/a (fewer than 5 classes)" if m["top5"] is None else f"{m['top5']:.2f}%"
        click.echo(f"{split} ({m['source']}): top1 {m['top1']:.2f}%  top5 {top5}  loss {m['loss']:.4f}  "
                   f"samples {m['samples']:,}  params {m['params']:,}" +
                   ("  (the weights' EMA)" if m["weights"] == "ema" else "") +
                   (f"  ({m['trained_on']:,} of {m['samples']:,} images were trained on)" if "trained_on" in m else ""))


@main.command("bench")
@config_option
@set_option
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--batch-size", type=int, help="Default: the config's data.batch_size.")
@click.option("--steps", type=int, default=10, show_default=True, help="Steps per timed block.")
@click.option("--repeats", type=int, default=5, show_default=True, help="Timed blocks per model (median).")
@click.option("--data", "data_only", is_flag=True, help="Benchmark the data loaders alone instead.")
@click.option("--epochs", type=int, help="Time N whole epochs of acl train instead (CSG, then original); "
              "the first is reported as warm-up.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def bench_cmd(config_path, overrides, device, batch_size, steps, repeats, data_only, epochs, fmt):
    """Time a CSG model against its original twin, or a baseline (resnet56_sep, ...) against the original it stands
    in for (train step, inference, memory, whole epochs), or the loaders.

    \b
    Examples:
      acl bench --config configs/cifar10/resnet56_csg_12_72.yaml --device cpu --batch-size 128
      acl bench --config configs/cifar10/resnet56_csg_12_72.yaml --set train.amp=bf16 --set train.channels_last=true
      acl bench --config configs/quickstart.yaml --data
      acl bench --config configs/cifar10/resnet56_csg_12_72.yaml --epochs 3 --set data.name=synthetic \\
        --set data.synthetic_size=50000 --set data.preset=cifar   # CIFAR-10-sized epochs of acl train
    """
    from .bench import bench_epochs, bench_loaders, bench_models, format_epochs, format_loaders, format_models
    from .device import resolve_device

    if not config_path:
        raise ConfigError("give --config FILE (see acl bench --help)")
    if steps < 1 or repeats < 1 or (batch_size is not None and batch_size < 1):
        raise ConfigError("--steps, --repeats and --batch-size must be >= 1")
    if data_only and epochs is not None:
        raise ConfigError("--data and --epochs are two different benchmarks; give one")
    from .models import resolve_model_config

    cfg = load_config(config_path, overrides)
    resolve_model_config(cfg.model)
    dev = resolve_device(device)
    if epochs is not None:
        if batch_size:
            cfg.data.batch_size = batch_size
        result = bench_epochs(cfg, dev, epochs)
        click.echo(json.dumps(result, indent=2) if fmt == "json" else format_epochs(result))
        return
    if data_only:
        result = bench_loaders(cfg, dev, batches=steps * repeats)
        click.echo(json.dumps(result, indent=2) if fmt == "json" else format_loaders(result))
        return
    result = bench_models(cfg, dev, batch_size or cfg.data.batch_size, steps, repeats)
    click.echo(json.dumps(result, indent=2) if fmt == "json" else format_models(result))


@main.command("import-original")
@click.argument("src", type=click.Path())
@click.option("--arch", required=True, help="Our architecture name, e.g. resnet56 or densenet_bc_40_36.")
@click.option("--out", "dst", required=True, type=click.Path(dir_okay=False), help="Checkpoint to write.")
@click.option("--overwrite", is_flag=True, help="Replace DST if it exists.")
def import_original_cmd(src, arch, dst, overwrite):
    """Convert a checkpoint of the authors' code (ckpt.t7) into an acl checkpoint.

    Slice shape and code size come from the tensor shapes; the config gets the authors' CIFAR preprocessing.

    \b
    Examples:
      acl import-original RN56_1212-72/ckpt.t7 --arch resnet56 --out r56_csg.pt
      acl eval r56_csg.pt --set data.name=imagefolder --set data.root=/data/cifar10-jpeg --split test
    """
    import warnings

    from .authors import import_original

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cfg = import_original(src, arch, dst, overwrite)
    for w in caught:
        click.echo(f"warning: {w.message}", err=True)
    csg = cfg.model.csg
    what = f"CSG slice {csg.slice_shape}, code {csg.code_size}" if csg else "original network"
    click.echo(f"wrote {dst}: {arch} ({what}), {cfg.model.num_classes} classes")


@main.command("export")
@click.argument("checkpoint", type=click.Path())
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="File to write.")
@click.option("--format", "fmt", type=click.Choice(["state_dict", "torchscript", "pt2", "onnx"]),
              default="state_dict", show_default=True,
              help="state_dict: plain-conv weights for the original architecture (or torchvision's); "
                   "torchscript / pt2 (torch.export) / onnx: standalone programs.")
@click.option("--compact", is_flag=True, help="Instead: the smallest faithful acl checkpoint (generator + codes).")
@click.option("--fp16", is_flag=True, help="With --compact: store floating tensors as float16.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@allow_import_option
def export_cmd(checkpoint, out, fmt, compact, fp16, overwrite, allow_imports):
    """Export a checkpoint with generated kernels materialised into plain convolutions.

    \b
    Examples:
      acl export runs/r56 --out r56_plain.pt                # loads into create_model('resnet56')
      acl export runs/r56 --out r56.ts --format torchscript  # torch.jit.load('r56.ts')
      acl export runs/r56 --out r56_small.pt --compact --fp16
    """
    from .export import export

    info = export(checkpoint, out, fmt, compact, fp16, overwrite, allow_imports)
    shape = f", input {info['input']} from {info['input_from']}" if "input" in info else ""
    click.echo(f"wrote {out}: {info['format']}, {info['bytes']:,} bytes{shape}")


@main.command("report")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["markdown", "csv", "json"]), default="markdown", show_default=True)
@click.option("--by-seed", is_flag=True, help="One row per experiment: runs differing only by seed, mean ± std and n.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False),
              help="Also draw best top-1 vs parameters (.png, .pdf, .svg), one point per experiment with seed error "
                   "bars.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False),
              help="Write the table to this file (atomically) instead of standard output.")
@click.option("--overwrite", is_flag=True, help="Replace the --plot or --out file if it exists.")
def report_cmd(run_dirs, fmt, by_seed, plot_path, out_path, overwrite):
    """One row per run: arch, CSG settings, params, compression, best/final val top-1, the split best was chosen
    on, epochs, time, img/s. Runs that differ only by their seed are also grouped: mean ± std over n.
    Paths that are not run directories (logs, reports beside the runs) are skipped.

    \b
    Examples:
      acl report runs/*
      acl report runs/sweep/* --by-seed --format csv --plot sweep.png
    """

    from .files import write_text
    from .report import check_output_path, check_plot_path, collect, format_rows, is_run_dir, plot

    if plot_path:
        check_plot_path(plot_path, overwrite)
    if out_path:
        check_output_path(out_path, "--out", overwrite)
    if plot_path and out_path and os.path.realpath(plot_path) == os.path.realpath(out_path):
        raise UserError(f"--plot and --out name the same file ({quote(str(out_path))}): the table would replace the plot")
    paths = [run for d in run_dirs for run in _runs_in(d)]
    runs = [d for d in paths if is_run_dir(d)]
    others = [d for d in paths if not is_run_dir(d)]
    if not runs:
        what = f"{others[0]} is not" if len(others) == 1 else f"none of the {len(others)} paths is"
        raise UserError(f"{what} a run directory (no config.yaml / params.json)")
    if others:
        shown = ", ".join(map(quote, others[:3])) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        click.echo(f"skipping {len(others)} path(s) that are not run directories: {shown}", err=True)
    rows = [collect(d) for d in runs]
    if plot_path:
        plot(rows, plot_path, overwrite)
    table = format_rows(rows, fmt, by_seed)
    if out_path:
        write_text(out_path, table + "\n")
    else:
        click.echo(table)


def _runs_in(path: str) -> list[str]:
    """A sweep's folder (not a run, holding runs) stands for its runs, in name order; any other path for itself."""
    from pathlib import Path

    from .report import is_run_dir

    folder = Path(path)
    if is_run_dir(folder) or not folder.is_dir() or folder.is_symlink():
        return [path]
    inside = sorted(str(p) for p in folder.iterdir() if p.is_dir() and not p.is_symlink() and is_run_dir(p))
    return inside or [path]


@main.command("list-models")
@click.option("--all", "show_all", is_flag=True, help="Also every torchvision classification model by name.")
def list_models_cmd(show_all):
    """List the registered architectures, and the prefixes that reach any other network.

    \b
    Example:
      acl list-models
      acl count-params --arch torchvision:resnet50 --slice-shape 16,16,3,3 --code-size 128
    """
    from .models import MODELS
    from .models.external import PREFIXES

    for name in sorted(MODELS):
        entry = MODELS[name]
        click.echo(f"{name:<24} {entry.input_size:>3}px {entry.num_classes:>5} classes  "
                   f"{entry.constructor.__doc__.strip().splitlines()[0]}")
    for prefix, what in PREFIXES.items():
        click.echo(f"{prefix:<24} {what}")
    if show_all:
        import torchvision

        for name in torchvision.models.list_models(module=torchvision.models):
            click.echo(f"torchvision:{name}")


def run() -> None:
    """The ``acl`` executable: ``main``, and a Ctrl-C while Python is still importing it is a clean exit too."""
    interrupts.install()
    try:
        main(prog_name="acl")
    except KeyboardInterrupt:  # before click's own handling is in place (imports at start-up)
        sys.stderr.write("interrupted\n")
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    run()
