"""Forward MACs (issue 34): exact against the closed form, the CSG's generation apart, in every count-params format,
params.json, acl report and its plot, and acl bench's achieved GFLOP/s."""
import csv
import io
import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from acl_cli import create_model
from acl_cli.csg import GeneratedConv2d

ROOT = Path(__file__).resolve().parents[1]
CSG_20 = ["--arch", "resnet20", "--slice-shape", "16,16,3,3", "--code-size", "72"]


def closed_form(model: nn.Module, side: int) -> dict[str, int]:
    """Per layer: k²·(C_in/groups)·C_out·H_out·W_out for each conv, in·out for each linear layer, with H_out and W_out
    the feature sizes a pass of one side x side image gives."""
    sizes = {}
    layers = {name: m for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, GeneratedConv2d, nn.Linear))}
    hooks = [m.register_forward_hook(lambda m, i, o, name=name: sizes.__setitem__(name, o.shape[-2:]))
             for name, m in layers.items()]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, side, side))
    for h in hooks:
        h.remove()
    macs = {}
    for name, m in layers.items():
        if isinstance(m, nn.Linear):
            macs[name] = m.in_features * m.out_features
        else:
            kh, kw = m.kernel_size
            macs[name] = kh * kw * (m.in_channels // getattr(m, "groups", 1)) * m.out_channels * math.prod(sizes[name])
    return macs


def _json(cli, *args) -> dict:
    res = cli("count-params", *args, "--format", "json", "--per-layer")
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def test_resnet20_macs_are_the_closed_form(cli):
    report = _json(cli, "--arch", "resnet20")
    expected = closed_form(create_model("resnet20"), 32)
    assert report["macs"]["per_image"] == sum(expected.values()) == 40_551_040
    assert {row["name"]: row["macs"] for row in report["layers"]} == expected
    assert report["macs"]["original_per_image"] == report["macs"]["per_image"] and report["macs"]["ratio"] == 1.0
    assert report["macs"]["generation"] == 0 and report["macs"]["other"] == 0
    assert report["macs"]["input_shape"] == [3, 32, 32] and report["macs"]["input_from"] == "resnet20's own size"


@pytest.mark.parametrize("arch,shape,code,layout", [("resnet20", [16, 16, 3, 3], 72, "flat"),
                                                    ("resnet56", [12, 12, 3, 3], 72, "tile")])
def test_a_csg_twin_runs_the_original_convs_and_its_generation_is_the_closed_form(cli, arch, shape, code, layout):
    report = _json(cli, "--arch", arch, "--slice-shape", ",".join(map(str, shape)), "--code-size", code,
                   "--layout", layout)
    original = closed_form(create_model(arch), 32)
    model = create_model(arch, csg={"slice_shape": shape, "code_size": code, "layout": layout})
    generated = {name: code * math.prod(shape) * m.num_slices for name, m in model.named_modules()
                 if isinstance(m, GeneratedConv2d)}
    rows = {row["name"]: row for row in report["layers"]}
    assert {name: row["macs"] for name, row in rows.items()} == original
    assert {name: row["generation_macs"] for name, row in rows.items() if row["generated"]} == generated
    m = report["macs"]
    assert m["per_image"] == m["original_per_image"] == sum(original.values()) and m["ratio"] == 1.0
    assert m["generation"] == sum(generated.values()) == sum(row["generation_macs"] for row in rows.values())


def _table_columns(text: str, header: str, sep: str) -> list[list[str]]:
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(header))
    return [[c.strip() for c in re.split(sep, line.strip().strip("|"))] for line in lines[at + 1:] if line.strip()
            and not line.startswith("|---")]


def test_per_layer_rows_sum_to_the_totals_in_every_format(cli):
    report = _json(cli, *CSG_20)
    per_image, generation = report["macs"]["per_image"], report["macs"]["generation"]
    number = lambda s: int(s.replace(",", ""))  # noqa: E731
    table = cli("count-params", *CSG_20, "--per-layer").output
    rows = _table_columns(table, "layer ", r"\s{2,}")
    assert len(rows) == len(report["layers"]) == 20  # 19 convs and the classifier
    assert sum(number(r[-2]) for r in rows) == per_image and sum(number(r[-1]) for r in rows) == generation
    assert f"MACs             {per_image:,} per image" in table
    assert f"generation MACs  {generation:,} per forward pass, whatever its batch" in table
    md = cli("count-params", *CSG_20, "--per-layer", "--format", "markdown").output
    rows = _table_columns(md, "| layer |", r"\|")
    assert sum(number(r[-2]) for r in rows) == per_image and sum(number(r[-1]) for r in rows) == generation
    assert f"| MACs | {per_image:,} per image" in md
    text = cli("count-params", *CSG_20, "--per-layer", "--format", "csv").output
    summary, layers = text.split("\n\n")
    assert f"macs.per_image,{per_image}" in summary and f"macs.generation,{generation}" in summary
    rows = list(csv.DictReader(io.StringIO(layers)))
    assert sum(int(r["macs"]) for r in rows) == per_image and sum(int(r["generation_macs"]) for r in rows) == generation


def _user_model(tmp_path, monkeypatch, module: str, body: str) -> str:
    """A network of the user's, importable as ``module:net`` (a name of its own: Python keeps what it imported)."""
    (tmp_path / f"{module}.py").write_text(
        "import torch\nfrom torch import nn\n\n"
        "class Net(nn.Module):\n"
        "    def __init__(self, num_classes=10):\n"
        "        super().__init__()\n"
        "        self.conv = nn.Conv2d(3, 16, 3, padding=1)\n"
        "        self.body = nn.Conv2d(16, 16, 3, padding=1)\n"
        "        self.w = nn.Parameter(torch.zeros(16, num_classes))\n"
        "    def forward(self, x):\n" + body +
        "net = Net\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return f"{module}:net"


def test_macs_in_no_conv_or_linear_layer_are_a_row_of_their_own(cli, tmp_path, monkeypatch):
    arch = _user_model(tmp_path, monkeypatch, "net_with_a_product", "        return self.body(self.conv(x)).mean((2, 3)) @ self.w\n")
    report = _json(cli, "--arch", arch, "--slice-shape", "16,16,3,3", "--code-size", "8")  # generates the body
    convs = 3 * 3 * 3 * 16 * 224 * 224 + 3 * 3 * 16 * 16 * 224 * 224  # the arch's own size: 224
    assert report["macs"]["per_image"] == convs + 16 * 10 and report["macs"]["other"] == 16 * 10
    assert report["macs"]["generation"] == 8 * 16 * 16 * 9 * 1  # the body conv: one 16x16 slice
    table = cli("count-params", "--arch", arch, "--per-layer").output
    (other,) = [line for line in table.splitlines() if line.startswith("(other ops)")]
    assert other.split()[-2] == "160"


def test_an_external_arch_is_counted_at_the_configs_image_size(cli, tmp_path):
    import torchvision

    report = _json(cli, "--arch", "torchvision:resnet18", "--set", "data.image_size=64")
    assert report["macs"]["input_shape"] == [3, 64, 64] and report["macs"]["input_from"] == "data.image_size"
    assert report["macs"]["per_image"] == sum(closed_form(torchvision.models.resnet18(), 64).values())
    own = _json(cli, "--arch", "torchvision:resnet18", "--slice-shape", "16,16,3,3", "--code-size", "32")
    assert own["macs"]["input_shape"] == [3, 224, 224] and own["macs"]["input_from"] == "torchvision:resnet18's own size"
    assert own["macs"]["per_image"] == own["macs"]["original_per_image"] == 1_814_073_344  # torchvision's 1.81 GFLOPS
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {arch: 'torchvision:resnet18', num_classes: 10}\ndata: {name: cifar10}\n")
    assert _json(cli, "--config", cfg)["macs"]["input_shape"] == [3, 32, 32]  # the config's data: CIFAR images
    cfg.write_text(f"model: {{arch: 'torchvision:resnet18'}}\ndata: {{name: imagefolder, root: {tmp_path / 'none'}}}\n")
    m = _json(cli, "--config", cfg)["macs"]
    assert m["input_shape"] == [3, 224, 224] and "no data at" in m["input_from"]
    (tmp_path / "bad" / "train" / "cat").mkdir(parents=True)
    (tmp_path / "bad" / "train" / "cat" / "a.jpg").write_text("no image")  # the count stands, at the arch's size
    m = _json(cli, "--arch", "resnet20", "--set", "data.name=imagefolder", "--set", f"data.root={tmp_path / 'bad'}")["macs"]
    assert m["per_image"] == 40_551_040 and m["input_from"].startswith("resnet20's own size, the data's first image: ")


def test_a_model_that_cannot_be_counted_keeps_its_parameter_report(cli, tmp_path, monkeypatch):
    arch = _user_model(tmp_path, monkeypatch, "net_that_raises", "        raise RuntimeError('this net needs a second input')\n")
    res = cli("count-params", "--arch", arch, "--per-layer")
    assert res.exit_code == 0 and "Traceback" not in res.output
    assert re.search(r"^MACs +not counted: RuntimeError: this net needs a second input$", res.output, re.M)
    assert "total" in res.output and all(line.split()[-2:] == ["-", "0"] for line in res.output.splitlines()
                                         if line.startswith(("conv ", "body ")))
    report = _json(cli, "--arch", arch)
    assert report["total"] == 448 + 2320 + 160 and report["macs"]["per_image"] is None
    assert report["macs"]["error"] == "RuntimeError: this net needs a second input"

    class Refuses:  # the counter itself failing, whatever the model
        def __init__(self, *a, **k):
            pass

        def __enter__(self):
            raise NotImplementedError("no formula for this op")

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr("acl_cli.compute.FlopCounterMode", Refuses)
    res = cli("count-params", *CSG_20, "--format", "markdown")
    assert res.exit_code == 0 and "| MACs | not counted: NotImplementedError: no formula for this op |" in res.output
    assert "| total | 176,698 |" in res.output


def test_a_model_that_reads_tensor_values_is_counted_on_the_cpu(cli, tmp_path, monkeypatch):
    """Meta tensors hold no values: a forward that reads one (.item()) is counted on a CPU copy instead; one too large
    to build there only to count is refused by name."""
    arch = _user_model(tmp_path, monkeypatch, "net_that_reads_values",
                       "        y = self.body(self.conv(x))\n"
                       "        return (y * 2 if y.abs().max().item() >= 0 else y).mean((2, 3)) @ self.w\n")
    report = _json(cli, "--arch", arch, "--set", "data.image_size=8")
    assert report["macs"]["per_image"] == (3 * 16 + 16 * 16) * 9 * 8 * 8 + 16 * 10 and report["macs"]["error"] == ""
    report = _json(cli, "--arch", arch, "--set", "data.image_size=4096")
    assert report["macs"]["error"] == "ValueError: a 3x4096x4096 image is too large to run on the CPU only to count"
    assert report["total"] == 2928  # the parameters still stand
    monkeypatch.setattr("acl_cli.compute.MAX_CPU_COUNT_PARAMS", 1000)
    report = _json(cli, "--arch", arch, "--set", "data.image_size=8")
    assert report["macs"]["error"] == "ValueError: 2,928 parameters are too many to build on the CPU only to count"


def test_counting_changes_neither_the_model_nor_the_random_stream():
    from acl_cli.compute import add_macs, count_macs
    from acl_cli.config import load_config
    from acl_cli.params import report_for_config

    model = create_model("resnet20", csg={"slice_shape": [16, 16, 3, 3], "code_size": 72})
    model.train()
    model.stage1[0].bn_a.eval()  # a mixed mode is put back as it was
    before = {k: v.clone() for k, v in model.state_dict().items()}
    counted = count_macs(model, [3, 32, 32])  # on the CPU, real tensors
    assert model.training and not model.stage1[0].bn_a.training and model.stage1[0].bn_b.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN statistics too
    cfg = load_config(None, ["model.arch=resnet20", "model.csg={slice_shape: [16, 16, 3, 3], code_size: 72}"])
    state = torch.random.get_rng_state()
    macs = add_macs(report_for_config(cfg.model), cfg.model, [3, 32, 32], "test").macs  # on meta tensors
    assert torch.equal(state, torch.random.get_rng_state())
    assert (macs.per_image, macs.generation) == (counted.per_image, counted.generation) == (40_551_040, 19_243_008)


def test_a_runs_params_json_carries_its_macs(small_run, cli):
    params = json.loads((small_run / "params.json").read_text())
    assert params["macs"] == {"input_shape": [3, 32, 32], "input_from": "the run's images", "per_image": 40_551_040,
                              "generation": 19_243_008, "original_per_image": 40_551_040, "ratio": 1.0, "other": 0,
                              "error": ""}
    assert sum(row["macs"] for row in params["layers"]) == 40_551_040


def _copy_run(src: Path, dst: Path, macs=...) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.pt", "tb"))
    if macs is not ...:
        params = json.loads((dst / "params.json").read_text())
        if macs is None:
            del params["macs"]
        else:
            params["macs"]["per_image"] = macs
        (dst / "params.json").write_text(json.dumps(params))
    return dst


def test_report_shows_macs_and_a_dash_for_runs_without(small_run, tmp_path, cli):
    runs = [_copy_run(small_run, tmp_path / "new"), _copy_run(small_run, tmp_path / "old", None),
            _copy_run(small_run, tmp_path / "edited", "1e999"), _copy_run(small_run, tmp_path / "negative", -5)]
    res = cli("report", *runs, "--format", "json")
    assert res.exit_code == 0, res.output
    assert [row["macs"] for row in json.loads(res.output)] == [40_551_040, None, None, None]
    md = cli("report", *runs, "--format", "markdown").output.splitlines()
    header = [c.strip() for c in md[0].strip("|").split("|")]
    at = header.index("macs")
    assert [[c.strip() for c in line.strip("|").split("|")][at] for line in md[2:6]] == ["40,551,040", "-", "-", "-"]
    grouped = json.loads(cli("report", runs[0], "--by-seed", "--format", "json").output)
    assert grouped[0]["macs"] == 40_551_040


def test_the_plot_has_top1_against_params_and_against_macs(small_run, tmp_path, cli):
    matplotlib = pytest.importorskip("matplotlib")
    new, old = _copy_run(small_run, tmp_path / "new"), _copy_run(small_run, tmp_path / "old", None)
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text stays text in the SVG
        assert cli("report", new, "--plot", tmp_path / "p.svg").exit_code == 0
        assert cli("report", old, "--plot", tmp_path / "old.svg").exit_code == 0
    svg = (tmp_path / "p.svg").read_text()
    assert ">parameters<" in svg and ">forward MACs per image<" in svg and svg.count(">CSG<") == 2  # two panels
    assert "no run here records" not in svg
    assert "no run here records forward MACs per image" in (tmp_path / "old.svg").read_text()


def test_bench_prints_gflop_s_as_twice_the_counted_macs_times_img_s(cli):
    base = ["bench", "--config", "configs/cifar10/resnet20_csg_16_72.yaml", "--device", "cpu", "--batch-size", "4",
            "--steps", "1", "--repeats", "1"]
    res = cli(*base, "--format", "json")
    assert res.exit_code == 0, res.output
    r = json.loads(res.output)
    for name in ("csg", "original"):
        s = r[name]
        assert s["macs"] == 40_551_040
        assert s["train_gflop_s"] == pytest.approx(2 * s["macs"] * s["train_img_s"] / 1e9)
        assert s["infer_gflop_s"] == pytest.approx(2 * s["macs"] * s["infer_img_s"] / 1e9)
    assert (r["csg"]["generation_macs"], r["original"]["generation_macs"]) == (19_243_008, 0)
    table = cli(*base).output
    cells = {line[:20].strip(): line[20:].split() for line in table.splitlines()[2:]}
    macs = [int(v.replace(",", "")) for v in cells["MACs per image"]]
    assert macs == [40_551_040, 40_551_040]
    for rate, gflop in (("train img/s", "train GFLOP/s (fwd)"), ("inference img/s", "inference GFLOP/s")):
        for i in range(2):  # the printed img/s is rounded to a whole image: the GFLOP/s within that
            img_s = float(cells[rate][i].replace(",", ""))
            assert float(cells[gflop][i]) == pytest.approx(2 * macs[i] * img_s / 1e9, abs=macs[i] / 1e9 + 0.005)


def test_the_readme_count_params_example_is_its_output(cli):
    readme = (ROOT / "README.md").read_text()
    block = readme.split("$ acl count-params --arch resnet56 --slice-shape 12,12,3,3 --code-size 72\n", 1)[1]
    shown = [line for line in block.split("```", 1)[0].splitlines() if line != "..."]
    output = cli("count-params", "--arch", "resnet56", "--slice-shape", "12,12,3,3", "--code-size", "72").output
    lines = output.splitlines()
    assert shown[:3] == lines[:3] and shown[3:] == lines[-len(shown[3:]):]


def test_the_readme_results_table_has_each_configs_params_and_macs(cli):
    """Every row of the README's CIFAR-10 table: params, compression, MACs and generation as count-params gives them
    for its config (a run named for a variant, _lr2, _reuse or _distill, has its config's model)."""
    section = (ROOT / "README.md").read_text().split("## Reproducing the paper", 1)[1]
    table = section[section.index("| config (`configs/cifar10/`)"):].split("\n\n", 1)[0]
    header = table.splitlines()[0]
    columns = [c.strip() for c in header.strip().strip("|").split("|")]
    rows = [dict(zip(columns, [c.strip() for c in line.strip().strip("|").split("|")]))
            for line in table.splitlines() if re.match(r"\| `[a-z0-9_]+` \|", line)]
    assert len(rows) >= 11
    for row in rows:
        name = re.sub(r"(_lr\d+(\.\d+)?)?(_reuse)?(_distill)?$", "", row[columns[0]].strip("`"))
        report = _json(cli, "--config", ROOT / "configs" / "cifar10" / f"{name}.yaml")
        # a run that froze part of them says how many it trained (tests/test_results.py reads that from its run)
        assert re.sub(r" \([\d,]+ trained\)$", "", row["params"]) == f"{report['total']:,}"
        assert row["compression"] == f"{report['compression']:.2f}×"
        assert row["MACs per image"] == f"{report['macs']['per_image']:,}"
        assert row["generation per pass"] == (f"{report['macs']['generation']:,}" if report["csg"] else "–")
