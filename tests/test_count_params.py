"""Exact parameter counts (the authors' figures) and the count-params command."""
import json

import pytest

from acl_cli import create_model
from acl_cli.config import load_config
from acl_cli.params import report_for_config

AUTHORS = [  # arch, slice shape, code size, original, CSG (ORIGINAL.md)
    ("resnet20", "16,16,3,3", 72, 269_722, 176_698),
    ("resnet56", "12,12,3,3", 72, 853_018, 160_450),
    ("resnet56", "16,16,3,3", 128, 853_018, 347_162),
]


@pytest.mark.parametrize("arch,shape,code,original,csg", AUTHORS)
def test_authors_counts_via_cli(cli, arch, shape, code, original, csg):
    res = cli("count-params", "--arch", arch, "--slice-shape", shape, "--code-size", code, "--format", "json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["total"] == report["trainable"] == csg
    assert report["original_total"] == original
    assert report["compression"] == round(original / csg, 4)
    assert sum(report["by_kind"].values()) == csg
    plain = json.loads(cli("count-params", "--arch", arch, "--format", "json").output)
    assert plain["total"] == plain["original_total"] == original and plain["compression"] == 1.0


@pytest.mark.parametrize("arch,shape,code,original,csg", AUTHORS)
def test_authors_counts_on_real_models(arch, shape, code, original, csg):
    model = create_model(arch, csg={"slice_shape": [int(s) for s in shape.split(",")], "code_size": code})
    assert sum(p.numel() for p in model.parameters()) == csg
    assert sum(p.numel() for p in create_model(arch).parameters()) == original


def test_breakdown_and_unused_codes_resnet56():
    cfg = load_config(None, ["model.arch=resnet56", "model.csg.slice_shape=[12,12,3,3]", "model.csg.code_size=72"])
    r = report_for_config(cfg.model)
    assert r.by_kind == {"generator": 1296 * 72, "codes": 861 * 72, "conv": 432, "norm": 4064,
                         "classifier": 650, "other": 0}
    assert (r.num_codes, r.unused_codes, r.unused_code_params) == (861, 105, 7560)
    rows = {row.name: row for row in r.layers}
    assert rows["stage3.1.conv_a"].generated and rows["stage3.1.conv_a"].slices == 36
    assert rows["stage3.1.conv_a"].params == 36 * 72 and rows["stage3.1.conv_a"].shape == [64, 64, 3, 3]
    assert not rows["conv1"].generated and rows["conv1"].params == 432


def test_config_file_and_formats(cli, tmp_path):
    cfg = tmp_path / "m.yaml"
    cfg.write_text("model:\n  arch: resnet20\n  csg: {slice_shape: [16, 16, 3, 3], code_size: 72, layout: tile}\n")
    res = cli("count-params", "--config", cfg, "--per-layer", "--format", "csv")
    assert res.exit_code == 0
    lines = res.output.splitlines()
    assert "total,176698" in lines and "csg.layout,tile" in lines and "unused_codes,0" in lines
    assert sum(1 for line in lines if ",generated," in line) == 18
    md = cli("count-params", "--config", cfg, "--set", "model.csg=null", "--format", "markdown").output
    assert "| total | 269,722 |" in md
    table = cli("count-params", "--config", cfg, "--per-layer").output
    assert "compression" in table and "stage3.2.conv_b" in table


@pytest.mark.parametrize("args,message", [
    (["--arch", "resnet57"], "unknown arch 'resnet57'; valid: "),
    (["--arch", "resnet56", "--slice-shape", "12,12,3", "--code-size", "72"], "slice_shape: expected 4 positive"),
    (["--arch", "resnet56", "--slice-shape", "a,b", "--code-size", "72"], "--slice-shape 'a,b'"),
    (["--arch", "resnet56", "--slice-shape", "12,12,3,3", "--code-size", "0"], "code_size: must be a positive"),
    (["--arch", "resnet56", "--set", "model.csg.slice_shap=[1]"], "did you mean 'slice_shape'"),
    (["--arch", "resnet56", "--set", "model"], "expected key=value"),
    (["--config", "does/not/exist.yaml"], "config file not found: does/not/exist.yaml"),
    ([], "give --config FILE or --arch NAME"),
])
def test_bad_input_is_one_line_and_exit_2(cli, args, message):
    res = cli("count-params", *args)
    assert res.exit_code == 2
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert "Traceback" not in res.output


def test_every_command_help_has_an_example(cli):
    from acl_cli.cli import main
    top = cli("--help")
    assert top.exit_code == 0
    for name in main.commands:
        assert name in top.output
        assert "Example" in cli(name, "--help").output, name
