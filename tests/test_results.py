"""The runs committed under results/: what they hold, that their checkpoints load with their configs' parameter
counts and classify held-out JPEGs as their metrics say, and that the README's table is read from them."""
import csv
import json
import re
import subprocess
import tarfile
from pathlib import Path

import pytest
import torch

from cifar_jpeg import SHARED_TAR

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "cifar10"


def _committed_runs() -> list[Path]:
    """The run folders whose best.pt is committed (a run still training beside them is not a result yet);
    every folder with a best.pt where there is no git (an unpacked sdist)."""
    if not RESULTS.is_dir():
        return []
    found = sorted(p for p in RESULTS.iterdir() if (p / "best.pt").is_file())
    try:
        listed = subprocess.run(["git", "ls-files", "results/cifar10"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return found
    return [p for p in found if f"results/cifar10/{p.name}/best.pt" in listed]


RUNS = _committed_runs()
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _best(run: Path) -> tuple[float, int]:
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return max(float(r["val_top1"]) for r in rows), len(rows)


_NAME = re.compile(r"(.+?)(?:_lr(\d+(?:\.\d+)?))?(_reuse)?(_distill)?(?:_seed(\d+))?")


def _variant(run: Path) -> tuple[str, float, bool]:
    """What a run's folder name says (scripts/results_cifar10.sh): the config it was trained from, the lr scale on
    codes and generator (CSG_LR_SCALE: a name ending _lr<scale>; a _reuse run's scale is in its config only) and
    whether it was distilled (_distill). A _seed<N> ending is another seed of the same experiment."""
    m = _NAME.fullmatch(run.name)
    return m[1], float(m[2] or 1), bool(m[4])


def _reused(run: Path) -> bool:
    """Whether the run trained from a reused, frozen generator (REUSE_GENERATOR: a name with _reuse)."""
    return bool(_NAME.fullmatch(run.name)[3])


def _experiment(run: Path) -> str:
    """The run's experiment: its name without a _seed<N> ending (seed 0 has none)."""
    return re.sub(r"_seed\d+$", "", run.name)


def test_there_are_committed_runs():
    assert {p.name for p in RUNS} >= {"resnet20", "resnet20_csg_16_72"}


@pytest.mark.parametrize("run", RUNS, ids=[p.name for p in RUNS])
def test_a_committed_run_is_complete_lean_and_named_after_its_config(run, cli):
    for name in ("best.pt", "metrics.csv", "run.json", "config.yaml", "params.json", "final.json"):
        assert (run / name).is_file(), name
    assert any(p.name.startswith("events.out.tfevents") for p in (run / "tb").iterdir())
    state = torch.load(run / "best.pt", weights_only=True)
    assert not {"optimizer", "scheduler", "rng"} & set(state)  # lean: no optimizer state in the repository
    assert (run / "best.pt").stat().st_size < 4 << 20
    config_name, csg_lr_scale, distilled = _variant(run)
    config = ROOT / "configs" / "cifar10" / f"{config_name}.yaml"
    shown = cli("config", "show", "--config", config)
    assert shown.exit_code == 0
    import yaml

    ran_shown = cli("config", "show", "--config", run / "config.yaml")  # with settings added since, at defaults
    assert ran_shown.exit_code == 0, ran_shown.output
    shipped, ran = yaml.safe_load(shown.output), yaml.safe_load(ran_shown.output)
    shipped["optim"]["csg_lr_scale"] = csg_lr_scale  # the one change a _lr<scale> run makes to the recipe
    if _reused(run):  # the lr2 run's settings, the generator from the authors' checkpoint and frozen
        shipped["optim"]["csg_lr_scale"] = ran["optim"]["csg_lr_scale"] = 2.0
        assert ran["model"]["csg"]["freeze"] is True
        assert Path(ran["model"]["csg"]["init_from"]).name == "RN20_1616-128.pt"
    for section in ("optim", "schedule"):  # the authors' recipe, as the config gives it
        assert ran[section] == shipped[section], section
    assert {k: v for k, v in ran["model"].items() if k != "csg"} == {k: v for k, v in shipped["model"].items()
                                                                       if k != "csg"}
    if shipped["model"]["csg"]:
        for key in ("slice_shape", "code_size", "layout", "targets"):
            assert ran["model"]["csg"][key] == shipped["model"]["csg"][key], key
    assert ran["data"]["batch_size"] == shipped["data"]["batch_size"]
    if distilled:  # distilled from the committed run of its original
        assert Path(ran["distill"]["teacher"]).name == config_name.split("_csg_")[0]
    else:
        assert ran.get("distill") is None
    assert ran["data"]["val_split"] == 0.1 and ran["data"]["split_seed"] == 0  # best.pt chosen on held-out train
    assert "10% of" in json.loads((run / "run.json").read_text())["splits"]["val"]
    best, epochs = _best(run)
    final = json.loads((run / "final.json").read_text())
    assert final["best_val_top1"] == pytest.approx(best) and final["epochs"] == epochs == ran["train"]["epochs"]


@pytest.mark.parametrize("run", RUNS, ids=[p.name for p in RUNS])
def test_a_committed_checkpoint_has_its_configs_parameter_count(run, cli):
    res = cli("count-params", "--config", ROOT / "configs" / "cifar10" / f"{_variant(run)[0]}.yaml", "--format",
              "json")
    assert res.exit_code == 0, res.output
    expected = json.loads(res.output)["total"]
    state = torch.load(run / "best.pt", weights_only=True)
    assert state["params"] == json.loads((run / "params.json").read_text())["total"] == expected


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    """50 images of each class from the run's own validation split (5,000 held out of the 50,000 with
    split_seed 0, as ImageFolder orders them), as a test/ folder."""
    if not SHARED_TAR.exists():
        pytest.skip("the shared CIFAR-10 JPEGs are not here")
    from acl_cli.data import balanced_split

    with tarfile.open(SHARED_TAR) as tar:
        members = {m.name: m for m in tar.getmembers() if m.isfile()}
        files = [sorted(n.rsplit("/", 1)[1] for n in members if n.startswith(f"train/{c}/")) for c in CLASSES]
        samples = [(c, name) for c, names in enumerate(files) for name in names]
        _, val = balanced_split([c for c, _ in samples], 0.1, 0)
        root = tmp_path_factory.mktemp("cifar_val")
        taken = dict.fromkeys(range(10), 0)
        for i in val:
            c, name = samples[i]
            if taken[c] < 50:
                taken[c] += 1
                out = root / "test" / CLASSES[c] / name
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(tar.extractfile(members[f"train/{CLASSES[c]}/{name}"]).read())
    return root


@pytest.mark.parametrize("run", RUNS, ids=[p.name for p in RUNS])
def test_a_committed_checkpoint_classifies_held_out_jpegs_as_its_metrics_say(run, held_out, cli):
    res = cli("eval", run, "--split", "test", "--set", f"data.root={held_out}", "--set", "data.val_split=0",
              "--set", "data.workers=2",
              "--format", "json")
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.output)
    best, _ = _best(run)
    assert metrics["samples"] == 500 and metrics["top1"] > 60  # chance is 10 %
    assert abs(metrics["top1"] - best) < 7  # 500 of the 5,000 images best.pt was chosen on (std ~1.5 points)


def _experiments() -> dict[str, list[Path]]:
    """The committed runs by experiment, seed 0 first."""
    groups: dict[str, list[Path]] = {}
    for run in RUNS:
        groups.setdefault(_experiment(run), []).append(run)
    return {name: sorted(runs, key=_seed) for name, runs in groups.items()}


def _seed(run: Path) -> int:
    import yaml

    return yaml.safe_load((run / "config.yaml").read_text())["train"]["seed"]


def _mean_std(runs: list[Path]) -> tuple[float, float | None]:
    """Mean and sample std of the runs' best held-out top-1, as acl report rounds them."""
    import statistics

    best = [_best(r)[0] for r in runs]
    return round(statistics.mean(best), 2), round(statistics.stdev(best), 2) if len(best) > 1 else None


def test_the_readme_table_is_read_from_the_committed_runs():
    """One row per experiment: its best held-out top-1, or with several seeds their mean ± std and how many; a run
    with frozen parameters says how many it trained; every session's hardware."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Reproducing the paper", 1)[1]
    table = section[section.index("| config (`configs/cifar10/`)"):].split("\n\n", 1)[0]  # that table alone
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > 5 and re.fullmatch(r"`[a-z0-9_]+`", cells[0]):
            rows[cells[0].strip("`")] = cells
    header = table.splitlines()[0]
    columns = [c.strip() for c in header.strip().strip("|").split("|")]
    acl_col = columns.index("acl top-1")
    with_results = {name for name, cells in rows.items() if cells[acl_col] not in ("", "–", "-")}
    experiments = _experiments()
    assert with_results == set(experiments)
    for name, runs in experiments.items():
        cells = dict(zip(columns, rows[name]))
        mean, std = _mean_std(runs)
        assert cells["acl top-1"] == (f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f} ({len(runs)} seeds)")
        params = json.loads((runs[0] / "params.json").read_text())
        trained = f" ({params['trainable']:,} trained)" if params["frozen"] else ""
        assert cells["params"] == f"{params['total']:,}{trained}", name
        assert {str(_best(r)[1]) for r in runs} == {cells["epochs"]}
        assert "5,000 held out of train" in cells["chosen on"]
        for session in (s for r in runs for s in json.loads((r / "run.json").read_text())["sessions"]):
            cpu = re.fullmatch(r"CPU (.+) \((\w+)\), (\d+) cores, \d+ threads?", session["device"])
            shown = f"{cpu[3]}-core {cpu[1]} CPU ({cpu[2]})" if cpu else session["device"]
            assert shown in cells["hardware"], (name, session["device"])


def test_the_readme_says_how_much_of_the_gap_distillation_closed():
    runs = {p.name: p for p in RUNS}
    pair = [f"resnet20{s}" for s in ("", "_csg_16_72", "_csg_16_72_distill")]
    if not all(name in runs for name in pair):
        pytest.skip("the distilled run and its pair are not all committed")
    original, plain, distilled = (_best(runs[name])[0] for name in pair)
    gap, left = round(original - plain, 2), round(original - distilled, 2)
    text = " ".join((ROOT / "README.md").read_text().split())
    assert f"It reaches {distilled:.2f}, closing {gap - left:.2f} of the {gap:.2f} points: it ends {left:.2f} " in text
    assert ("so not within 1.0" if left > 1.0 else "within 1.0") in text


def test_the_effective_lr_script_measures_both_networks():
    """scripts/effective_lr.py: the measurement behind the README's note on short schedules."""
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "scripts/effective_lr.py", "--config", "configs/quickstart.yaml",
                          "--config", "configs/cifar10/resnet20.yaml", "--init", "authors", "--init", "scaled",
                          "--set", "data.name=digits", "--set", "data.val_split=0.2", "--set", "data.workers=0",
                          "--set", "data.batch_size=32", "--steps", "2"], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = res.stdout.splitlines()[2:]
    assert [r.split()[0] for r in rows] == ["quickstart", "quickstart", "resnet20"]
    for row in rows:
        rates = [float(x) for x in re.findall(r"(\d+\.\d+) \|K\|", row)]
        assert len(rates) == 3 and all(r > 0 for r in rates)


def _dry_run(script: str, lines: list[str], tmp_path: Path, out: str | None = None) -> list[list[str]]:
    """The acl train commands each README line calling scripts/<script> would run (DRY_RUN=1): DATA becomes an empty
    folder, and the output folder ``out``, where given, one under tmp_path."""
    import os
    import shlex
    import sys

    jobs = []
    for line in lines:
        words = shlex.split(line, comments=True)
        at = words.index(f"scripts/{script}")
        env = dict(w.split("=", 1) for w in words[:at])
        args = [str(tmp_path / "data") if a == "DATA" else a for a in words[at + 1:]]
        if out is not None:
            assert args[2] == out, line
            args[2] = str(tmp_path / "out")
        res = subprocess.run(["bash", f"scripts/{script}", *args], cwd=ROOT, capture_output=True, text=True,
                             env={**os.environ, **env, "DRY_RUN": "1", "ACL": f"{sys.executable} -m acl_cli"})
        assert res.returncode == 0, res.stderr
        jobs += [shlex.split(x) for x in res.stdout.splitlines() if " train " in x]
    return jobs


def _job_config(argv: list[str]) -> tuple[str, dict]:
    """An acl train command's run folder name and the config it would train."""
    from acl_cli.config import load_config, resolve_config_path

    sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    made = load_config(resolve_config_path(argv[argv.index("--config") + 1]), sets).to_dict()
    return Path(argv[argv.index("--out") + 1]).name, made


CSG_OPTIM = ROOT / "results" / "csg_optim"


def test_the_readme_csg_optim_table_is_read_from_its_runs():
    """The README's comparison of lr and weight decay on codes and generator (scripts/compare_csg_optim.sh): every
    cell from the committed run's config and metrics, all runs on one split, subset and schedule."""
    import yaml

    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Codes and generator at their own lr", 1)[1].split("\n#", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and re.fullmatch(r"`[a-z0-9_.-]+`", cells[0]):
            rows[cells[0].strip("`")] = cells[1:]
    runs = sorted(p.name for p in CSG_OPTIM.iterdir() if (p / "final.json").is_file())
    assert sorted(rows) == runs and len(runs) >= 3
    settings = set()
    for name, (lr_scale, weight_decay, top1) in rows.items():
        cfg = yaml.safe_load((CSG_OPTIM / name / "config.yaml").read_text())
        o, d = cfg["optim"], cfg["data"]
        settings.add((d["train_subset"], d["val_split"], d["split_seed"], cfg["train"]["epochs"], o["lr"],
                      str(cfg["schedule"])))
        if cfg["model"].get("csg") is None:
            assert (lr_scale, weight_decay) == ("–", "–")
        else:
            wd = o["weight_decay"] if o.get("csg_weight_decay") is None else o["csg_weight_decay"]
            assert float(lr_scale) == o.get("csg_lr_scale", 1.0) and float(weight_decay) == wd
        best, epochs = _best(CSG_OPTIM / name)
        assert top1 == f"{best:.2f}" and epochs == cfg["train"]["epochs"]
    assert len(settings) == 1  # the same images, split and schedule for every row


def test_the_readme_csg_optim_command_makes_exactly_the_committed_runs(tmp_path):
    """The README's compare_csg_optim.sh line, as written (dry run, into an empty folder: in results/csg_optim it
    skips them): one job per committed run, each with its committed config's model, recipe and data selection."""
    import yaml

    section = (ROOT / "README.md").read_text().split("### Codes and generator at their own lr", 1)[1]
    lines = [x for x in section.split("\n#", 1)[0].splitlines() if "scripts/compare_csg_optim.sh" in x and "=" in x.split()[0]]
    jobs = _dry_run("compare_csg_optim.sh", lines, tmp_path, out="results/csg_optim")  # into an empty folder
    assert sorted(_job_config(a)[0] for a in jobs) == sorted(
        p.name for p in CSG_OPTIM.iterdir() if (p / "final.json").is_file())
    for argv in jobs:
        name, made = _job_config(argv)
        committed = yaml.safe_load((CSG_OPTIM / name / "config.yaml").read_text())
        for key in ("model", "optim", "schedule"):
            assert made[key] == committed[key], key
        for key in ("name", "val_split", "split_seed", "train_subset", "batch_size"):
            assert made["data"][key] == committed["data"][key], key
        assert (made["train"]["epochs"], made["train"]["seed"]) == (committed["train"]["epochs"], committed["train"]["seed"])


def test_the_readme_results_commands_make_exactly_the_committed_runs(tmp_path):
    """The README's results_cifar10.sh lines, as written (dry run, into an empty folder): one job per committed run
    in results/cifar10, each with that run's model, recipe, data selection, epochs and teacher."""
    from acl_cli.config import load_config

    table = (ROOT / "README.md").read_text().split("## Reproducing the paper", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", table, flags=re.S)
    lines = [x for block in blocks for x in block.splitlines() if "scripts/results_cifar10.sh" in x]
    jobs = _dry_run("results_cifar10.sh", lines, tmp_path, out="results/cifar10")
    assert lines and sorted(_job_config(a)[0] for a in jobs) == sorted(p.name for p in RUNS)
    for argv in jobs:
        name, made = _job_config(argv)
        run = RESULTS / name
        committed = load_config(run / "config.yaml", []).to_dict()  # settings added since at their defaults
        for cfg in (made, committed):  # a reused generator: the same committed file, wherever the clone is
            csg = cfg["model"]["csg"] or {}
            if csg.get("init_from"):
                csg["init_from"] = Path(csg["init_from"]).relative_to(Path(csg["init_from"]).parents[2]).as_posix()
        for key in ("model", "optim", "schedule"):
            assert made[key] == committed[key], (run.name, key)
        for key in ("name", "val_split", "split_seed", "train_subset", "batch_size", "loader"):
            assert made["data"][key] == committed["data"][key], (run.name, key)
        assert made["train"] == {**committed["train"], "progress": made["train"]["progress"]}, run.name
        teacher = made.get("distill") and made["distill"].pop("teacher")
        committed_teacher = committed.get("distill") and committed["distill"].pop("teacher")
        assert made.get("distill") == committed.get("distill"), run.name
        assert (teacher and Path(teacher).name) == (committed_teacher and Path(committed_teacher).name), run.name


def test_results_variants_are_named_as_the_results_tests_read_them(tmp_path):
    """CSG_LR_SCALE and DISTILL together: the CSG run's folder says both, and _variant reads back what it ran."""
    import os

    jobs = _dry_run("results_cifar10.sh", ["CSG_LR_SCALE=2 DISTILL=1 scripts/results_cifar10.sh DATA 30 OUT"], tmp_path,
                    out="OUT")
    for argv in jobs:
        name, made = _job_config(argv)
        config_name, csg_lr_scale, distilled = _variant(Path(name))
        assert argv[argv.index("--config") + 1] == f"cifar10/{config_name}"
        assert made["optim"]["csg_lr_scale"] == csg_lr_scale and (made.get("distill") is not None) == distilled
    assert [_job_config(a)[0] for a in jobs] == ["resnet20", "resnet20_csg_16_72_lr2_distill"]
    for bad in ("2 x", "-1", "two", "2/"):  # it becomes part of a folder's name
        res = subprocess.run(["bash", "scripts/results_cifar10.sh", "d", "30", str(tmp_path / "bad")], cwd=ROOT,
                             capture_output=True, text=True, env={**os.environ, "DRY_RUN": "1", "CSG_LR_SCALE": bad})
        assert res.returncode == 2 and res.stderr.startswith("error: CSG_LR_SCALE must be a number"), res.stderr
        assert res.stderr.count("\n") == 1 and not (tmp_path / "bad").exists()


def test_reuse_generator_trains_the_csg_config_from_a_frozen_generator_under_its_own_name(tmp_path):
    """REUSE_GENERATOR=CKPT: the CSG config as <config>_reuse, generator from CKPT (an absolute path, exactly,
    whatever it is called) and frozen, the codes' lr from CSG_LR_SCALE; the original trains unchanged."""
    import os

    ckpt = tmp_path / "gen #1 it's" / "g.pt"  # the script only passes it on: acl train reads it
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"")
    import sys

    env = {**os.environ, "ACL": f"{sys.executable} -m acl_cli", "DRY_RUN": "1", "REUSE_GENERATOR": str(ckpt),
           "CSG_LR_SCALE": "2"}
    res = subprocess.run(["bash", "scripts/results_cifar10.sh", str(tmp_path / "d"), "30", str(tmp_path / "o")],
                         cwd=ROOT, capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    import shlex
    jobs = [shlex.split(line) for line in res.stdout.splitlines() if " train " in line]
    made = dict(_job_config(argv) for argv in jobs)
    assert list(made) == ["resnet20", "resnet20_csg_16_72_reuse"]
    csg = made["resnet20_csg_16_72_reuse"]["model"]["csg"]
    assert csg["init_from"] == str(ckpt) and csg["freeze"] is True
    assert made["resnet20_csg_16_72_reuse"]["optim"]["csg_lr_scale"] == 2
    assert made["resnet20"]["model"]["csg"] is None
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for bad, why in ((tmp_path / "none.pt", "is not a checkpoint file"), (fifo, "is not a checkpoint file"),
                     (tmp_path, "is not a checkpoint file")):
        res = subprocess.run(["bash", "scripts/results_cifar10.sh", "d", "30", str(tmp_path / "bad")], cwd=ROOT,
                             capture_output=True, text=True, env={**env, "REUSE_GENERATOR": str(bad)}, timeout=60)
        assert res.returncode == 2 and why in res.stderr and res.stderr.count("\n") == 1, res.stderr
        assert not (tmp_path / "bad").exists()
    res = subprocess.run(["bash", "scripts/results_cifar10.sh", "d", "30", str(tmp_path / "bad")], cwd=ROOT,
                         capture_output=True, text=True, env={**env, "DISTILL": "1"}, timeout=60)
    assert res.returncode == 2 and "cannot be combined" in res.stderr, res.stderr


def test_the_gpu_results_script_trains_both_pairs_at_the_recipe_and_at_twice_the_csg_lr(tmp_path):
    """scripts/gpu_results.sh (dry run): the two pairs at the recipe and the CSG configs at twice the lr, and the six
    baselines of ResNet-56 and DenseNet-BC-40 k=48, on GPU 0 with CUDA graphs, the committed results' split, each
    named as results/ names it; without its zip it refuses in one line before training anything."""
    import os
    import shlex
    import sys

    env = {**os.environ, "ACL": f"{sys.executable} -m acl_cli", "RUNS": str(tmp_path / "runs")}
    res = subprocess.run(["bash", "scripts/gpu_results.sh", "60", str(tmp_path / "out")], cwd=ROOT, capture_output=True,
                         text=True, env={**env, "DRY_RUN": "1"})
    assert res.returncode == 0, res.stderr
    jobs = [shlex.split(x) for x in res.stdout.splitlines() if " train " in x]
    names = sorted(_job_config(a)[0] for a in jobs)
    baselines = [f"{family}_{kind}" for family in ("densenet_bc_40_48", "resnet56") for kind in ("crelu", "gcnn", "sep")]
    assert names == sorted(["resnet20", "resnet20_csg_16_72", "resnet20_csg_16_72_lr2", "resnet56", "resnet56_csg_12_72",
                            "resnet56_csg_12_72_lr2", *baselines])
    outs = {_job_config(a)[0]: Path(a[a.index("--out") + 1]).parent.name for a in jobs}
    assert {n for n, folder in outs.items() if folder == "baselines"} == set(baselines)
    assert f"tar -cf {tmp_path / 'out' / 'runs.tar'} -C {tmp_path / 'runs'} recipe lr2 baselines" in res.stdout
    for argv in jobs:
        name, made = _job_config(argv)
        config_name, csg_lr_scale, _ = _variant(Path(name))
        assert argv[argv.index("--config") + 1] == f"cifar10/{config_name}"
        assert (made["optim"]["csg_lr_scale"], made["train"]["epochs"], made["train"]["amp"],
                made["train"]["compile_mode"]) == (csg_lr_scale, 60, "bf16", "reduce-overhead")
        assert (made["data"]["val_split"], made["data"]["split_seed"], made["data"]["loader"]) == (0.1, 0, "device")
    res = subprocess.run(["bash", "scripts/gpu_results.sh", "60", str(tmp_path / "out")], cwd=ROOT, capture_output=True,
                         text=True, env={**env, "ZIP": str(tmp_path / "none.zip")})
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "ZIP must name" in res.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "out").exists()
    if torch.cuda.is_available():
        return  # the rest would run the step profile for real
    import zipfile

    with zipfile.ZipFile(tmp_path / "data.zip", "w") as z:
        z.writestr("train/cat/0001.jpg", b"not decoded: acl is a stand-in here")
    stand_in = {**env, "ZIP": str(tmp_path / "data.zip"), "DATA_DIR": str(tmp_path / "data"), "ACL": "true",
                "PYTHON": sys.executable, "POLL_S": "0.1"}
    res = subprocess.run(["bash", "scripts/gpu_results.sh", "60", str(tmp_path / "out")], cwd=ROOT, capture_output=True,
                         text=True, env=stand_in, timeout=300)
    assert res.returncode == 1, res.stderr  # the profile needs CUDA; the runs are packed before it
    assert (tmp_path / "data" / "train" / "cat" / "0001.jpg").is_file()
    with tarfile.open(tmp_path / "out" / "runs.tar") as tar:
        assert {"recipe", "lr2", "baselines"} <= set(tar.getnames())
    assert (tmp_path / "out" / "profile_step.txt").is_file()


def test_the_readme_says_where_twice_the_csg_lr_ends():
    """The README's sentence on the CSG run at twice the lr on codes and generator, recomputed from metrics.csv:
    the gap of the means over seeds, and seed by seed."""
    groups = _experiments()
    names = ["resnet20", "resnet20_csg_16_72", "resnet20_csg_16_72_lr2"]
    if not all(name in groups for name in names):
        pytest.skip("the run at twice the csg lr and its pair are not all committed")
    (original, original_std), (plain, _), (faster, faster_std) = (_mean_std(groups[name]) for name in names)
    seeds = len(groups["resnet20_csg_16_72_lr2"])
    assert seeds == len(groups["resnet20"]) > 1  # seed by seed needs the same seeds of both
    gap = round(original - faster, 2)
    text = " ".join((ROOT / "README.md").read_text().split())
    where = f"{gap:.2f} points below" if gap >= 0 else f"{-gap:.2f} points above"
    assert (f"Over {['', 'one', 'two', 'three', 'four'][seeds]} seeds each, `resnet20_csg_16_72_lr2` reaches "
            f"{faster:.2f} ± {faster_std:.2f} against its original's {original:.2f} ± {original_std:.2f} (the recipe, "
            f"one seed: {plain:.2f}), {where} its original on the mean") in text
    assert (", within 1.0" if abs(gap) <= 1.0 else ", so not within 1.0") in text
    by_seed = [round(_best(o)[0] - _best(f)[0], 2) for o, f in zip(groups["resnet20"], groups["resnet20_csg_16_72_lr2"])]
    assert _seed(groups["resnet20"][1]) == _seed(groups["resnet20_csg_16_72_lr2"][1])
    assert "seed by seed the gap is " + " and ".join(f"{g:.2f}" for g in by_seed) in text


def test_the_readme_says_what_reusing_the_authors_generator_gave():
    """The reuse run's sentence, recomputed: trained parameters from params.json, top-1 against the same network
    with its generator trained (seed 0) and against the original's mean."""
    groups = _experiments()
    if "resnet20_csg_16_72_reuse" not in groups:
        pytest.skip("the reuse run is not committed")
    (reuse,) = groups["resnet20_csg_16_72_reuse"]
    params = json.loads((reuse / "params.json").read_text())
    top1, trained = _best(reuse)[0], _best(groups["resnet20_csg_16_72_lr2"][0])[0]
    original = _mean_std(groups["resnet20"])[0]
    text = " ".join((ROOT / "README.md").read_text().split())
    assert f"trains {params['trainable']:,} of its {params['total']:,} parameters" in text
    assert (f"It reaches {top1:.2f}, {trained - top1:.2f} points below the same network with its generator trained "
            f"(`resnet20_csg_16_72_lr2`, seed 0, {trained:.2f}) and {original - top1:.2f} below its original's mean") in text
    assert ("does not make the network more efficient" if top1 < trained else "makes it more efficient") in text


def test_the_reuse_run_kept_the_authors_generator_frozen():
    """best.pt's generator is the imported authors' generator, unchanged by 30 epochs; and where their repository
    is fetched, results/authors/RN20_1616-128.pt is exactly acl import-original of their checkpoint."""
    run = RESULTS / "resnet20_csg_16_72_reuse"
    if run not in RUNS:
        pytest.skip("the reuse run is not committed")
    committed = ROOT / "results" / "authors" / "RN20_1616-128.pt"
    authors = torch.load(committed, weights_only=True)["model"]
    best = torch.load(run / "best.pt", weights_only=True)["model"]
    assert tuple(authors["csg.weight"].shape) == (16 * 16 * 3 * 3, 72)  # 72-wide codes, whatever the folder says
    assert torch.equal(best["csg.weight"], authors["csg.weight"])
    assert not torch.equal(best["stage3.2.conv_b.codes"], authors["stage3.2.conv_b.codes"])  # the codes trained


def test_the_committed_authors_generator_is_their_published_checkpoint_imported(tmp_path, cli):
    from authors_code import MIRROR

    if not MIRROR.is_dir():
        pytest.skip("the authors' repository is not fetched here")
    ckpt = tmp_path / "ckpt.t7"
    with open(ckpt, "wb") as f:
        subprocess.run(["git", "--git-dir", str(MIRROR), "show", "HEAD:Pretrained_Models/RN20_1616-128/ckpt.t7"],
                       stdout=f, check=True)
    res = cli("import-original", ckpt, "--arch", "resnet20", "--out", tmp_path / "imported.pt")
    assert res.exit_code == 0, res.output
    imported = torch.load(tmp_path / "imported.pt", weights_only=True)["model"]
    committed = torch.load(ROOT / "results" / "authors" / "RN20_1616-128.pt", weights_only=True)["model"]
    assert imported.keys() == committed.keys()
    assert all(torch.equal(imported[k], committed[k]) for k in committed)


@pytest.mark.parametrize("folder", [RESULTS, CSG_OPTIM, ROOT / "results" / "baselines", ROOT / "results" / "recipe"], ids=lambda p: p.name)
def test_a_committed_report_is_what_acl_report_says_of_its_runs(folder, cli):
    runs = sorted(p for p in folder.iterdir() if (p / "final.json").is_file())
    res = cli("report", *runs, "--format", "markdown")
    assert res.exit_code == 0, res.output
    assert (folder / "report.md").read_text().strip() == res.output.strip()


BASELINES = ROOT / "results" / "baselines"
BASELINES_HEADING = "### The baselines the paper compared with"


def _finished(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if (p / "final.json").is_file())


def test_the_readme_baselines_table_is_read_from_its_runs(cli):
    """Every cell of the README's baseline comparison from the committed runs: params and MACs from params.json,
    compression against the family's original (counted by its own run), top-1, img/s and s/epoch from
    metrics.csv; every run on one split, subset and schedule."""
    import statistics

    import yaml

    section = (ROOT / "README.md").read_text().split(BASELINES_HEADING, 1)[1].split("\n#", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and re.fullmatch(r"`[a-z0-9_]+`", cells[0]):
            rows[cells[0].strip("`")] = cells[1:]
    runs = _finished(BASELINES)
    assert sorted(rows) == [p.name for p in runs] and len(runs) == 5
    original = json.loads((BASELINES / "resnet56" / "params.json").read_text())["total"]
    settings = set()
    for run in runs:
        params, compression, macs, top1, img_s, s_epoch = rows[run.name]
        counted = json.loads((run / "params.json").read_text())
        assert params == f"{counted['total']:,}" and macs == f"{counted['macs']['per_image']:,}"
        assert compression == f"{original / counted['total']:.2f}×"
        with open(run / "metrics.csv", newline="") as f:
            epochs = list(csv.DictReader(f))
        wall = sum(float(r["epoch_time"]) + float(r["eval_time"]) for r in epochs)
        assert top1 == f"{_best(run)[0]:.2f}" and s_epoch == f"{wall / len(epochs):.1f}"
        assert img_s == str(round(statistics.median(float(r["img_s"]) for r in epochs)))
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        d = cfg["data"]
        settings.add((d["train_subset"], d["val_split"], d["split_seed"], cfg["train"]["epochs"], cfg["optim"]["lr"],
                      str(cfg["schedule"]), cfg["train"]["seed"]))
    (setting,) = settings  # the same images, split, schedule and seed for every row, as the README says
    assert setting[:4] == (5000, 0.1, 0, 6) and setting[-1] == 0
    shown = {r["run"]: r for r in json.loads(cli("report", *runs, "--format", "json").output)}
    assert {name: f"{shown[name]['compression']:.2f}×" for name in rows} == {n: c[1] for n, c in rows.items()}


def test_the_readme_baselines_command_makes_exactly_the_committed_runs(tmp_path):
    import yaml

    section = (ROOT / "README.md").read_text().split(BASELINES_HEADING, 1)[1].split("\n#", 1)[0]
    lines = [x for x in section.splitlines() if "scripts/compare_baselines.sh" in x and "=" in x.split()[0]]
    jobs = _dry_run("compare_baselines.sh", lines, tmp_path, out="results/baselines")
    assert sorted(_job_config(a)[0] for a in jobs) == [p.name for p in _finished(BASELINES)]
    for argv in jobs:
        name, made = _job_config(argv)
        committed = yaml.safe_load((BASELINES / name / "config.yaml").read_text())
        for key in ("model", "optim", "schedule"):
            assert made[key] == committed[key], (name, key)
        for key in ("name", "val_split", "split_seed", "train_subset", "batch_size", "loader"):
            assert made["data"][key] == committed["data"][key], (name, key)
        assert (made["train"]["epochs"], made["train"]["seed"]) == (committed["train"]["epochs"], committed["train"]["seed"])


def test_report_shows_trainable_parameters_and_seconds_an_epoch_from_the_records(cli):
    """acl report's trainable column is params.json's (the reuse run trains its codes, BatchNorm, stem and
    classifier only), and s_epoch the wall time of metrics.csv's epochs over their number."""
    runs = [r for r in (RESULTS / "resnet20_csg_16_72_reuse", RESULTS / "resnet20") if r in RUNS]
    if len(runs) < 2:
        pytest.skip("the reuse run is not committed")
    shown = {r["run"]: r for r in json.loads(cli("report", *runs, "--format", "json").output)}
    for run in runs:
        counted = json.loads((run / "params.json").read_text())
        assert (shown[run.name]["params"], shown[run.name]["trainable"]) == (counted["total"], counted["trainable"])
        with open(run / "metrics.csv", newline="") as f:
            epochs = list(csv.DictReader(f))
        wall = sum(float(r["epoch_time"]) + float(r["eval_time"]) for r in epochs)
        assert shown[run.name]["s_epoch"] == round(wall / len(epochs), 1)
    reuse = shown["resnet20_csg_16_72_reuse"]
    assert reuse["trainable"] == 10_810 < reuse["params"] == 176_698  # what the README's row says
    table = cli("report", *runs, "--format", "markdown").output
    assert "| params | trainable |" in table and "| 176,698 | 10,810 |" in table


RECIPE = ROOT / "results" / "recipe"


def test_the_readme_ema_comparison_is_read_from_its_runs():
    """The quickstart with and without weight EMA: the commands in the README made the committed configs, the
    weights' top-1 is the same every epoch, and the sentence's numbers are the files'."""
    import shlex

    from acl_cli.config import load_config

    readme = (ROOT / "README.md").read_text()
    section = readme.split("The EMA on the quickstart", 1)[1].split("## After the first run", 1)[0]
    commands = [shlex.split(x) for x in re.findall(r"```bash\n(.*?)```", section, re.S)[0].splitlines()]
    for argv in commands:
        out = Path(argv[argv.index("--out") + 1])
        sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
        made = load_config(ROOT / argv[argv.index("--config") + 1], sets).to_dict()
        committed = load_config(ROOT / out / "config.yaml", []).to_dict()
        for key in ("model", "optim", "schedule"):
            assert made[key] == committed[key], (out, key)
        assert made["train"]["ema"] == committed["train"]["ema"] and made["train"]["seed"] == committed["train"]["seed"]
    plain, ema = (list(csv.DictReader((RECIPE / name / "metrics.csv").open())) for name in ("quickstart", "quickstart_ema"))
    assert [r["val_top1"] for r in plain] == [r["val_top1"] for r in ema]  # the EMA leaves the weights' training alone
    best, last = max(float(r["val_top1"]) for r in plain), float(plain[-1]["val_top1"])
    ema_best = max(float(r["ema_val_top1"]) for r in ema)
    assert json.loads((RECIPE / "quickstart_ema" / "final.json").read_text())["best_val_top1"] == pytest.approx(ema_best)
    text = " ".join(section.split())
    assert f"best {best:.2f}, last {last:.2f}); the average at decay 0.95" in text
    assert f"reaches {ema_best:.2f}, {best - ema_best:.2f} below the weights' best" in text
    assert ("does not help" if ema_best < best else "helps") in text
