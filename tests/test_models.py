"""The model zoo: every architecture runs, original and CSG; materialize is equivalent; torchvision fits."""
import math

import pytest
import torch
import torchvision

from acl_cli import create_model, list_models, materialize
from acl_cli.csg import GeneratedConv2d
from acl_cli.models import MODELS

CSG_3x3 = {"slice_shape": [16, 16, 3, 3], "code_size": 32}
# The authors' baselines build one block at every size of their family (tests/test_baselines.py checks the
# authors' six against their modules): every size but the two largest runs forward here, the smallest with a CSG.
ZOO = [a for a in list_models() if MODELS[a].baseline_of not in ("resnet1202", "densenet_bc_190_40")]
CSG_ZOO = [a for a in ZOO if MODELS[a].baseline_of in (None, "resnet20", "densenet_bc_40_12")]


def _input(arch, batch=2):
    side = 32 if MODELS[arch].input_size == 32 else 64  # 64 px keeps ImageNet nets cheap on CPU
    return torch.randn(batch, 3, side, side)


@pytest.mark.parametrize("arch", ZOO)
def test_original_forward(arch):
    torch.manual_seed(0)
    model = create_model(arch, num_classes=7)
    assert not any(isinstance(m, GeneratedConv2d) for m in model.modules())
    with torch.no_grad():
        assert model(_input(arch)).shape == (2, 7)


def _generating_window(arch):
    """A CSG that generates something in ``arch``: its default targets, or where those find nothing (a baseline
    whose block convs are p4 or depthwise) the roles its refusal names."""
    entry = MODELS[arch]
    ones = {"slice_shape": [16, 16, 1, 1], "code_size": 16}
    if entry.csg_note:
        return {**CSG_3x3, "targets": ["stem"]} if "[stem]" in entry.csg_note else {**ones, "targets": ["pointwise"]}
    return ones if all(t.startswith("pointwise") for t in entry.authors_targets) else CSG_3x3  # ShuffleNetV2: 1x1


@pytest.mark.parametrize("layout", ["flat", "tile"])
@pytest.mark.parametrize("arch", CSG_ZOO)
def test_materialize_equals_csg_model(arch, layout):
    torch.manual_seed(0)
    window = _generating_window(arch)
    model = create_model(arch, num_classes=7, csg={**window, "layout": layout})
    assert any(isinstance(m, GeneratedConv2d) for m in model.modules())
    plain = materialize(model)
    assert not any(isinstance(m, GeneratedConv2d) for m in plain.modules())
    assert not hasattr(plain, "csg")
    x = _input(arch)
    with torch.no_grad():  # train mode: BN uses batch statistics, so the huge authors' kernels stay finite
        expected = model(x)
        got = plain(x)
    assert torch.isfinite(expected).all()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


def test_materialize_equivalence_in_eval_mode():
    torch.manual_seed(0)
    model = create_model("resnet32", csg={"slice_shape": [12, 12, 3, 3], "code_size": 72, "init": "scaled"}).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(materialize(model)(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50", "resnet101", "densenet121"])
def test_torchvision_state_dict_loads_into_original_twin(arch):
    torch.manual_seed(0)
    reference = getattr(torchvision.models, arch)(weights=None).eval()
    ours = create_model(arch, num_classes=1000).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-4, atol=1e-5)


def _count(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("depth,growth", [(40, 12), (40, 36), (40, 48), (100, 12), (190, 40)])
def test_densenet_bc_counts_follow_the_architecture(depth, growth):
    """Closed-form count of the authors' DenseNet-BC, original and with generated bottleneck 3x3 convs."""
    m, k = (depth - 4) // 6, growth
    bn = lambda c: 2 * c  # noqa: E731
    total, planes, codes, s = 3 * 2 * k * 9, 2 * k, 0, 16
    for block in range(3):
        for _ in range(m):
            total += bn(planes) + planes * 4 * k + bn(4 * k) + 4 * k * k * 9
            codes += math.ceil(k / s) * math.ceil(4 * k / s)
            planes += k
        if block < 2:
            out = planes // 2
            total += bn(planes) + planes * out
            planes = out
    total += bn(planes) + planes * 10 + 10
    arch = f"densenet_bc_{depth}_{growth}"
    assert _count(create_model(arch)) == total
    generated_plain = 3 * m * 4 * k * k * 9
    csg_total = total - generated_plain + codes * 32 + 16 * 16 * 9 * 32
    assert _count(create_model(arch, csg=CSG_3x3)) == csg_total


def test_imagenet_resnet50_generates_only_bottleneck_3x3():
    model = create_model("resnet50", num_classes=1000, csg={"slice_shape": [16, 16, 3, 3], "code_size": 128})
    generated = [n for n, m in model.named_modules() if isinstance(m, GeneratedConv2d)]
    assert len(generated) == 16 and all(n.endswith(".conv2") for n in generated)
    counted = {n: m for n, m in model.named_modules()}
    assert isinstance(counted["conv1"], torch.nn.Conv2d)
    assert isinstance(counted["layer1.0.downsample.0"], torch.nn.Conv2d)


def test_targets_widen_what_is_generated():
    all3 = create_model("resnet20", csg={**CSG_3x3, "targets": "all"})
    assert isinstance(all3.conv1, GeneratedConv2d)  # the 3x3 stem too
    pointwise = create_model("densenet_bc_40_12", csg={"slice_shape": [16, 16, 1, 1], "code_size": 16,
                                                       "targets": ["pointwise", "transition"]})
    kinds = {type(m).__name__ for n, m in pointwise.named_modules() if n.endswith(("conv1", "conv2", "trans1.conv"))}
    assert isinstance(pointwise.dense1[0].conv1, GeneratedConv2d)
    assert isinstance(pointwise.trans1.conv, GeneratedConv2d)
    assert not isinstance(pointwise.dense1[0].conv2, GeneratedConv2d)
    assert kinds == {"GeneratedConv2d", "Conv2d"}
    with pytest.raises(ValueError, match="nothing would be generated"):
        create_model("resnet20", csg={"slice_shape": [16, 16, 5, 5], "code_size": 8})


@pytest.mark.parametrize("depth", [19, 21, 7])
def test_bad_depth_is_refused(depth):
    from acl_cli.models.cifar_resnet import CifarResNet
    with pytest.raises(ValueError, match="6n\\+2"):
        CifarResNet(depth)
