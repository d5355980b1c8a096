"""acl plan: the one decision (train, resume, skip, conflict) a sweep and its dry run both follow, made through the
real acl and the real scripts; a distillation teacher compared by its weights, not its path; originals are
original networks whatever BASE_CONFIG holds."""
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "cifar10"
ACL = f"{sys.executable} -m acl_cli"
DISTILLED = "resnet20_csg_16_72_distill"


def _script(name, *args, cwd=ROOT, **env):
    return subprocess.run(["bash", str(Path(cwd) / "scripts" / name), *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, "ACL": ACL, **env}, timeout=300)


def _commands(stdout):
    return [shlex.split(line) for line in stdout.splitlines() if " train " in line]


def _other_clone(tmp_path) -> Path:
    """The scripts and the committed teacher and distilled run, as a clone at another path has them."""
    if not (RESULTS / DISTILLED / "best.pt").is_file():
        pytest.skip("the distilled run is not committed")
    clone = tmp_path / "clone"
    shutil.copytree(ROOT / "scripts", clone / "scripts")
    for name in ("resnet20", DISTILLED):
        shutil.copytree(RESULTS / name, clone / "results" / "cifar10" / name)
    return clone


def _retrain_teacher(run: Path) -> None:
    """Another teacher under the same name: one weight changed."""
    state = torch.load(run / "best.pt", weights_only=True)
    key = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][key] += 1
    torch.save(state, run / "best.pt")


def _readme_distill_line() -> str:
    readme = (ROOT / "README.md").read_text()
    return next(x for x in readme.splitlines() if x.startswith("DISTILL=1 CONFIGS=resnet20_csg_16_72 "))


def _run_readme_line(line: str, clone: Path, tmp_path: Path, *mode, **env):
    words = shlex.split(line)
    at = words.index("scripts/results_cifar10.sh")
    args = [str(tmp_path / "data") if a == "DATA" else a for a in words[at + 1:]]
    return _script("results_cifar10.sh", *mode, *args, cwd=clone, **dict(w.split("=", 1) for w in words[:at]), **env)


def test_the_readme_distill_command_skips_the_committed_run_from_a_clone_at_another_path(tmp_path):
    """The committed run names its teacher by the path of the clone that trained it: the same weights at the new
    clone's path are the same teacher."""
    clone = _other_clone(tmp_path)
    committed = yaml.safe_load((clone / "results/cifar10" / DISTILLED / "config.yaml").read_text())
    assert committed["distill"]["teacher"] != str(clone / "results/cifar10/resnet20")  # the real case: moved
    line = _readme_distill_line()
    res = _run_readme_line(line, clone, tmp_path, DRY_RUN="1")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0] == f"skip {DISTILLED} (finished)" and not _commands(res.stdout)
    res = _run_readme_line(line, clone, tmp_path, "--report")
    assert res.returncode == 0 and "1 of 1 finished" in res.stdout, res.stderr
    _retrain_teacher(clone / "results/cifar10/resnet20")  # another teacher where the run's was: a difference
    res = _run_readme_line(line, clone, tmp_path, DRY_RUN="1")
    assert res.returncode == 1 and not _commands(res.stdout), res.stdout
    assert f"FAILED {DISTILLED} finished with other settings (distill.teacher: " in res.stderr, res.stderr
    assert "other weights: sha256" in res.stderr and "another OUT_DIR" in res.stderr and "remove" not in res.stderr


def test_config_diff_compares_a_teacher_by_its_recorded_weights(tmp_path, cli):
    clone = _other_clone(tmp_path)
    run, teacher = clone / "results/cifar10" / DISTILLED, clone / "results/cifar10/resnet20"
    diff = ("config", "diff", run, "--config", run / "config.yaml")
    res = cli(*diff, "--set", f"distill.teacher={teacher}")
    assert res.exit_code == 0 and res.output == "", res.output
    res = cli(*diff, "--set", f"distill.teacher={teacher}", "--all")  # where things lie: the data root, the teacher
    assert "distill.teacher: " in res.output and "(moved: the same weights)" in res.output, res.output
    res = cli("config", "diff", run / "config.yaml", "--config", run / "config.yaml", "--set",
              f"distill.teacher={teacher}")  # a config file records no weights: the path is all there is
    assert res.exit_code == 1 and res.output.startswith("distill.teacher: "), res.output
    res = cli(*diff, "--set", f"distill.teacher={tmp_path / 'gone'}")
    assert res.exit_code == 1 and "(weights not checked: checkpoint not found: " in res.output, res.output
    _retrain_teacher(teacher)
    res = cli(*diff, "--set", f"distill.teacher={teacher}")
    assert res.exit_code == 1 and res.output.count("\n") == 1 and "other weights: sha256" in res.output, res.output


def test_a_dry_run_prints_what_the_real_run_does(tmp_path):
    """A finished committed run is skipped (never --overwrite), one with a bigger budget is a conflict (never a
    --resume the run would refuse), an unfinished one with last.pt is resumed, and an empty folder is trained."""
    out = tmp_path / "out"
    shutil.copytree(RESULTS / "resnet20", out / "resnet20")
    before = sorted(p.name for p in (out / "resnet20").iterdir())
    env = {"CONFIGS": "resnet20", "DRY_RUN": "1"}
    res = _script("results_cifar10.sh", tmp_path / "data", 30, out, **env)
    assert res.returncode == 0, res.stderr
    jobs = res.stdout.splitlines()[:-1]  # the last line is the report's
    assert jobs == ["skip resnet20 (finished)"] and "report" in res.stdout.splitlines()[-1]
    res = _script("results_cifar10.sh", tmp_path / "data", 40, out, **env)
    failed = "FAILED resnet20 finished with other settings (train.epochs: 30 -> 40): kept as it is"
    assert res.returncode == 1 and failed in res.stderr and not _commands(res.stdout), res.stderr
    real = _script("results_cifar10.sh", tmp_path / "data", 40, out, CONFIGS="resnet20")  # trains nothing either
    assert real.returncode == 1 and [x for x in real.stderr.splitlines() if x.startswith("FAILED")] == \
        [x for x in res.stderr.splitlines() if x.startswith("FAILED")]
    assert sorted(p.name for p in (out / "resnet20").iterdir()) == before
    (out / "resnet20" / "final.json").unlink()  # stopped before the end: its last.pt
    shutil.copy(out / "resnet20" / "best.pt", out / "resnet20" / "last.pt")
    res = _script("results_cifar10.sh", tmp_path / "data", 40, out, **env)
    assert res.returncode == 0, res.stderr
    [argv] = _commands(res.stdout)
    assert argv[argv.index("train"):argv.index("train") + 3] == ["train", "--resume", str(out / "resnet20")]
    assert "train.epochs=40" in argv
    res = _script("results_cifar10.sh", tmp_path / "data", 40, out, EXTRA_SET="--set optim.weight_decay=1e-3", **env)
    assert res.returncode == 1 and not _commands(res.stdout)
    assert ("FAILED resnet20 was started with other settings, which a resume cannot change (optim.weight_decay: "
            "0.0005 -> 0.001): kept as it is") in res.stderr, res.stderr
    res = _script("results_cifar10.sh", tmp_path / "data", 30, tmp_path / "empty", **env)
    [argv] = _commands(res.stdout)
    assert res.returncode == 0 and argv[argv.index("train"):argv.index("train") + 6] == [
        "train", "--config", "cifar10/resnet20", "--out", str(tmp_path / "empty" / "resnet20"), "--overwrite"]


def test_plan_answers_one_line_reads_nothing_it_would_import_and_writes_nothing(tmp_path, cli, monkeypatch):
    trap = tmp_path / "mods" / "acl_plan_trap.py"  # a run's factory module: importing it would run its code
    trap.parent.mkdir()
    trap.write_text("raise SystemExit('imported')\n")
    monkeypatch.syspath_prepend(str(trap.parent))
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model: {arch: 'acl_plan_trap:make', num_classes: 10}\n")
    (run / "final.json").write_text("{}")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    res = cli("plan", run, "--config", run / "config.yaml")
    assert res.exit_code == 0 and res.output == "skip (finished)\n", res.output
    res = cli("plan", run, "--config", run / "config.yaml", "--set", "train.epochs=3")
    assert res.exit_code == 0 and res.output == "conflict: finished with other settings (train.epochs: 200 -> 3)\n"
    assert "acl_plan_trap" not in sys.modules and sorted(p.name for p in tmp_path.rglob("*")) == before
    assert cli("plan", tmp_path / "new", "--config", "quickstart").output == "train\n"
    for bad in (("plan", run), ("plan", run, "--config", tmp_path / "none.yaml"),
                ("plan", run / "final.json", "--config", "quickstart"), ("plan", run, "--config", "quickstart",
                                                                         "--set", "train.epochs=x")):
        res = cli(*bad)
        assert res.exit_code == 2 and res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.output


def _csg_of_each_job(cli, stdout) -> dict[str, object]:
    """Each printed job's run folder name and its model.csg, as the real acl resolves its config."""
    found = {}
    for argv in _commands(stdout):
        sets = [x for i, a in enumerate(argv) if a == "--set" for x in ("--set", argv[i + 1])]
        shown = cli("config", "show", "--config", argv[argv.index("--config") + 1], *sets)
        assert shown.exit_code == 0, shown.output
        found[Path(argv[argv.index("--out") + 1]).name] = yaml.safe_load(shown.stdout)["model"]["csg"]
    return found


def test_original_jobs_are_original_networks_when_the_base_config_has_a_csg_block(tmp_path, cli):
    mine = tmp_path / "mine.yaml"
    mine.write_text("base: quickstart\n")  # quickstart has a csg block
    res = _script("sweep_depth.sh", tmp_path / "data", 3, tmp_path / "depth", BASE_CONFIG=str(mine), DEPTHS="20",
                  SEEDS="0 1", DRY_RUN="1")
    assert res.returncode == 0, res.stderr
    csg = _csg_of_each_job(cli, res.stdout)
    assert sorted(csg) == ["resnet20_csg_12_72_seed0", "resnet20_csg_12_72_seed1", "resnet20_seed0", "resnet20_seed1"]
    for name, block in csg.items():
        assert (block is None) == ("_csg_" not in name), (name, block)
    res = _script("sweep_code_slice.sh", tmp_path / "data", 3, tmp_path / "slice", BASE_CONFIG=str(mine),
                  ARCH="resnet20", SLICES="16", CODE_SIZES="72", DRY_RUN="1")
    assert res.returncode == 0, res.stderr
    csg = _csg_of_each_job(cli, res.stdout)
    assert csg["resnet20"] is None and csg["resnet20_csg_16_72"]["code_size"] == 72


def test_a_frozen_generator_is_compared_by_its_weights_not_its_path(tmp_path, cli, small_run):
    """A run that kept a generator frozen (model.csg.init_from, freeze) is the same job when that checkpoint
    moved (a clone at another path, issue 33's reuse run), and a conflict when it holds other weights."""
    from conftest import SMALL_RUN

    from acl_cli.config import load_config

    source = tmp_path / "gen" / "g.pt"
    source.parent.mkdir()
    shutil.copy(small_run / "best.pt", source)
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump(load_config(None, SMALL_RUN).to_dict()))
    sets = ["--config", config]
    reuse = tmp_path / "reuse"
    res = cli("train", "--out", reuse, *sets, "--set", f"model.csg.init_from={source}",
              "--set", "model.csg.freeze=true")
    assert res.exit_code == 0, res.output
    moved = tmp_path / "moved #1" / "g.pt"
    moved.parent.mkdir()
    shutil.move(source, moved)
    ask = ("plan", reuse, *sets, "--set", f"model.csg.init_from={json.dumps(str(moved))}", "--set",
           "model.csg.freeze=true")  # quoted: YAML cuts at " #"
    res = cli(*ask)
    assert res.exit_code == 0 and res.output.strip() == "skip (finished)", res.output
    state = torch.load(moved, weights_only=True)
    state["model"]["csg.weight"] += 1
    torch.save(state, moved)
    res = cli(*ask)
    assert res.output.startswith("conflict:") and "model.csg.init_from" in res.output, res.output
    assert "not the generator the run kept frozen" in res.output
