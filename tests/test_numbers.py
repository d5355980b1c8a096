"""Numbers a researcher quotes, as a new user meets them: the sweeps' commands through the real CLI, what
acl report averages, what each epoch line, metrics.csv and TensorBoard say, where numbers come from."""
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest
import torch

from acl_cli.checkpoint import load_checkpoint, save_checkpoint
from acl_cli.cli import main
from acl_cli.config import load_config
from acl_cli.training import train
from schedules import lr_per_step

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["model.arch=resnet20", "model.csg={slice_shape: [16, 16, 3, 3], code_size: 72}", "data.name=digits",
         "data.val_split=0.2", "data.train_subset=64", "data.batch_size=32", "data.workers=0", "train.epochs=2",
         "train.progress=false"]


def quiet(*args, **kwargs):
    pass


def _sets(items):
    return [a for s in items for a in ("--set", s)]


# ---- the sweeps, in their README forms, through the real CLI


def _script(name, *args, **env):
    full_env = {**{k: v for k, v in os.environ.items() if k not in ("SEEDS", "TASK_INDEX", "EXTRA_SET")}, **env}
    # the printed commands say `acl`; the dry run asks that acl (acl plan) what each job would do
    full_env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{full_env.get('PATH', '')}"
    return subprocess.run(["bash", str(ROOT / "scripts" / name), *map(str, args)], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=120)


def _parse_with_click(argv: list[str]):
    """What ``acl`` would do with this command line up to running it: click parses every option (an extra
    argument such as '' is an error), then the config loads with its overrides."""
    assert argv[0] == "acl", argv
    command = main.get_command(click.Context(main), argv[1])
    ctx = command.make_context(argv[1], argv[2:])
    return ctx.params


SCRIPTS = ["reproduce_cifar10.sh", "sweep_code_slice.sh", "sweep_depth.sh", "compare_layouts.sh",
           "results_cifar10.sh", "compare_csg_optim.sh"]


@pytest.mark.parametrize("seeds", [None, "0 010"])
@pytest.mark.parametrize("name", SCRIPTS)
def test_every_sweep_command_parses_and_loads(tmp_path, name, seeds):
    env = {"DRY_RUN": "1"} | ({"SEEDS": seeds} if seeds else {})
    res = _script(name, "~/data", 200, tmp_path / "out", **env)
    assert res.returncode == 0, res.stderr
    lines = [shlex.split(line) for line in res.stdout.splitlines()]
    assert "''" not in res.stdout and lines
    for argv in lines:
        params = _parse_with_click(argv)
        if argv[1] == "train":
            cfg = load_config(params["config_path"], params["overrides"])
            assert cfg.train.epochs == 200 and cfg.data.root == os.path.expanduser("~/data")
            if seeds:
                assert cfg.train.seed in (0, 10)  # 010 is seed 10, not octal 8
    if seeds:
        assert sum("train.seed=10" in argv for argv in lines) == sum("train.seed=0" in argv for argv in lines) > 0


def test_task_index_set_but_empty_is_refused_and_leading_zeros_are_decimal(tmp_path):
    echo = tmp_path / "acl.sh"  # an acl that plans to train and prints the command it is given
    echo.write_text('[ "$1" = plan ] && echo train && exit 0\necho "$@"\n')
    res = _script("sweep_depth.sh", "/data", 5, tmp_path / "out", TASK_INDEX="", ACL=f"sh {echo}")
    assert res.returncode == 2 and "TASK_INDEX must be a job index" in res.stderr
    res = _script("sweep_depth.sh", "/data", 5, tmp_path / "out", TASK_INDEX="08", ACL=f"sh {echo}")
    assert res.returncode == 0, res.stderr
    assert "job 8: resnet110" in res.stdout and "model.arch=resnet110" in res.stdout


def test_extra_set_on_two_lines_is_taken_whole(tmp_path):
    res = _script("sweep_depth.sh", "/data", 5, tmp_path / "out", DRY_RUN="1", DEPTHS="20",
                  EXTRA_SET="--set data.workers=3\n--set train.seed=7")
    assert res.returncode == 0, res.stderr
    for line in res.stdout.splitlines()[:-1]:
        assert "data.workers=3" in line and "train.seed=7" in line, line


def test_sbatch_files_carry_absolute_quoted_paths(tmp_path):
    work = tmp_path / "my work"
    (work / "my data").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k not in ("SEEDS", "TASK_INDEX")}
    env.update(SBATCH_PARTITION="gpu", SBATCH_EXTRA="#SBATCH --account=lab")
    res = subprocess.run(["bash", str(ROOT / "scripts/sweep_depth.sh"), "--sbatch", "my data", "5", "out dir"],
                         cwd=work, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    sweep, report = ((work / "out dir" / f).read_text() for f in ("sweep.sbatch", "report.sbatch"))
    assert f'#SBATCH --output="{work}/out dir/slurm-%A_%a.log"' in sweep
    assert f'#SBATCH --output="{work}/out dir/report-%j.log"' in report
    for text in (sweep, report):
        assert '#SBATCH --partition="gpu"' in text and "#SBATCH --account=lab" in text
        command = shlex.split(next(line for line in text.splitlines() if "exec bash" in line))
        assert command[-3] == str(work / "my data")  # DATA EPOCHS OUT; absolute: the tasks cd into the project
    submit = res.stdout.splitlines()[-1]
    assert shlex.split(submit.replace("$(", " ").replace(")", " "))[3] == "out dir/sweep.sbatch"
    bad = subprocess.run(["bash", str(ROOT / "scripts/sweep_depth.sh"), "--sbatch", "d", "5", "out\ndir"],
                         cwd=work, env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "cannot carry" in bad.stderr


# ---- acl report: what is averaged


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "base"
    train(load_config(None, SMALL[:-2] + ["train.epochs=1", "train.progress=false"]), run, log=quiet)
    return run


def _variant(src: Path, dst: Path, seed: int, root: str | None = None, processes: int = 1, done: bool = True):
    dst.mkdir(parents=True)
    for name in ("params.json", "metrics.csv", "final.json", "run.json"):
        (dst / name).write_text((src / name).read_text())
    text = (src / "config.yaml").read_text().replace("\n  seed: 0\n", f"\n  seed: {seed}\n")
    if root:
        text = text.replace(f"root: {load_config(src / 'config.yaml').data.root}", f"root: {root}")
    (dst / "config.yaml").write_text(text)
    record = json.loads((src / "run.json").read_text())
    record["sessions"][-1]["processes"] = processes
    (dst / "run.json").write_text(json.dumps(record))
    if not done:
        (dst / "final.json").unlink()


def test_report_averages_only_finished_runs_of_the_same_data_and_process_count(finished, tmp_path, cli):
    runs = tmp_path / "seeds"
    _variant(finished, runs / "r_seed0", 0)
    _variant(finished, runs / "r_seed1", 1)
    _variant(finished, runs / "r_seed2", 2, root="/other/data")
    _variant(finished, runs / "r_seed3", 3, processes=2)
    _variant(finished, runs / "r_seed4", 4, done=False)
    res = cli("report", *sorted(runs.iterdir()), "--by-seed", "--format", "json")
    assert res.exit_code == 0, res.output
    groups = json.loads(res.output)
    assert sorted((g["n"], g["seeds"], g["status"]) for g in groups) == [
        (1, "2", "finished"), (1, "3", "finished"), (1, "4", "unfinished"), (2, "0 1", "finished")]
    folder = cli("report", runs, "--by-seed", "--format", "json")  # a sweep's folder stands for its runs
    assert folder.exit_code == 0 and json.loads(folder.output) == groups, folder.output


def test_report_says_when_codes_and_generator_had_their_own_lr_or_weight_decay(finished, tmp_path, cli):
    import yaml

    runs = tmp_path / "optim"
    _variant(finished, runs / "recipe", 0)
    _variant(finished, runs / "lr2", 0)
    cfg = yaml.safe_load((runs / "lr2" / "config.yaml").read_text())
    cfg["optim"].update(csg_lr_scale=2.0, csg_weight_decay=0.002)
    (runs / "lr2" / "config.yaml").write_text(yaml.safe_dump(cfg))
    res = cli("report", runs / "recipe", runs / "lr2", "--format", "json")
    assert res.exit_code == 0, res.output
    recipe, lr2 = json.loads(res.output)
    assert (recipe["csg"], lr2["csg"]) == ("16x16x3x3/72 flat", "16x16x3x3/72 flat, lr x2, wd 0.002")
    res = cli("report", runs / "recipe", runs / "lr2", "--by-seed", "--format", "json")
    assert [g["n"] for g in json.loads(res.output)] == [1, 1]  # never averaged together


def test_the_plot_legend_lists_only_series_with_points(finished, tmp_path, cli):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text in the SVG
    res = cli("report", finished, "--plot", tmp_path / "p.svg")
    assert res.exit_code == 0, res.output
    svg = (tmp_path / "p.svg").read_text()
    assert ">CSG<" in svg and ">original<" not in svg


# ---- what each epoch line, metrics.csv and TensorBoard say


def _rows(run):
    import csv

    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _scalars(run, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_lr_logged_is_the_rate_the_epochs_steps_ran_at(tmp_path):
    run = tmp_path / "run"
    train(load_config(None, SMALL + ["schedule.milestones=[0.5]"]), run, log=quiet)
    assert [float(r["lr"]) for r in _rows(run)] == [pytest.approx(0.05), pytest.approx(0.005)]


def test_resume_keeps_tensorboard_points_and_records_new_hparams(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    run = tmp_path / "run"
    train(load_config(None, SMALL[:-2] + ["train.epochs=1", "train.progress=false"]), run, log=quiet)
    cfg = load_config(run / "config.yaml", ["train.epochs=2", "optim.lr=0.02"])
    train(cfg, run, resume=True, log=quiet)
    steps = [s for s, _ in _scalars(run, "val/top1")]
    assert steps == [2, 4]  # the first epoch's point survives the resume at its step
    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    hparams = plugin_data_pb2.HParamsPluginData.FromString(
        acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info.hparams
    assert hparams["optim.lr"].number_value == 0.02 and hparams["train.epochs"].number_value == 2


def test_a_resumed_epoch_counts_images_and_time_over_the_same_steps(tmp_path):
    from acl_cli.training import TrainingInterrupted

    run = tmp_path / "run"
    cfg = load_config(None, SMALL[:-2] + ["train.epochs=1", "train.progress=false"])
    with pytest.raises(TrainingInterrupted):
        train(cfg, run, stop_after_steps=1, log=quiet)
    first = load_checkpoint(run / "last.pt")["progress"]["epoch_time"]
    assert first > 0
    train(cfg, run, resume=True, log=quiet)
    row = _rows(run)[0]
    assert float(row["epoch_time"]) > first  # both sessions' time, not the second's alone
    assert float(row["img_s"]) * float(row["epoch_time"]) == pytest.approx(64)  # the epoch's 2 x 32 images


def test_no_top5_with_fewer_than_five_classes(tmp_path, cli):
    from PIL import Image

    data = tmp_path / "data"
    for c in "abc":
        for i in range(12):
            (data / "train" / c).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((32, 32, 3), 20 * i + 10 * "abc".index(c), dtype=np.uint8)).save(
                data / "train" / c / f"{i}.png")
    run = tmp_path / "run"
    res = cli("train", "--config", ROOT / "configs/quickstart.yaml", "--out", run,
              *_sets(["data.name=imagefolder", f"data.root={data}", "data.val_split=0.25", "data.batch_size=9",
                      "data.workers=0", "model.num_classes=3", "train.epochs=1", "train.progress=false"]))
    assert res.exit_code == 0, res.output
    assert "top5" not in next(line for line in res.output.splitlines() if line.startswith("epoch"))
    row = _rows(run)[0]
    assert row["train_top5"] == row["val_top5"] == ""
    assert json.loads((run / "final.json").read_text())["val_top5"] is None
    res = cli("eval", run)
    assert res.exit_code == 0 and "top5 n/a" in res.output


def test_bench_times_at_the_datas_image_size_and_says_so(cli):
    res = cli("bench", "--config", ROOT / "configs/quickstart.yaml", "--device", "cpu", "--steps", "1", "--repeats",
              "1", "--set", "model.arch=torchvision:resnet18", "--set", "model.num_classes=10", "--batch-size", "4")
    assert res.exit_code == 0, res.output
    assert "batch 4 of 32x32 images (digits images)" in res.output  # not torchvision's 224


# ---- where numbers come from


def test_milestones_inside_a_warmup_decay_at_their_step():
    cfg = load_config(None, ["schedule.milestones=[1, 3]", "schedule.warmup_epochs=1", "optim.lr=1.0"])
    lrs = lr_per_step(torch.nn.Linear(2, 2), cfg, epochs=4, steps_per_epoch=10)
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(0.91)  # the ramp, undecayed
    assert lrs[10] == pytest.approx(0.1) and lrs[29] == pytest.approx(0.1) and lrs[30] == pytest.approx(0.01)


def test_eval_of_a_test_folder_needs_no_training_folder(tmp_path, cli):
    from PIL import Image

    data = tmp_path / "data"
    for split in ("train", "test"):
        for c in "abcde":
            for i in range(6):
                (data / split / c).mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.full((32, 32, 3), 40 * "abcde".index(c) + i, dtype=np.uint8)).save(
                    data / split / c / f"{i}.png")
    run = tmp_path / "run"
    sets = ["data.name=imagefolder", f"data.root={data}", "data.val_split=0.2", "data.batch_size=8",
            "data.workers=0", "model.num_classes=5", "train.epochs=1", "train.progress=false"]
    assert cli("train", "--config", ROOT / "configs/quickstart.yaml", "--out", run, *_sets(sets)).exit_code == 0
    only_test = tmp_path / "only_test"
    only_test.mkdir()
    (data / "test").rename(only_test / "test")
    res = cli("eval", run, "--split", "test", "--set", f"data.root={only_test}")
    assert res.exit_code == 0, res.output
    assert "samples 30" in res.output


def test_data_root_is_stored_absolute_with_home_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert load_config(None, ["data.root=~/data"]).data.root == str(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    train(load_config(None, SMALL[:-2] + ["train.epochs=1", "train.progress=false", "data.root=rel"]), run, log=quiet)
    assert load_checkpoint(run / "best.pt")["config"]["data"]["root"] == str(tmp_path / "rel")


def test_count_params_lists_every_conv_and_formats_say_what_they_are(tmp_path, cli, monkeypatch):
    (tmp_path / "mixnet.py").write_text(
        "import torch.nn as nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self, num_classes=10):\n"
        "        super().__init__()\n"
        "        self.stem = nn.Conv2d(3, 16, 3, padding=1)\n"
        "        self.body = nn.Conv2d(16, 16, 3, padding=1, bias=False)\n"
        "        self.line = nn.Conv1d(16, 16, 3)\n"
        "        self.vol = nn.Conv3d(1, 4, 3)\n"
        "        self.up = nn.ConvTranspose2d(16, 8, 2)\n"
        "        self.fc = nn.Linear(16, num_classes)\n"
        "def net(num_classes=10):\n"
        "    return Net(num_classes)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    res = cli("count-params", "--arch", "mixnet:net", "--slice-shape", "16,16,3,3", "--code-size", "8", "--per-layer")
    assert res.exit_code == 0, res.output
    for name in ("stem", "body", "line", "vol", "up"):
        assert any(line.split()[:1] == [name] for line in res.output.splitlines()), name
    res = cli("count-params", "--arch", "mixnet:net", "--slice-shape", "16,16,3,3", "--code-size", "8",
              "--format", "csv")
    assert "csg,\"slice 16x16x3x3, code 8, flat layout\"" in res.output
    res = cli("count-params", "--arch", "resnet20", "--format", "markdown")
    assert res.output.startswith("| key | value |\n|---|---|\n| arch | resnet20 |")
    assert "the architecture's" in cli("count-params", "--help").output
    res = cli("count-params", "--arch", "mixnet:net", "--slice-shape", "16,16,5,5", "--code-size", "8")
    assert res.exit_code == 2 and "grouped" not in res.stderr


def test_messages_say_what_happened(tmp_path, cli):
    run = tmp_path / "run"
    train(load_config(None, SMALL[:-2] + ["train.epochs=1", "train.progress=false"]), run, log=quiet)
    res = cli("train", "--resume", run)
    assert res.exit_code == 2 and "resuming" not in res.output and "already finished 1 epochs" in res.stderr
    res = cli("eval", run, "--set", "model.num_classes=5")
    assert res.exit_code == 2 and "classifier.weight is (10, 64)" in res.stderr and "(5, 64) in the model" in res.stderr
    state = load_checkpoint(run / "last.pt")
    state["progress"]["processes"], state["progress"]["epoch"] = 2, 0  # as a 2-process run mid-way leaves it
    save_checkpoint({k: v for k, v in state.items() if k not in ("format", "version")}, run / "last.pt")
    res = cli("train", "--resume", run)
    assert res.exit_code == 2 and "trained by 2 process(es), this resume has 1" in res.stderr


def test_sigterm_does_not_mention_ctrl_c(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"base: {ROOT / 'configs/quickstart.yaml'}\ntrain:\n  epochs: 50\n  progress: false\n")
    proc = subprocess.Popen([sys.executable, "-m", "acl_cli", "train", "--config", str(cfg), "--out",
                             str(tmp_path / "r")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("epoch"):
            break
    proc.terminate()
    _, err = proc.communicate(timeout=120)
    assert "SIGTERM received: stopping after this step" in err and "Ctrl-C" not in err
