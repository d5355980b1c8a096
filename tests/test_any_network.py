"""Any network, faithfully: conv subclasses are never silently replaced, tied weights are refused, exports
take the size a run was trained at, pretrained weights fit another head, and mistakes are found early."""
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from acl_cli.csg import GeneratedConv2d, convert, materialize

SLICE = {"slice_shape": [16, 16, 3, 3], "code_size": 16}


class StdConv2d(nn.Conv2d):
    """Weight standardisation in forward, as timm's StdConv2d."""

    def forward(self, x):
        w = self.weight
        w = (w - w.mean(dim=(1, 2, 3), keepdim=True)) / (w.std(dim=(1, 2, 3), keepdim=True) + 1e-6)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class Conv2dSame(nn.Conv2d):
    """TensorFlow's dynamic 'same' padding, as timm's Conv2dSame: the output size follows the input size."""

    def forward(self, x):
        ih, iw = x.shape[-2:]
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        ph = max((-(-ih // sh) - 1) * sh + kh - ih, 0)
        pw = max((-(-iw // sw) - 1) * sw + kw - iw, 0)
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _net(conv_cls):
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), conv_cls(16, 16, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


@pytest.mark.parametrize("conv_cls,reason", [(StdConv2d, "weight standardisation"),
                                             (Conv2dSame, "dynamic same padding")])
def test_a_conv_subclass_is_kept_plain_and_named(conv_cls, reason):
    torch.manual_seed(0)
    model = _net(conv_cls)
    convert(model, **SLICE, targets=["block"])
    assert type(model[2]) is conv_cls and isinstance(model[4], GeneratedConv2d)
    from acl_cli.csg import kept_plain_summary

    assert kept_plain_summary(model) == f"1 {conv_cls.__name__} ({reason})"
    # the subclass still computes what it did: the exported plain weights, loaded strictly into the user's own
    # network, give the converted network's outputs
    plain = _net(conv_cls)
    plain.load_state_dict(materialize(model).state_dict())
    x = torch.randn(2, 3, 17, 17)  # odd: same padding and a stride would differ; here every size must match
    torch.testing.assert_close(plain.eval()(x), model.eval()(x))


def test_a_model_of_only_subclasses_is_refused_naming_them():
    model = nn.Sequential(nn.Conv2d(3, 16, 3), StdConv2d(16, 16, 3), StdConv2d(16, 16, 3))
    with pytest.raises(ValueError, match=r"kept plain: 2 StdConv2d \(weight standardisation\)"):
        convert(model, **SLICE, targets=["block"])


def test_count_params_and_a_runs_first_lines_name_what_was_kept_plain(tmp_path, cli, monkeypatch):
    (tmp_path / "subnets.py").write_text(textwrap.dedent('''
        import torch.nn as nn, torch.nn.functional as F
        class StdConv2d(nn.Conv2d):
            def forward(self, x):
                w = self.weight
                w = (w - w.mean(dim=(1, 2, 3), keepdim=True)) / (w.std(dim=(1, 2, 3), keepdim=True) + 1e-6)
                return F.conv2d(x, w, self.bias, self.stride, self.padding)
        def net(num_classes=10):
            return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                 StdConv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                 nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))
        '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    res = cli("count-params", "--arch", "subnets:net", "--slice-shape", "16,16,3,3", "--code-size", "16")
    assert res.exit_code == 0, res.output
    line = next(line for line in res.output.splitlines() if line.startswith("kept plain"))
    assert line.split(None, 2)[2] == "1 StdConv2d (weight standardisation)"
    res = cli("train", "--config", "configs/quickstart.yaml", "--out", tmp_path / "run", "--set",
              "model.arch=subnets:net", "--set", "model.csg={slice_shape: [16, 16, 3, 3], code_size: 16}", "--set",
              "train.epochs=1", "--set", "data.train_subset=64", "--set", "train.progress=false")
    assert res.exit_code == 0, res.output
    assert "kept plain: 1 StdConv2d (weight standardisation)" in res.output.splitlines()[1]


def test_timm_conv_subclasses_are_kept_plain(cli):
    pytest.importorskip("timm")
    for arch, targets, kept in (("resnetv2_50x1_bit", "[block]", "StdConv2d (weight standardisation)"),
                                ("nf_resnet26", "[block]", "ScaledStdConv2d (scaled weight standardisation"),
                                ("tf_efficientnet_b0", "[stem]", "Conv2dSame (dynamic same padding)")):
        res = cli("count-params", "--arch", f"timm:{arch}", "--slice-shape", "16,16,3,3", "--code-size", "16",
                  "--set", f"model.csg.targets={targets}")
        assert res.exit_code == 2 and "kept plain: " in res.stderr and kept in res.stderr, (arch, res.stderr)


def test_tied_weights_are_refused_by_name():
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.Conv2d(16, 16, 3), nn.Conv2d(16, 16, 3))
    model[2].weight = model[1].weight
    with pytest.raises(ValueError, match=r"2.weight is the same tensor as 1.weight \(tied weights\)"):
        convert(model, **SLICE, targets=["block"])


def test_convert_checks_its_targets():
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.Conv2d(16, 16, 3))
    generator = convert(model, **SLICE, targets="block")  # one role as a string, not its characters
    assert len(generator.layers) == 1
    with pytest.raises(ValueError, match=r"unknown conv role\(s\) \['blok'\]"):
        convert(nn.Sequential(nn.Conv2d(3, 16, 3), nn.Conv2d(16, 16, 3)), **SLICE, targets=["blok"])
    with pytest.raises(ValueError, match="'block.first' exists in acl's own models only"):
        convert(nn.Sequential(nn.Conv2d(3, 16, 3), nn.Conv2d(16, 16, 3)), **SLICE, targets=["block.first"])


# ---- export at the size a run was trained at


@pytest.fixture
def fixed_head(tmp_path, monkeypatch):
    (tmp_path / "fixed_head.py").write_text(textwrap.dedent('''
        import torch.nn as nn
        def net(num_classes=10):  # a head for 32x32 inputs only
            return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                 nn.Conv2d(16, 16, 3, padding=1, stride=2), nn.BatchNorm2d(16), nn.ReLU(),
                                 nn.Flatten(), nn.Linear(16 * 16 * 16, num_classes))
        '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("fixed_head", None)


SYNTHETIC = ["data.name=synthetic", "data.synthetic_size=64", "data.image_size=32", "data.batch_size=16",
             "data.workers=0", "train.epochs=1", "train.progress=false"]


@pytest.mark.parametrize("fmt", ["torchscript", "pt2", "onnx"])
def test_export_takes_the_runs_input_size(fixed_head, cli, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnx")
        pytest.importorskip("onnxscript")
    run = fixed_head / "run"
    res = cli("train", "--config", "configs/quickstart.yaml", "--out", run,
              *[a for s in SYNTHETIC + ["model.arch=fixed_head:net", "model.csg=null"] for a in ("--set", s)])
    assert res.exit_code == 0, res.output
    out = fixed_head / f"m.{fmt}"
    res = cli("export", run, "--out", out, "--format", fmt, "--allow-import", "fixed_head")
    assert res.exit_code == 0, res.output
    assert "input (batch, 3, 32, 32)" in res.output
    x = torch.randn(5, 3, 32, 32)  # another batch size: the batch is dynamic
    if fmt == "torchscript":
        assert torch.jit.load(out)(x).shape == (5, 10)
    elif fmt == "pt2":
        assert torch.export.load(out).module()(x).shape == (5, 10)
    else:
        ort = pytest.importorskip("onnxruntime")
        session = ort.InferenceSession(str(out))
        assert session.run(None, {"images": x.numpy()})[0].shape == (5, 10)


def test_export_of_torchvision_trained_on_32_pixels_and_a_failure_is_one_line(tmp_path, cli):
    run = tmp_path / "run"
    res = cli("train", "--config", "configs/quickstart.yaml", "--out", run,
              *[a for s in SYNTHETIC + ["model.arch=torchvision:resnet18", "model.num_classes=10",
                                        "model.csg={slice_shape: [16, 16, 3, 3], code_size: 16}"]
                for a in ("--set", s)])
    assert res.exit_code == 0, res.output
    res = cli("export", run, "--out", tmp_path / "m.pt2", "--format", "pt2")
    assert res.exit_code == 0 and "input (batch, 3, 32, 32) from the image shape recorded in the checkpoint" in res.output


def test_an_export_the_tracer_cannot_take_is_one_line(tmp_path, cli, monkeypatch):
    (tmp_path / "branchy.py").write_text(textwrap.dedent('''
        import torch.nn as nn
        class Net(nn.Module):
            def __init__(self, num_classes=10):
                super().__init__()
                self.conv, self.fc = nn.Conv2d(3, 8, 3), nn.Linear(8, num_classes)
            def forward(self, x):
                y = self.conv(x).mean(dim=(2, 3))
                return self.fc(y) if y.sum() > 0 else -self.fc(y)  # data-dependent: torch.export cannot trace it
        def net(num_classes=10):
            return Net(num_classes)
        '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    run = tmp_path / "run"
    res = cli("train", "--config", "configs/quickstart.yaml", "--out", run,
              *[a for s in SYNTHETIC + ["model.arch=branchy:net", "model.csg=null"] for a in ("--set", s)])
    assert res.exit_code == 0, res.output
    res = cli("export", run, "--out", tmp_path / "m.pt2", "--format", "pt2", "--allow-import", "branchy")
    assert res.exit_code == 2 and res.stderr.startswith("error: cannot export branchy:net as pt2: ")
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "m.pt2").exists()


# ---- pretrained weights for another task


def test_pretrained_imagenet_weights_into_a_3_class_model(tmp_path, cli):
    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)  # as downloaded: 1000 classes
    sets = SYNTHETIC + ["model.arch=torchvision:resnet18", "model.num_classes=3", f"model.pretrained={weights}",
                        "model.csg={slice_shape: [16, 16, 3, 3], code_size: 16}"]
    args = ("train", "--config", "configs/quickstart.yaml", "--out", tmp_path / "run",
            *[a for s in sets for a in ("--set", s)])
    res = cli(*args)
    assert res.exit_code == 2 and "fc.weight is (1000, 512), the model has (3, 512)" in res.stderr
    assert "model.pretrained_exclude: [fc]" in res.stderr and not (tmp_path / "run").exists()
    res = cli(*args, "--set", "model.pretrained_exclude=[fc]")
    assert res.exit_code == 0, res.output
    first = res.output.splitlines()[:4]
    line = next(line for line in first if line.startswith("pretrained: "))
    assert f"loaded from {weights}" in line and "not loaded (model.pretrained_exclude): fc.bias, fc.weight" in line
    from acl_cli.checkpoint import load_checkpoint

    state = load_checkpoint(tmp_path / "run" / "last.pt")["model"]
    assert state["fc.weight"].shape == (3, 512)


# ---- errors found before anything is written


def test_a_factory_that_returns_no_module_is_one_line(tmp_path, cli, monkeypatch):
    (tmp_path / "notamodel.py").write_text("def net(num_classes=10):\n    return 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    res = cli("count-params", "--arch", "notamodel:net")
    assert res.exit_code == 2 and "notamodel:net returned int (42), not an nn.Module" in res.stderr


def test_a_one_channel_model_on_rgb_data_fails_before_the_run_folder(tmp_path, cli, monkeypatch):
    (tmp_path / "grey.py").write_text(textwrap.dedent('''
        import torch.nn as nn
        def net(num_classes=10):
            return nn.Sequential(nn.Conv2d(1, 16, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))
        '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    res = cli("train", "--config", "configs/quickstart.yaml", "--out", tmp_path / "run", "--set", "model.arch=grey:net",
              "--set", "model.csg=null")
    assert res.exit_code == 2 and "grey:net does not take the training images (a batch of 3x32x32)" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
