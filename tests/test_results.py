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


def _variant(run: Path) -> tuple[str, float, bool]:
    """What a run's folder name says (scripts/results_cifar10.sh): the config it was trained from, the lr scale on
    codes and generator (CSG_LR_SCALE: a name ending _lr<scale>) and whether it was distilled (_distill)."""
    m = re.fullmatch(r"(.+?)(?:_lr(\d+(?:\.\d+)?))?(_reuse)?(_distill)?", run.name)
    return m[1], float(m[2] or 1), bool(m[4])


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


def test_the_readme_table_is_read_from_the_committed_runs():
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Reproducing the paper", 1)[1]
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > 5 and re.fullmatch(r"`[a-z0-9_]+`", cells[0]):
            rows[cells[0].strip("`")] = cells
    header = next(line for line in table.splitlines() if line.startswith("| config"))
    columns = [c.strip() for c in header.strip().strip("|").split("|")]
    acl_col = columns.index("acl top-1")
    with_results = {name for name, cells in rows.items() if cells[acl_col] not in ("", "–", "-")}
    assert with_results == {p.name for p in RUNS}
    for run in RUNS:
        cells = dict(zip(columns, rows[run.name]))
        best, epochs = _best(run)
        assert cells["acl top-1"] == f"{best:.2f}"
        assert cells["epochs"] == str(epochs)
        assert "5,000 held out of train" in cells["chosen on"]
        for session in json.loads((run / "run.json").read_text())["sessions"]:  # each session ran where it says
            cpu = re.fullmatch(r"CPU (.+) \((\w+)\), (\d+) cores, \d+ threads?", session["device"])
            shown = f"{cpu[3]}-core {cpu[1]} CPU ({cpu[2]})" if cpu else session["device"]
            assert shown in cells["hardware"], (run.name, session["device"])


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
    """scripts/gpu_results.sh (dry run): six runs on GPU 0 with CUDA graphs, the committed results' split, each
    named as results/cifar10 names it; without its zip it refuses in one line before training anything."""
    import os
    import shlex
    import sys

    env = {**os.environ, "ACL": f"{sys.executable} -m acl_cli", "RUNS": str(tmp_path / "runs")}
    res = subprocess.run(["bash", "scripts/gpu_results.sh", "60", str(tmp_path / "out")], cwd=ROOT, capture_output=True,
                         text=True, env={**env, "DRY_RUN": "1"})
    assert res.returncode == 0, res.stderr
    jobs = [shlex.split(x) for x in res.stdout.splitlines() if " train " in x]
    names = sorted(_job_config(a)[0] for a in jobs)
    assert names == ["resnet20", "resnet20_csg_16_72", "resnet20_csg_16_72_lr2", "resnet56", "resnet56_csg_12_72",
                     "resnet56_csg_12_72_lr2"]
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
        assert {"recipe", "lr2"} <= set(tar.getnames())
    assert (tmp_path / "out" / "profile_step.txt").is_file()


def test_the_readme_says_where_twice_the_csg_lr_ends():
    """The README's sentence on the CSG run at twice the lr on codes and generator, recomputed from metrics.csv."""
    runs = {p.name: p for p in RUNS}
    names = ["resnet20", "resnet20_csg_16_72", "resnet20_csg_16_72_lr2"]
    if not all(name in runs for name in names):
        pytest.skip("the run at twice the csg lr and its pair are not all committed")
    original, plain, faster = (_best(runs[name])[0] for name in names)
    left = round(original - faster, 2)
    text = " ".join((ROOT / "README.md").read_text().split())
    where = f"{left:.2f} points below" if left >= 0 else f"{-left:.2f} points above"
    assert f"`resnet20_csg_16_72_lr2` reaches {faster:.2f} (the recipe: {plain:.2f}), {where} its original" in text
    assert (", within 1.0" if abs(left) <= 1.0 else ", so not within 1.0") in text


@pytest.mark.parametrize("folder", [RESULTS, CSG_OPTIM], ids=lambda p: p.name)
def test_a_committed_report_is_what_acl_report_says_of_its_runs(folder, cli):
    runs = sorted(p for p in folder.iterdir() if (p / "final.json").is_file())
    res = cli("report", *runs, "--format", "markdown")
    assert res.exit_code == 0, res.output
    assert (folder / "report.md").read_text().strip() == res.output.strip()
