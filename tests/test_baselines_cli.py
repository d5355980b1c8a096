"""Every command on the authors' six baselines, from their shipped configs: count-params (--per-layer too), train
(one step on synthetic images), eval, export to every format and bench, each checked by what it gives."""
import csv
import json
import re
import warnings

import pytest
import torch

from acl_cli import create_model
from acl_cli.evaluate import load_model
from acl_cli.export import FORMATS
from acl_cli.models import MODELS
from authors_code import THEIRS
from test_baselines import AUTHORS_COUNTS

SIX = list(THEIRS)
TINY = ["data.name=synthetic", "data.synthetic_size=8", "data.batch_size=8", "data.workers=0", "train.epochs=1",
        "train.progress=false"]  # one step of 8 images; 2 held-out images
ORIGINAL_COUNTS = {"resnet56": 853_018, "densenet_bc_40_48": 2_733_130}  # the originals bench sets beside them
_runs = {}


def _sets(pairs):
    return [a for pair in pairs for a in ("--set", pair)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``acl train`` of a shipped baseline config, once per name for every test of this module."""
    from click.testing import CliRunner

    from acl_cli.cli import main

    def run(name):
        if name not in _runs:
            out = tmp_path_factory.mktemp(name) / "run"
            res = CliRunner().invoke(main, ["train", "--config", f"cifar10/{name}", "--out", str(out), *_sets(TINY)],
                                     catch_exceptions=False)
            _runs[name] = (out, res)
        return _runs[name]
    return run


@pytest.mark.parametrize("name", SIX)
def test_count_params(cli, name):
    res = cli("count-params", "--config", f"cifar10/{name}", "--per-layer", "--format", "json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    frozen = 93_312 if name.endswith("_gcnn") and name.startswith("densenet") else 0  # their unused CSG
    assert (report["total"], report["frozen"], report["trainable"]) == (AUTHORS_COUNTS[name], frozen,
                                                                       AUTHORS_COUNTS[name] - frozen)
    model = create_model(name)
    convs = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}  # p4 and separable too
    rows = {row["name"]: row for row in report["layers"]}  # every conv, and the classifier
    assert set(rows) - set(convs) == {"classifier" if name.startswith("resnet") else "linear"}
    assert sum(rows[n]["params"] for n in convs) == report["by_kind"]["conv"]
    for n, m in convs.items():
        assert rows[n]["shape"] == list(m.weight.shape) and rows[n]["params"] == sum(p.numel() for p in m.parameters())
    original = MODELS[name].baseline_of  # compression and MACs ratio against the network it stands in for
    assert (report["original_arch"], report["original_total"]) == (original, ORIGINAL_COUNTS[original])
    assert report["compression"] == round(ORIGINAL_COUNTS[original] / AUTHORS_COUNTS[name], 4)
    original_macs = json.loads(cli("count-params", "--config", f"cifar10/{original}", "--format", "json").output)["macs"]
    assert report["macs"]["original_per_image"] == original_macs["per_image"]
    assert report["macs"]["ratio"] == round(report["macs"]["per_image"] / original_macs["per_image"], 4)
    table = cli("count-params", "--arch", name, "--per-layer").output
    assert re.search(rf"^total +{AUTHORS_COUNTS[name]:,}$", table, re.M)
    assert re.search(rf"^original total \({original}\) +{ORIGINAL_COUNTS[original]:,}$", table, re.M)
    assert re.search(rf"^{re.escape(list(convs)[-1])} ", table, re.M)  # the last conv's row


@pytest.mark.parametrize("name", SIX)
def test_train(trained, name, cli):
    run, res = trained(name)
    assert res.exit_code == 0, res.output
    assert f"{name}: {AUTHORS_COUNTS[name]:,} params, 8 train / 2 val images" in res.output
    final = json.loads((run / "final.json").read_text())
    assert final["params"] == AUTHORS_COUNTS[name] and final["epochs"] == 1 and final["val_samples"] == 2
    counted = json.loads((run / "params.json").read_text())
    original = MODELS[name].baseline_of  # the run records its compression against the network it stands in for
    assert (counted["total"], counted["original_arch"], counted["original_total"]) == (
        AUTHORS_COUNTS[name], original, ORIGINAL_COUNTS[original])
    assert counted["compression"] == round(ORIGINAL_COUNTS[original] / AUTHORS_COUNTS[name], 4)
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1"] and rows[0]["step"] == "1"
    report = json.loads(cli("report", run, "--format", "json").output)
    assert report[0]["compression"] == counted["compression"] and report[0]["trainable"] == counted["trainable"]


@pytest.mark.parametrize("name", SIX)
def test_eval(trained, cli, name):
    run, _ = trained(name)
    res = cli("eval", run, "--format", "json")
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.output)
    final = json.loads((run / "final.json").read_text())  # what training measured on the same images, same weights
    assert metrics["samples"] == 2 and metrics["params"] == AUTHORS_COUNTS[name]
    assert metrics["loss"] == pytest.approx(final["val_loss"], rel=1e-5) and metrics["top1"] == final["val_top1"]


def _exported_logits(path, fmt, name, x):
    if fmt == "state_dict":
        model = create_model(name)
        model.load_state_dict(torch.load(path, weights_only=True), strict=True)
        return model.eval()(x)
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.jit.load(str(path))(x)
    if fmt == "pt2":
        return torch.export.load(str(path)).module()(x)
    ort = pytest.importorskip("onnxruntime")
    return torch.from_numpy(ort.InferenceSession(str(path)).run(None, {"images": x.numpy()})[0])


@pytest.mark.parametrize("name", SIX)
def test_export_every_format(trained, cli, tmp_path, name):
    run, _ = trained(name)
    model, _, _ = load_model(run / "best.pt")
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        for fmt in FORMATS:
            out = tmp_path / f"model.{fmt}"
            res = cli("export", run, "--out", out, "--format", fmt)
            assert res.exit_code == 0, res.output
            torch.testing.assert_close(_exported_logits(out, fmt, name, x), expected, rtol=1e-4, atol=1e-4)
        res = cli("export", run, "--out", tmp_path / "compact.pt", "--compact")
        assert res.exit_code == 0, res.output
        torch.testing.assert_close(load_model(tmp_path / "compact.pt")[0](x), expected, rtol=0, atol=0)


@pytest.mark.parametrize("name", SIX)
def test_bench_against_the_original(cli, name):
    res = cli("bench", "--config", f"cifar10/{name}", "--device", "cpu", "--batch-size", "2", "--steps", "1",
              "--repeats", "1", "--format", "json")
    assert res.exit_code == 0, res.output
    r = json.loads(res.output)
    original = MODELS[name].baseline_of
    assert (r["subject"], r["arch"], r["original_arch"]) == ("baseline", name, original)
    assert (r["csg"]["params"], r["original"]["params"]) == (AUTHORS_COUNTS[name], ORIGINAL_COUNTS[original])
    assert r["ratios"]["params"] == pytest.approx(AUTHORS_COUNTS[name] / ORIGINAL_COUNTS[original])
    assert r["csg"]["train_img_s"] == pytest.approx(2 / (r["csg"]["train_step_ms"] / 1e3))
    assert r["csg"]["macs"] > 0 and r["original"]["macs"] > 0 and r["csg"]["generation_macs"] == 0


def test_a_baseline_distils_from_a_baseline_teacher(trained, cli, tmp_path):
    """Distillation with baselines on both sides: resnet56_gcnn learns from the trained resnet56_sep run; the run
    records its teacher and the report names it."""
    teacher, res = trained("resnet56_sep")
    assert res.exit_code == 0, res.output
    out = tmp_path / "student"
    res = cli("train", "--config", "cifar10/resnet56_gcnn", "--out", out, *_sets(TINY),
              "--set", f"distill.teacher={teacher}", "--set", "distill.alpha=0.9", "--set", "distill.temperature=4")
    assert res.exit_code == 0, res.output
    progress = torch.load(out / "last.pt", weights_only=True)["progress"]
    assert progress["teacher"]["source"] == f"{teacher} (resnet56_sep)"  # the teacher's run and arch, its weights
    assert len(progress["teacher"]["sha256"]) == 64
    report = json.loads(cli("report", out, "--format", "json").output)
    assert report[0]["arch"] == "resnet56_gcnn" and report[0]["distilled"].startswith(f"from {teacher.name}")


def test_a_csg_on_a_baseline_is_counted_against_that_baseline(cli):
    """The twin of a CSG network is the same network without CSG, a baseline too: count-params then says when
    the CSG makes it larger (as bench compares it), instead of hiding it behind the baseline's original."""
    sets = ["--set", "model.arch=resnet20_sep"]
    csg = json.loads(cli("count-params", "--config", "quickstart", *sets, "--format", "json").output)
    plain = json.loads(cli("count-params", "--config", "quickstart", *sets, "--set", "model.csg=null",
                           "--format", "json").output)
    assert (csg["original_arch"], csg["original_total"]) == ("resnet20_sep", plain["total"])
    assert csg["compression"] == round(plain["total"] / csg["total"], 4) < 1
    assert plain["original_arch"] == "resnet20" and plain["compression"] > 1
