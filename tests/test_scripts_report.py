"""Sweep scripts (dry run, skip, a real tiny sweep) and acl report."""
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from acl_cli.config import resolve_config_path

ROOT = Path(__file__).resolve().parents[1]
TINY = ("--set data.name=digits --set data.val_split=0.2 --set data.train_subset=96 --set data.batch_size=32 "
        "--set data.workers=0 --set train.progress=false")


def _script(name, *args, **env):
    full_env = {**os.environ, "ACL": f"{sys.executable} -m acl_cli", **env}
    return subprocess.run(["bash", str(ROOT / "scripts" / name), *map(str, args)], cwd=ROOT, env=full_env,
                          capture_output=True, text=True)


@pytest.mark.parametrize("name,runs", [("reproduce_cifar10.sh", 9), ("sweep_code_slice.sh", 10),
                                       ("sweep_depth.sh", 10), ("compare_layouts.sh", 4),
                                       ("compare_csg_optim.sh", 3)])
def test_dry_run_prints_the_commands(tmp_path, name, runs):
    res = _script(name, "/data/cifar", 40, tmp_path / "out", DRY_RUN="1")
    assert res.returncode == 0, res.stderr
    lines = [shlex.split(line) for line in res.stdout.splitlines() if " train " in line]
    assert len(lines) == runs
    for args in lines:
        assert "data.root=/data/cifar" in args and "train.epochs=40" in args
        assert resolve_config_path(args[args.index("--config") + 1]).is_file()  # a file or a shipped name
        assert args[args.index("--out") + 1].startswith(str(tmp_path / "out"))
    assert "report" in res.stdout.splitlines()[-1]
    assert not (tmp_path / "out").exists()


def test_every_variable_a_sweep_reads_reaches_its_sbatch_tasks():
    """An sbatch task runs the script again on a node: a grid variable it does not carry (DISTILL once) gives
    that task another grid than the one --list showed."""
    import re
    lib = (ROOT / "scripts" / "lib.sh").read_text()
    carried = set(re.search(r"SWEEP_VARS=\(([^)]*)\)", lib).group(1).split())
    for script in (ROOT / "scripts").glob("*.sh"):
        text = script.read_text()
        if "lib.sh" not in text or script.name == "lib.sh":
            continue
        read = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)(?::-|:\+|\+|-)", text))
        assert read <= carried, f"{script.name} reads {sorted(read - carried)}, which sweep.sbatch does not carry"


def test_compare_csg_optim_checks_its_variants(tmp_path):
    res = _script("compare_csg_optim.sh", "/data", 5, tmp_path / "out", DRY_RUN="1", VARIANTS="0.5")
    assert res.returncode == 2 and "VARIANTS entries are LR_SCALE:WEIGHT_DECAY, got '0.5'" in res.stderr
    res = _script("compare_csg_optim.sh", "/data", 5, tmp_path / "out", DRY_RUN="1", PAIR="resnet56")
    assert res.returncode == 2 and "PAIR must name two configs" in res.stderr
    res = _script("compare_csg_optim.sh", "/data", 5, tmp_path / "out", DRY_RUN="1", VARIANTS="2:1e-3",
                  TRAIN_SUBSET="500", PAIR="resnet56 resnet56_csg_12_72")
    lines = [shlex.split(line) for line in res.stdout.splitlines() if " train " in line]
    assert [a[a.index("--config") + 1] for a in lines] == ["cifar10/resnet56"] + ["cifar10/resnet56_csg_12_72"] * 2
    assert {"optim.csg_lr_scale=2", "optim.csg_weight_decay=1e-3", "model.csg.init=scaled"} <= set(lines[2])
    assert all("data.train_subset=500" in a for a in lines) and "model.csg.init=scaled" not in lines[0]


def test_bad_arguments():
    res = _script("sweep_depth.sh", "/data")
    assert res.returncode == 2 and "usage:" in res.stderr
    res = _script("sweep_depth.sh", "/data", "ten")
    assert res.returncode == 2 and "EPOCHS must be a positive integer" in res.stderr


@pytest.mark.slow
def test_tiny_sweep_runs_skips_and_reports(tmp_path, cli):
    out = tmp_path / "layouts"
    env = {"EXTRA_SET": TINY, "ARCH": "resnet20", "SETTINGS": "16:72"}
    res = _script("compare_layouts.sh", "unused", 1, out, **env)
    assert res.returncode == 0, res.stderr
    assert "| resnet20_csg_16_72_flat | resnet20 | 16x16x3x3/72 flat | - | 176,698 |" in res.stdout
    assert "16x16x3x3/72 tile" in (out / "report.md").read_text()
    assert (out / "report.png").stat().st_size > 0 and (out / "report.csv").exists()
    victim = tmp_path / "thesis.md"
    victim.write_text("mine")
    (out / "report.md").unlink()
    (out / "report.md").symlink_to(victim)  # a report is written by acl report --out, never through a link
    linked = _script("compare_layouts.sh", "elsewhere", 1, out, **env)
    assert linked.returncode == 2 and "report.md: it is a symbolic link" in linked.stderr, linked.stderr
    assert victim.read_text() == "mine"
    (out / "report.md").unlink()
    again = _script("compare_layouts.sh", "elsewhere", 1, out, **env)  # another data root: the same result
    assert again.returncode == 0 and again.stdout.count("skip ") == 2, again.stderr
    before = (out / "resnet20_csg_16_72_flat" / "metrics.csv").read_bytes()
    longer = _script("compare_layouts.sh", "unused", 2, out, **env)  # not what the finished runs are
    assert longer.returncode == 1 and "skip " not in longer.stdout
    assert ("FAILED resnet20_csg_16_72_flat finished with other settings (train.epochs: 1 -> 2): kept as it is; to "
            "train this job too, give the sweep another OUT_DIR") in longer.stderr, longer.stderr
    assert "remove" not in longer.stderr  # no message advises deleting a finished run
    assert (out / "resnet20_csg_16_72_flat" / "metrics.csv").read_bytes() == before
    rows = json.loads(cli("report", out / "resnet20_csg_16_72_flat", out / "resnet20_csg_16_72_tile",
                          "--format", "json").output)
    assert [r["csg"] for r in rows] == ["16x16x3x3/72 flat", "16x16x3x3/72 tile"]
    assert all(r["epochs"] == "1/1" and r["params"] == 176_698 and r["best_top1"] is not None for r in rows)
    res = cli("report", tmp_path)
    assert res.exit_code == 2 and "is not a run directory" in res.stderr
    # the documented usage: everything in the sweep folder, its logs and reports beside the runs
    res = cli("report", *sorted(out.iterdir()), "--format", "json")
    assert res.exit_code == 0, res.output
    assert [r["run"] for r in json.loads(res.stdout)] == ["resnet20_csg_16_72_flat", "resnet20_csg_16_72_tile"]
    skipped = res.stderr.strip().splitlines()
    assert len(skipped) == 1 and skipped[0].startswith("skipping 5 path(s) that are not run directories: ")


def test_report_groups_seeds_into_mean_and_std(tmp_path, cli):
    import statistics

    from acl_cli.config import load_config
    from acl_cli.training import train

    small = ["model.arch=resnet20", "model.csg={slice_shape: [16, 16, 3, 3], code_size: 72}", "data.name=digits",
             "data.val_split=0.2", "data.train_subset=64", "data.batch_size=32", "data.workers=0",
             "train.epochs=1", "train.progress=false"]
    finals = {}
    for name, extra in (("r20_seed0", ["train.seed=0"]), ("r20_seed1", ["train.seed=1"]),
                        ("r20_seed2", ["train.seed=2", "data.workers=1"]),
                        ("r20_tile", ["model.csg.layout=tile"])):
        finals[name] = train(load_config(None, small + extra), tmp_path / name, log=lambda *a: None)
    groups = json.loads(cli("report", *sorted(tmp_path.iterdir()), "--by-seed", "--format", "json").output)
    by_name = {g["group"]: g for g in groups}
    assert set(by_name) == {"r20", "r20_tile"}  # the loader's workers are not the experiment; the seed neither
    top1 = [round(finals[f"r20_seed{s}"]["best_val_top1"], 2) for s in range(3)]
    g = by_name["r20"]
    assert (g["n"], g["seeds"]) == (3, "0 1 2")
    assert g["best_top1"] == round(statistics.mean(top1), 2) and g["best_top1_std"] == round(statistics.stdev(top1), 2)
    assert by_name["r20_tile"]["n"] == 1 and by_name["r20_tile"]["best_top1_std"] is None
    text = cli("report", *sorted(tmp_path.iterdir())).output
    assert "Grouped over seeds" in text and "| r20 | resnet20 |" in text
    assert f"| 3 | {statistics.mean(top1):.2f} ± {statistics.stdev(top1):.2f} |" in text
    png = tmp_path / "groups.png"
    assert cli("report", *sorted(tmp_path.iterdir()), "--plot", png).exit_code == 0 and png.stat().st_size > 0


def test_gpu_acceptance_dry_run_commands_are_valid(cli):
    """The GPU script runs only where a GPU is lent: its every acl command must at least parse here."""
    res = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_acceptance.sh"), "/tmp/out"], cwd=ROOT,
                         env={**os.environ, "DRY_RUN": "1"}, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    commands = [shlex.split(line.rsplit(" > ", 1)[0]) for line in res.stdout.splitlines()]
    benches = [c for c in commands if c[:2] == ["acl", "bench"]]
    assert len(benches) == 7 and all(c[c.index("--device") + 1] == "cuda" for c in benches)
    for args in benches:
        config = args[args.index("--config") + 1]
        sets = [a for i, a in enumerate(args) if i and args[i - 1] == "--set"]
        shown = cli("config", "show", "--config", config, *[x for s in sets for x in ("--set", s)])
        assert shown.exit_code == 0, (args, shown.output)
    assert ["scripts/gpu_targets.py", "/tmp/out"] == commands[-1][1:]
    only = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_acceptance.sh"), "/tmp/out"], cwd=ROOT, text=True,
                          env={**os.environ, "DRY_RUN": "1", "ONLY": "tests loaders"}, capture_output=True)
    assert [line.rsplit("/", 1)[-1] for line in only.stdout.splitlines()] == ["tests.txt", "loaders.json"]
