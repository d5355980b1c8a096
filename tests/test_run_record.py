"""Numbers a researcher can quote: the right split under each name, honest records of how a run was made,
logs that compare, output that survives a pipe."""
import json
import os
import stat
import subprocess
import sys

import pytest
import torch
from PIL import Image

from acl_cli.config import load_config
from acl_cli.training import TrainingInterrupted, train

SMALL = ["model.arch=resnet20", "model.csg={slice_shape: [16, 16, 3, 3], code_size: 72}", "data.name=digits",
         "data.val_split=0.2", "data.train_subset=64", "data.batch_size=32", "data.workers=0", "train.epochs=1",
         "train.progress=false"]


def quiet(*args, **kwargs):
    pass


def _folder(root, counts):
    """An image folder with ``counts[split]`` images in each of two classes; the colour tells the class."""
    for split, n in counts.items():
        for c, colour in (("cat", (200, 30, 30)), ("dog", (30, 30, 200))):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (32, 32), tuple(min(255, v + i) for v in colour)).save(root / split / c / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def three_folders(tmp_path_factory):
    root = _folder(tmp_path_factory.mktemp("imgs"), {"train": 50, "val": 15, "test": 35})
    run = root.parent / "run"
    lines = []
    train(load_config(None, ["model.arch=resnet20", "model.num_classes=2", "data.name=imagefolder",
                             f"data.root={root}", "data.batch_size=20", "data.workers=0", "train.epochs=1",
                             "train.progress=false"]), run, log=lines.append)
    return root, run, lines


def test_val_and_test_folders_are_not_confused(three_folders, cli):
    root, run, lines = three_folders
    assert f"100 train / 30 val images (val: {root / 'val'}/)" in lines[0]  # validates on val/, not test/
    assert json.loads((run / "final.json").read_text())["val_samples"] == 30
    for split, samples, source in (("test", 70, f"{root / 'test'}/"), ("val", 30, f"{root / 'val'}/")):
        res = json.loads(cli("eval", run, "--split", split, "--format", "json").output)
        assert (res["samples"], res["source"]) == (samples, source)
    assert cli("eval", run, "--split", "test").output.startswith(f"test ({root / 'test'}/): top1")


def test_report_says_where_best_was_chosen_and_counts_evaluation_time(three_folders, tmp_path, cli):
    root, run, _ = three_folders
    rows = json.loads(cli("report", run, "--format", "json").output)
    record = json.loads((run / "run.json").read_text())
    # under the data root: not the folder of the machine that trained the run
    assert record["splits"]["val"] == f"{root}/val/" and rows[0]["selected_on"] == "val/"
    import csv
    with open(run / "metrics.csv") as f:
        row = next(csv.DictReader(f))
    assert float(row["eval_time"]) > 0
    assert rows[0]["wall_min"] == round((float(row["epoch_time"]) + float(row["eval_time"])) / 60, 1)
    cifar = train(load_config(None, SMALL[:3] + ["data.name=synthetic", "data.synthetic_size=64", "data.batch_size=32",
                                                 "data.workers=0", "train.epochs=1", "train.progress=false"]),
                  tmp_path / "synthetic", log=quiet)
    assert cifar["val_source"] == "synthetic test (selection on the test set)"


def test_more_outputs_than_classes_is_a_warning_on_the_first_line(tmp_path):
    lines = []
    train(load_config(None, SMALL + ["model.num_classes=12"]), tmp_path / "run", log=lines.append)
    assert lines[0] == ("warning: model.num_classes is 12 but digits has 10 classes: 2 outputs are never a "
                        "target")


def test_run_json_records_how_each_session_started(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(TrainingInterrupted):
        train(load_config(None, SMALL + ["train.epochs=2"]), run, stop_after_steps=1, log=quiet)
    train(load_config(None, SMALL + ["train.epochs=2"]), run, resume=True, log=quiet)
    record = json.loads((run / "run.json").read_text())
    first, second = record["sessions"]
    assert first["resumed_at_step"] is None and second["resumed_at_step"] == 1
    assert first["versions"]["torch"] == torch.__version__ and first["processes"] == 1
    assert first["versions"]["python"] == ".".join(map(str, sys.version_info[:3]))
    assert first["git_commit"] is None or len(first["git_commit"].split("+")[0]) == 40
    assert record["splits"]["val"] == "20% of digits held out (class-balanced, split_seed 0)"


def test_hparams_are_written_when_the_run_starts_with_one_key_each(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    run = tmp_path / "run"
    with pytest.raises(TrainingInterrupted):  # a run that has not finished still shows in the HParams view
        train(load_config(None, SMALL + ["train.epochs=2"]), run, stop_after_steps=1, log=quiet)
    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    data = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = data.session_start_info.hparams
    assert hparams["model.csg.code_size"].number_value == 72
    assert hparams["model.csg.slice_shape"].string_value == "[16, 16, 3, 3]"
    assert hparams["data.train_subset"].number_value == 64 and hparams["optim.lr"].number_value == 0.05


def test_piped_output_has_plain_lines_not_carriage_returns(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {arch: resnet20}\n")
    sets = [a for s in SMALL[2:] + ["train.progress=true", "train.log_every_steps=1", "data.train_subset=96"]
            for a in ("--set", s)]
    res = subprocess.run([sys.executable, "-m", "acl_cli", "train", "--config", str(cfg), "--out",
                          str(tmp_path / "run"), *sets], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "\r" not in res.stdout + res.stderr
    assert "  epoch 1/1 step 2/3  loss " in res.stdout  # one plain line per log interval


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_files_respect_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        train(load_config(None, SMALL), tmp_path / "run", log=quiet)
    finally:
        os.umask(old)
    for name in ("last.pt", "best.pt", "metrics.csv", "config.yaml", "final.json"):
        assert stat.S_IMODE((tmp_path / "run" / name).stat().st_mode) == mode, name


def test_a_run_that_crashed_before_its_first_checkpoint_does_not_suggest_resume(tmp_path, cli):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text('{"splits": {}, "sessions": [{"started": "2026-12-03T10:00:00+00:00"}]}')
    (run / "config.yaml").write_text("model: {arch: resnet20}\n")  # what a crash in epoch 1 leaves
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {arch: resnet20}\n")
    res = cli("train", "--config", cfg, "--out", run, *[a for s in SMALL for a in ("--set", s)])
    assert res.exit_code == 2 and "--resume" not in res.stderr
    assert "it has no checkpoint to resume; use --overwrite to start it again" in res.stderr


@pytest.mark.parametrize("reader", ["head -1", "true"])  # true leaves before acl writes: a sure broken pipe
def test_list_models_into_head_exits_quietly(reader):
    res = subprocess.run(f"{sys.executable} -m acl_cli list-models | {reader}; exit ${{PIPESTATUS[0]}}",
                         shell=True, executable="/bin/bash", capture_output=True, text=True)
    assert res.returncode == 0 and res.stderr == ""
    assert res.stdout.startswith("densenet121 ") if reader.startswith("head") else res.stdout == ""
