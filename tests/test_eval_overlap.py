"""acl eval never quietly scores training images: an override that carves the evaluated split from the training
set differently (data.split_seed, val_split, train_subset) is refused naming the overlap, unless
--allow-train-overlap, and then the output says how many images were trained on (issue 36)."""
import json

import pytest
from PIL import Image

from acl_cli.config import load_config
from acl_cli.training import train

from test_sent_files import _one_line_exit_2, quiet


@pytest.fixture
def digits_run(small_run):
    return small_run


def test_a_reshuffled_split_is_refused_naming_the_overlap(cli, digits_run):
    line = _one_line_exit_2(cli("eval", digits_run, "--set", "data.split_seed=1"))
    # digits: 1,797 images, 20% held out = 359; the run trained on a 64-image subset of the other 1,438
    assert "the val split overlaps the images" in line and "of 359 were trained on" in line, line
    assert "--allow-train-overlap" in line
    n = int(line.split(" were trained on")[0].split(": ")[-1].split(" of ")[0])
    assert 0 < n <= 64


def test_allowed_overlap_is_said_in_the_output_and_the_json(cli, digits_run):
    res = cli("eval", digits_run, "--set", "data.val_split=0.5", "--allow-train-overlap", "--format", "json")
    assert res.exit_code == 0, res.output
    m = json.loads(res.output)
    assert m["samples"] == 898 and 0 < m["trained_on"] <= 64
    res = cli("eval", digits_run, "--set", "data.val_split=0.5", "--allow-train-overlap")
    assert res.output.rstrip().endswith(f"({m['trained_on']} of 898 images were trained on)"), res.output


def test_the_runs_own_split_and_its_training_split_are_not_refused(cli, digits_run):
    own = cli("eval", digits_run, "--format", "json")
    assert own.exit_code == 0 and "trained_on" not in json.loads(own.output), own.output
    res = cli("eval", digits_run, "--split", "train", "--format", "json")  # asked for: the training images
    assert res.exit_code == 0 and "trained_on" not in json.loads(res.output)
    # a train_subset that picks other training images leaves the held-out split as it was
    res = cli("eval", digits_run, "--set", "data.train_subset=32", "--format", "json")
    assert res.exit_code == 0 and json.loads(res.output)["top1"] == json.loads(own.output)["top1"]


def _folder(root, per_class=12):
    for c in ("a", "b"):
        (root / "train" / c).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (32, 32), (i * 20, 100 if c == "a" else 0, 50)).save(root / "train" / c / f"{i}.png")
    return root


def test_an_image_folder_run_is_checked_by_its_files(tmp_path, cli):
    data = _folder(tmp_path / "data")
    run = tmp_path / "run"
    sets = ["model.arch=resnet20", "model.num_classes=2", "data.name=imagefolder", f"data.root={data}",
            "data.val_split=0.25", "data.batch_size=6", "data.workers=0", "train.epochs=1", "train.progress=false"]
    train(load_config(None, sets), run, log=quiet)
    line = _one_line_exit_2(cli("eval", run, "--set", "data.split_seed=3"))
    assert "of 6 were trained on" in line, line
    # the same folder moved elsewhere: the same files, still refused (the digest matches)
    moved = tmp_path / "moved"
    data.rename(moved)
    _one_line_exit_2(cli("eval", run, "--set", f"data.root={moved}", "--set", "data.split_seed=3"),
                     "were trained on")
    # other images under the same names' folder structure: not the run's training data, nothing to refuse
    for png in (moved / "train" / "a").iterdir():
        png.rename(png.with_name("x" + png.name))
    res = cli("eval", run, "--set", f"data.root={moved}", "--set", "data.split_seed=3", "--format", "json")
    assert res.exit_code == 0 and "trained_on" not in json.loads(res.output), res.output
