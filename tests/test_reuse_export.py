"""Reusing a trained generator (init_from + freeze) and exporting models."""
import json

import pytest
import torch

from acl_cli import create_model
from acl_cli.checkpoint import load_checkpoint
from acl_cli.config import load_config
from acl_cli.training import train
from acl_cli.errors import UserError

BASE = ["data.name=digits", "data.val_split=0.2", "data.train_subset=96", "data.batch_size=32", "data.workers=0",
        "train.epochs=1", "train.progress=false"]
CSG = "model.csg={slice_shape: [16, 16, 3, 3], code_size: 72}"


def quiet(*a, **k):
    pass


@pytest.fixture(scope="module")
def resnet20_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("r20") / "run"
    train(load_config(None, BASE + ["model.arch=resnet20", CSG]), run, log=quiet)
    return run


def test_frozen_generator_from_a_resnet20_run_stays_bit_identical(resnet20_run, tmp_path, cli):
    source = load_checkpoint(resnet20_run / "last.pt")["model"]["csg.weight"]
    sets = BASE + ["model.arch=resnet56", CSG, f"model.csg.init_from={resnet20_run}", "model.csg.freeze=true"]
    run = tmp_path / "r56"
    train(load_config(None, sets), run, log=quiet)
    state = load_checkpoint(run / "last.pt")["model"]
    assert torch.equal(state["csg.weight"], source)
    fresh = create_model("resnet56", csg={"slice_shape": [16, 16, 3, 3], "code_size": 72})
    assert not torch.equal(state["stage1.0.conv_a.codes"], fresh.stage1[0].conv_a.codes)  # codes trained
    report = json.loads((run / "params.json").read_text())
    assert report["frozen"] == 16 * 16 * 9 * 72 and report["trainable"] == report["total"] - report["frozen"]
    # without freeze the generator starts from the source and then trains
    run2 = tmp_path / "r56b"
    train(load_config(None, sets[:-1]), run2, log=quiet)
    assert not torch.equal(load_checkpoint(run2 / "last.pt")["model"]["csg.weight"], source)


def test_init_from_mismatch_is_a_clear_error(resnet20_run, tmp_path):
    sets = BASE + ["model.arch=resnet20", "model.csg={slice_shape: [16, 16, 3, 3], code_size: 128}",
                   f"model.csg.init_from={resnet20_run / 'last.pt'}"]
    with pytest.raises(UserError, match=r"has a generator for slice \[16, 16, 3, 3\], code 72; this model needs "
                                        r"slice \[16, 16, 3, 3\], code 128"):
        train(load_config(None, sets), tmp_path / "x", log=quiet)
    assert not (tmp_path / "x").exists()
    original = tmp_path / "orig"
    train(load_config(None, BASE + ["model.arch=resnet20"]), original, log=quiet)
    with pytest.raises(UserError, match="holds an original network"):
        train(load_config(None, BASE + ["model.arch=resnet20", CSG, f"model.csg.init_from={original}"]),
              tmp_path / "y", log=quiet)


def _csg_output(run, x):
    model = create_model("resnet20", csg={"slice_shape": [16, 16, 3, 3], "code_size": 72})
    model.load_state_dict(load_checkpoint(run / "last.pt")["model"])
    with torch.no_grad():
        return model.eval()(x)


def test_export_formats_run_without_acl(resnet20_run, tmp_path, cli):
    x = torch.randn(3, 3, 32, 32)
    expected = _csg_output(resnet20_run, x)
    out = tmp_path / "plain.pt"
    assert cli("export", resnet20_run / "last.pt", "--out", out).exit_code == 0
    plain = create_model("resnet20")  # the original architecture: plain nn.Conv2d everywhere
    plain.load_state_dict(torch.load(out, weights_only=True))
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(x), expected, rtol=1e-4, atol=1e-5)
    ts = tmp_path / "model.ts"
    assert cli("export", resnet20_run / "last.pt", "--out", ts, "--format", "torchscript").exit_code == 0
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.testing.assert_close(torch.jit.load(str(ts))(x), expected, rtol=1e-4, atol=1e-5)
    pt2 = tmp_path / "model.pt2"
    assert cli("export", resnet20_run / "last.pt", "--out", pt2, "--format", "pt2").exit_code == 0
    torch.testing.assert_close(torch.export.load(str(pt2)).module()(x), expected, rtol=1e-4, atol=1e-5)
    res = cli("export", resnet20_run / "last.pt", "--out", pt2, "--format", "pt2")
    assert res.exit_code == 2 and "already exists" in res.stderr


def test_onnx_export(resnet20_run, tmp_path, cli):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    x = torch.randn(3, 3, 32, 32)
    out = tmp_path / "m.onnx"
    assert cli("export", resnet20_run / "last.pt", "--out", out, "--format", "onnx").exit_code == 0
    got = ort.InferenceSession(str(out)).run(None, {"images": x.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), _csg_output(resnet20_run, x), rtol=1e-4, atol=1e-4)


def test_compact_export_is_smaller_and_faithful(resnet20_run, tmp_path, cli):
    full = tmp_path / "plain.pt"
    compact, half = tmp_path / "c.pt", tmp_path / "c16.pt"
    for args in (("--out", full), ("--out", compact, "--compact"), ("--out", half, "--compact", "--fp16")):
        assert cli("export", resnet20_run / "last.pt", *args).exit_code == 0
    assert half.stat().st_size < compact.stat().st_size < full.stat().st_size
    a = json.loads(cli("eval", resnet20_run / "last.pt", "--format", "json").output)
    b = json.loads(cli("eval", compact, "--format", "json").output)
    c = json.loads(cli("eval", half, "--format", "json").output)
    assert a == b and c["samples"] == a["samples"] and c["loss"] == pytest.approx(a["loss"], rel=1e-2)
