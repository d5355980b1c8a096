"""CSG on any network: torchvision models by name, a user's factory by import path, from Python."""
import json
import math
import sys

import pytest
import torch
import torchvision
from torch import nn

from acl_cli import create_model
from acl_cli.csg import GeneratedConv2d, conv_role, convert, materialize

SLICE_3x3 = {"slice_shape": [16, 16, 3, 3], "code_size": 32}


def independent_count(plain: nn.Module, slice_shape, code_size, targets) -> int:
    """The count a conversion must give, from the plain model alone: its parameters, less each eligible conv's
    kernel, plus that conv's ceil(out/S0) * ceil(in/S1) codes, plus one generator."""
    s0, s1, kh, kw = slice_shape
    total = sum(p.numel() for p in plain.parameters())
    convs = [m for m in plain.modules() if isinstance(m, nn.Conv2d)]
    for i, m in enumerate(convs):
        role = "stem" if i == 0 else "grouped" if m.groups > 1 else "pointwise" if m.kernel_size == (1, 1) else "block"
        if role in targets and m.kernel_size == (kh, kw):
            total += math.ceil(m.out_channels / s0) * math.ceil(m.in_channels / s1) * code_size - m.weight.numel()
    return total + s0 * s1 * kh * kw * code_size


@pytest.mark.parametrize("name,csg", [
    ("resnet18", SLICE_3x3),
    ("mobilenet_v2", {"slice_shape": [16, 16, 1, 1], "code_size": 16, "targets": ["pointwise"]}),
    ("efficientnet_b0", {"slice_shape": [16, 16, 1, 1], "code_size": 16, "targets": ["pointwise"]}),
    ("vgg11", SLICE_3x3),
    ("densenet121", SLICE_3x3),
])
def test_a_converted_torchvision_model_is_exact_trains_and_exports(name, csg):
    torch.manual_seed(0)
    model = create_model(f"torchvision:{name}", num_classes=10, csg=csg).eval()
    plain_twin = torchvision.models.get_model(name, weights=None, num_classes=10)
    targets = csg.get("targets", ["block"])
    assert sum(p.numel() for p in model.parameters()) == independent_count(plain_twin, csg["slice_shape"],
                                                                            csg["code_size"], targets)
    assert any(isinstance(m, GeneratedConv2d) for m in model.modules())
    x = torch.randn(2, 3, 64, 64)
    plain = materialize(model).eval()
    with torch.no_grad():
        got = model(x)
        torch.testing.assert_close(got, plain(x), rtol=1e-4, atol=1e-4)
    # the exported state_dict loads into the plain torchvision model, which computes the same
    plain_twin.load_state_dict(plain.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(plain_twin.eval()(x), got, rtol=1e-4, atol=1e-4)
    model.train()  # one training step moves codes and generator
    before = model.csg.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    nn.functional.cross_entropy(model(x), torch.tensor([1, 2])).backward()
    opt.step()
    assert not torch.equal(before, model.csg.weight)


def test_the_zoo_and_a_converted_twin_are_the_same_network(cli):
    def total(*args):
        return json.loads(cli("count-params", *args, "--format", "json").output)["total"]

    zoo = total("--arch", "resnet50", "--slice-shape", "16,16,3,3", "--code-size", "128")
    assert zoo == total("--arch", "torchvision:resnet50", "--slice-shape", "16,16,3,3", "--code-size", "128") == 15_163_432


def test_mobilenet_v2_pointwise_count_from_a_config(tmp_path, cli):
    cfg = tmp_path / "m.yaml"
    cfg.write_text('model: {arch: "torchvision:mobilenet_v2", num_classes: 1000, csg: {slice_shape: [16, 16, 1, 1], '
                   "code_size: 64, targets: [pointwise]}}\n")
    report = json.loads(cli("count-params", "--config", cfg, "--format", "json").output)
    assert report["total"] == 1_928_808
    assert report["original_total"] == 3_504_872  # torchvision's MobileNetV2


def test_roles_are_read_off_the_conv_and_a_model_with_nothing_eligible_is_refused(cli):
    first, dw, pw, block = (nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3, groups=8), nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 3))
    assert [conv_role(first, True), conv_role(pw, False), conv_role(block, False)] == ["stem", "pointwise", "block"]
    depthwise = nn.Sequential(first, dw, pw)  # a depthwise 3x3 is a "block" by shape but is never generated
    with pytest.raises(ValueError, match=r"this model has stem 3x3 \(1\), grouped 3x3 \(1\), pointwise 1x1 \(1\)"):
        convert(depthwise, [8, 8, 3, 3], 8)
    res = cli("count-params", "--arch", "torchvision:regnet_y_400mf", "--slice-shape", "16,16,3,3", "--code-size", "8")
    assert res.exit_code == 2
    assert "this model has stem 3x3 (1), pointwise 1x1 (68), grouped 3x3 (16) (grouped convs are never generated)" \
        in res.stderr


def test_convert_keeps_stride_padding_dilation_and_bias():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 16, 3, stride=2, padding=2, dilation=2, bias=True))
    bias = model[1].bias.detach().clone()
    generator = convert(model, [8, 8, 3, 3], 8)
    conv = model[1]
    assert isinstance(conv, GeneratedConv2d) and isinstance(model[0], nn.Conv2d)  # the stem stays plain
    assert (conv.stride, conv.padding, conv.dilation) == ((2, 2), (2, 2), (2, 2)) and torch.equal(conv.bias, bias)
    assert generator is model.csg
    x = torch.randn(1, 3, 20, 20)
    torch.testing.assert_close(model(x), materialize(model)(x))


def test_unknown_and_missing_external_models_are_one_line(cli, monkeypatch):
    res = cli("count-params", "--arch", "torchvision:resnet9000")
    assert res.exit_code == 2 and "unknown torchvision model 'resnet9000'" in res.stderr
    monkeypatch.setitem(sys.modules, "timm", None)  # as if timm were not installed
    res = cli("count-params", "--arch", "timm:resnet18")
    assert res.exit_code == 2 and "timm:resnet18 needs timm: pip install -e '.[timm]'" in res.stderr
    res = cli("count-params", "--arch", "no_such_module:net")
    assert res.exit_code == 2 and "cannot import no_such_module" in res.stderr


def test_a_user_factory_trains_and_evaluates_from_the_cli(tmp_path, cli, monkeypatch):
    (tmp_path / "my_nets.py").write_text(
        "from torch import nn\n"
        "def tiny(num_classes=10):\n"
        "    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),\n"
        "                         nn.Conv2d(16, 32, 3, padding=1, stride=2), nn.BatchNorm2d(32), nn.ReLU(),\n"
        "                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes))\n"
        "tiny.input_size = 32\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = tmp_path / "c.yaml"
    cfg.write_text('model: {arch: "my_nets:tiny", csg: {slice_shape: [8, 8, 3, 3], code_size: 16}}\n'
                   "data: {name: digits, val_split: 0.2, train_subset: 64, batch_size: 32, workers: 0}\n"
                   "train: {epochs: 1, progress: false}\n")
    res = cli("train", "--config", cfg, "--out", tmp_path / "run")
    assert res.exit_code == 0, res.output
    assert "my_nets:tiny CSG" in res.output
    ev = json.loads(cli("eval", tmp_path / "run", "--format", "json", "--allow-import", "my_nets").output)
    assert ev["samples"] == 359 and ev["params"] == json.loads((tmp_path / "run" / "final.json").read_text())["params"]
    # downstream on a converted model: resume, export (plain state_dict and TorchScript), bench
    res = cli("train", "--resume", tmp_path / "run", "--set", "train.epochs=2", "--allow-import", "my_nets")
    assert res.exit_code == 0 and "epoch   2/2" in res.output, res.output
    assert cli("export", tmp_path / "run", "--out", tmp_path / "plain.pt", "--allow-import", "my_nets").exit_code == 0
    import my_nets

    plain = my_nets.tiny(num_classes=10)
    plain.load_state_dict(torch.load(tmp_path / "plain.pt", weights_only=True))  # the user's own, unconverted
    from acl_cli.evaluate import load_model

    converted, _, _ = load_model(tmp_path / "run", allow_imports=("my_nets",))
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(x), converted(x), rtol=1e-4, atol=1e-4)
    assert cli("export", tmp_path / "run", "--out", tmp_path / "m.ts", "--format", "torchscript",
               "--allow-import", "my_nets").exit_code == 0
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(tmp_path / "m.ts")(x), converted(x), rtol=1e-4, atol=1e-4)
    bench = json.loads(cli("bench", "--config", cfg, "--device", "cpu", "--batch-size", "8", "--steps", "1",
                           "--repeats", "1", "--format", "json").output)
    assert bench["csg"]["params"] == ev["params"] and bench["original"]["params"] == sum(
        p.numel() for p in my_nets.tiny(num_classes=10).parameters())


@pytest.mark.slow
def test_a_converted_mobilenet_v2_trains_and_evaluates(tmp_path, cli):
    cfg = tmp_path / "c.yaml"
    cfg.write_text('model: {arch: "torchvision:mobilenet_v2", num_classes: 10, csg: {slice_shape: [16, 16, 1, 1], '
                   "code_size: 64, targets: [pointwise]}}\n"
                   "data: {name: synthetic, synthetic_size: 64, image_size: 32, val_split: 0, batch_size: 16, "
                   "workers: 0}\n"
                   "train: {epochs: 1, progress: false}\n")
    res = cli("train", "--config", cfg, "--out", tmp_path / "run")
    assert res.exit_code == 0, res.output
    ev = json.loads(cli("eval", tmp_path / "run", "--format", "json").output)
    assert ev["samples"] == 16 and ev["loss"] == ev["loss"]


def test_pretrained_weights_of_the_original_network_load_around_the_generated_kernels(tmp_path):
    from acl_cli.config import load_config
    from acl_cli.models.build import build_model

    torch.manual_seed(1)
    source = torchvision.models.resnet18(num_classes=10)
    torch.save(source.state_dict(), tmp_path / "r18.pth")
    cfg = load_config(None, ['model.arch=torchvision:resnet18', "model.num_classes=10",
                             "model.csg={slice_shape: [16, 16, 3, 3], code_size: 32}",
                             f"model.pretrained={tmp_path / 'r18.pth'}"])
    model = build_model(cfg)
    assert torch.equal(model.fc.weight, source.fc.weight) and torch.equal(model.bn1.running_var, source.bn1.running_var)
    assert torch.equal(model.conv1.weight, source.conv1.weight)  # the stem is plain: its weights load
    torch.save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "bad.pth")
    from acl_cli.errors import UserError
    with pytest.raises(UserError, match=r"does not fit this model: .* problems, e.g. fc.weight is \(3, 3\), the model "
                                        r"has \(1000, 512\); .* set model.pretrained_exclude: \[fc\]"):
        build_model(load_config(None, ['model.arch=torchvision:resnet18', f"model.pretrained={tmp_path / 'bad.pth'}"]))


def test_a_timm_model_converts_like_its_torchvision_twin(cli):
    """timm is an optional extra: skipped where it is not installed."""
    pytest.importorskip("timm")
    args = ["--slice-shape", "16,16,3,3", "--code-size", "128", "--format", "json"]
    timm_count = json.loads(cli("count-params", "--arch", "timm:resnet18", *args).output)["total"]
    assert timm_count == json.loads(cli("count-params", "--arch", "torchvision:resnet18", "--set",
                                        "model.csg.targets=[block]", *args).output)["total"] == 1_609_256
    model = create_model("timm:resnet18", num_classes=10, csg=SLICE_3x3).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), materialize(model)(x), rtol=1e-4, atol=1e-4)
