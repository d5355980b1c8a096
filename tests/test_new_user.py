"""What a new user meets from a fresh clone and the README alone (issue 36): the fix named in the message."""

import pytest

from test_sent_files import ROOT, SETS, _one_line_exit_2

COMMITTED = ROOT / "results" / "cifar10" / "resnet20"


def test_a_committed_run_on_another_machine_names_the_data_root_override(cli, tmp_path):
    line = _one_line_exit_2(cli("eval", COMMITTED, "--set", f"data.root={tmp_path / 'nowhere'}"))
    assert "no training folder at" in line and "--set data.root=DIR" in line


def test_a_train_subset_larger_than_the_data_is_refused(cli, tmp_path):
    sets = [a if a != "data.train_subset=64" else "data.train_subset=100000" for a in SETS]
    line = _one_line_exit_2(cli("train", "--config", ROOT / "configs/quickstart.yaml", "--out", tmp_path / "r", *sets))
    assert line == ("error: data.train_subset: 100,000 is more than the 1,438 training images there are; leave it "
                    "out (null) to train on all of them")
    assert not (tmp_path / "r").exists()


def test_the_quickstart_comment_counts_its_training_images():
    text = (ROOT / "configs" / "quickstart.yaml").read_text()
    from acl_cli.config import load_config
    from acl_cli.data import build_splits

    cfg = load_config(ROOT / "configs" / "quickstart.yaml")
    assert f"{len(build_splits(cfg.data, 10).train):,} tiny in-memory training images" in text


def test_no_conv_to_generate_names_the_targets_that_would(cli):
    line = _one_line_exit_2(cli("count-params", "--arch", "torchvision:mobilenet_v2", "--slice-shape", "8,8,1,1",
                                "--code-size", "16"))
    assert line.endswith("to generate those, --set model.csg.targets=[pointwise]"), line
    res = cli("count-params", "--arch", "torchvision:mobilenet_v2", "--slice-shape", "8,8,1,1", "--code-size", "16",
              "--targets", "pointwise", "--format", "json")
    assert res.exit_code == 0, res.output
    import json
    report = json.loads(res.output)
    assert report["csg"]["targets"] == ["pointwise"] and report["by_kind"]["codes"] > 0


def test_a_larger_csg_network_says_which_part_outweighs():
    from acl_cli.config import load_config
    from acl_cli.models import resolve_model_config
    from acl_cli.params import outweighs, report_for_config

    cfg = load_config(None, ["model.arch=torchvision:mobilenet_v2", "model.csg={slice_shape: [8, 8, 1, 1], "
                             "code_size: 512, targets: [pointwise]}"])
    resolve_model_config(cfg.model)
    report = report_for_config(cfg.model)
    codes, generator = report.by_kind["codes"], report.by_kind["generator"]
    assert report.compression < 1 and codes > generator
    replaced = report.original_total - (report.total - codes - generator)
    assert outweighs(report).startswith(f"the codes ({codes:,}) and the generator ({generator:,}) outweigh the "
                                        f"{replaced:,} kernel weights they replace")


def test_workers_are_capped_to_the_cores(monkeypatch):
    import os

    from acl_cli.config import load_config
    from acl_cli.data import loader_kwargs, usable_workers

    cores = len(os.sched_getaffinity(0))
    cfg = load_config("cifar10/resnet20", ["data.workers=64"]).data
    assert usable_workers(cfg) == cores == loader_kwargs(cfg, __import__("torch").device("cpu"))["num_workers"]
    cfg.workers = 0
    assert usable_workers(cfg) == 0


@pytest.fixture
def finished(small_run):
    return small_run


def test_rerunning_a_finished_run_names_resume_with_more_epochs(cli, finished):
    line = _one_line_exit_2(cli("train", "--config", ROOT / "configs/quickstart.yaml", "--out", finished, *SETS))
    assert f"it finished; to train it longer, --resume {finished} --set train.epochs=N" in line, line


def test_overwrite_of_a_run_with_an_export_beside_it_says_what_to_do(cli, finished, tmp_path):
    import shutil

    run = shutil.copytree(finished, tmp_path / "run")
    assert cli("export", run, "--out", run / "plain.pt").exit_code == 0
    line = _one_line_exit_2(cli("train", "--config", ROOT / "configs/quickstart.yaml", "--out", run, "--overwrite",
                                *SETS))
    assert "besides the run it holds plain.pt, which the run did not write" in line and "not an acl run" not in line
    assert (run / "plain.pt").exists()


@pytest.mark.parametrize("args,message", [
    (("--set", "epochs=1"), "unknown key 'epochs'; did you mean 'train.epochs'?"),
    (("--epochs", "1"), "No such option '--epochs'; settings are given with --set: --set train.epochs=1"),
    (("--device", "cpu"), "settings are given with --set: --set train.device=cpu"),
    (("--set", "train.epochs", "1"), "Got unexpected extra argument (1); did you mean --set train.epochs=1?"),
    (("--set", "distill.teacher=gone/run"), "if the teacher moved, give where it is now: --set distill.teacher="),
    (("--set", "model.arch=nosuchmodule:make"), "put the folder that holds nosuchmodule on PYTHONPATH"),
])
def test_messages_name_the_fix(cli, tmp_path, args, message):
    res = cli("train", "--config", ROOT / "configs/quickstart.yaml", "--out", tmp_path / "r", *args)
    _one_line_exit_2(res, message)
    assert not (tmp_path / "r").exists()


def test_auto_feeds_a_cpu_run_from_the_device_loader_and_a_resume_keeps_the_one_it_began_with(tmp_path):
    import json

    from acl_cli.config import load_config
    from acl_cli.training import train
    from conftest import SMALL_RUN

    lines = []
    run = tmp_path / "run"
    cpu = SMALL_RUN + ["train.device=cpu"]  # the rule of a CPU (on CUDA, auto chose the device loader before too)
    train(load_config(None, cpu), run, log=lines.append)
    assert "(device loader)" in lines[0] and "DataLoader" not in lines[0]
    record = json.loads((run / "run.json").read_text())
    assert record["sessions"][0]["loader"] == "device loader"
    # a run recorded before the loader was: it began with the DataLoader on a CPU, and a resume keeps that
    for session in record["sessions"]:
        del session["loader"]
    (run / "run.json").write_text(json.dumps(record))
    lines.clear()
    train(load_config(None, cpu + ["train.epochs=2"]), run, resume=True, log=lines.append)
    banner = next(line for line in lines if "steps per epoch" in line)
    assert "(DataLoader, 0 workers)" in banner, banner
    assert json.loads((run / "run.json").read_text())["sessions"][-1]["loader"] == "DataLoader, 0 workers"


def test_copies_with_one_seed_are_not_passed_off_as_seeds(cli, finished, tmp_path):
    import json
    import shutil

    for name in ("a", "b"):
        shutil.copytree(finished, tmp_path / "sweep" / name)
    groups = json.loads(cli("report", tmp_path / "sweep", "--by-seed", "--format", "json").output)
    assert [(g["n"], g["seeds"], g["status"]) for g in groups] == [
        (2, "0 0", "finished; 1 repeat a seed (copies?): no mean or std")]
    assert (groups[0]["best_top1"], groups[0]["best_top1_std"], groups[0]["final_top1"]) == (None, None, None)


@pytest.mark.parametrize("record", ["nested", "fifo", "not_sessions", "nan_loader"])
def test_a_hostile_run_record_cannot_hang_or_break_a_resume(tmp_path, small_run, record):
    """run.json tells a resume which loader the run began with: whatever it holds, the resume goes on (as a
    run from before that record) or stops in one line, in bounded time."""
    import os
    import shutil
    import subprocess
    import sys

    run = shutil.copytree(small_run, tmp_path / "run", ignore=shutil.ignore_patterns(".lock"))
    (run / "run.json").unlink()
    if record == "fifo":
        os.mkfifo(run / "run.json")
    else:
        (run / "run.json").write_text({"nested": "[" * 100_000, "not_sessions": '{"sessions": {"loader": 1}}',
                                       "nan_loader": '{"sessions": [{"loader": NaN}]}'}[record])
    res = subprocess.run([sys.executable, "-m", "acl_cli", "train", "--resume", str(run), "--set", "train.epochs=2",
                          "--set", "train.device=cpu"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    banner = next(line for line in res.stdout.splitlines() if "steps per epoch" in line)
    # no readable record of the loader: the run began under the old rule, the DataLoader on a CPU
    assert "(DataLoader, 0 workers)" in banner, banner
    assert (run / "run.json").is_file() and not (run / "run.json").is_symlink()
