"""The authors' baselines (separable, CReLU, p4 G-CNN): their counts, their parameters in their order, their
outputs and running statistics for the same weights, their quirks; and what a CSG does to each."""
import re
from pathlib import Path

import pytest
import torch

from acl_cli import create_model
from acl_cli.authors import convert_state
from acl_cli.csg import GeneratedConv2d
from acl_cli.models import MODELS
from acl_cli.models.cifar_resnet import DEPTHS
from acl_cli.models.densenet_bc import SIZES
from authors_code import THEIRS, build_theirs, perturbed, their_modules

ROOT = Path(__file__).resolve().parents[1]

# Parameters of the authors' modules (sum of numel over .parameters()), obtained by building each with
# tests/authors_code.py from their repository (hamedomidvar/associativeconv at HEAD, Implementations/CIFAR10/models)
# and counting; test_counts_equal_their_modules recounts them wherever that repository is fetched.
AUTHORS_COUNTS = {
    "resnet56_sep": 494_709,
    "resnet56_crelu": 426_834,
    "resnet56_gcnn": 217_618,
    "densenet_bc_40_48_sep": 1_434_853,
    "densenet_bc_40_48_crelu": 1_369_210,
    "densenet_bc_40_48_gcnn": 1_706_914,  # 93,312 of them the CSG their G-CNN DenseNet never calls
}
SIX = list(THEIRS)


@pytest.fixture(scope="module")
def theirs(tmp_path_factory):
    return their_modules(tmp_path_factory)


def _count(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", SIX)
def test_counts_are_the_committed_ones_and_the_config_says_them(name):
    assert _count(create_model(name)) == AUTHORS_COUNTS[name]
    comment = (ROOT / "configs" / "cifar10" / f"{name}.yaml").read_text().splitlines()[0]
    assert f"{AUTHORS_COUNTS[name]:,} params" in comment


@pytest.mark.parametrize("name", SIX)
def test_counts_equal_their_modules(theirs, name):
    assert _count(build_theirs(theirs, name)) == AUTHORS_COUNTS[name]


@pytest.mark.parametrize("name", SIX)
def test_same_parameters_in_their_order_and_same_outputs(theirs, name):
    torch.manual_seed(0)
    reference = perturbed(build_theirs(theirs, name), 1)
    ours = create_model(name)
    mine = [(n, p.shape) for n, p in ours.named_parameters()]
    # their p4 filters (out, in, 4, k, k) are ours (out, 4*in, k, k): the same numbers, one axis fewer
    flat = [p.shape if p.dim() < 5 else torch.Size([p.shape[0], p.shape[1] * p.shape[2], *p.shape[3:]])
            for p in reference.parameters()]
    assert [shape for _, shape in mine] == flat
    state, csg, classes = convert_state(reference.state_dict(), name)
    assert csg is None and classes == 10
    ours.load_state_dict(state, strict=True)
    assert [n for n, _ in mine] == [n for n in state if n in dict(ours.named_parameters())]  # their order, renamed
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), reference.eval()(x), rtol=0, atol=1e-4)
        got, expected = ours.train()(x), reference.train()(x)  # batch statistics, and the running ones updated
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)
    after = convert_state(reference.state_dict(), name)[0]
    for key, value in ours.state_dict().items():
        torch.testing.assert_close(value, after[key], rtol=0, atol=1e-5, msg=key)


def test_every_size_of_the_families_has_its_three_baselines():
    expected = {f"resnet{d}_{v}" for d in DEPTHS for v in ("sep", "crelu", "gcnn")}
    expected |= {f"densenet_bc_{d}_{k}_{v}" for d, k in SIZES for v in ("sep", "crelu", "gcnn")}
    assert {n for n, e in MODELS.items() if e.baseline_of} == expected
    for name in expected:
        assert MODELS[name].baseline_of == name.rsplit("_", 1)[0] and MODELS[name].baseline_of in MODELS
    assert MODELS["resnet56_gcnn"].constructor.__doc__ == (
        "CIFAR ResNet-56 with p4 group convs in every block (the authors' resnet_gcnn.py baseline).")


def _shape_into(module, model, x):
    seen = []
    handle = module.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape)))
    with torch.no_grad():
        model(x)
    handle.remove()
    return seen[0]


def test_the_quirks_kept():
    x = torch.randn(2, 3, 32, 32)
    sep = create_model("densenet_bc_40_48_sep")  # stem: 1x1 with padding 1
    assert _shape_into(sep.dense1, sep, x) == (2, 96, 34, 34) and _shape_into(sep.dense3, sep, x)[-1] == 8
    crelu = create_model("densenet_bc_40_48_crelu").train()  # each BN called twice per CReLU
    crelu(x)
    assert crelu.dense1[0].bn1.num_batches_tracked.item() == 2 and crelu.bn.num_batches_tracked.item() == 2
    resnet = create_model("resnet56_crelu")
    assert [type(b.shortcut).__name__ for b in (resnet.stage1[0], resnet.stage1[1], resnet.stage2[0])] == [
        "LeadingChannels", "Identity", "OptionAShortcut"]
    assert resnet.stage1[0].conv_a.in_channels == 16 and resnet.stage2[1].conv_a.in_channels == 32
    gcnn = create_model("densenet_bc_40_48_gcnn")
    names = [n for n, _ in gcnn.named_parameters()]
    assert names[:2] == ["conv1.weight", "unused_csg.weight"] and not gcnn.unused_csg.weight.requires_grad
    assert gcnn.unused_csg.weight.numel() == 93_312 and gcnn.dense1[0].conv2.out_fields == 12
    sep_resnet = create_model("resnet56_sep")
    first = sep_resnet.stage2[0].conv_a
    assert first.pointwise.stride == (2, 2) and first.depthwise.stride == (1, 1)


@pytest.mark.parametrize("name,generated", [
    ("resnet56_sep", [r"stage\d\.\d+\.conv_b"] * 27),
    ("resnet56_crelu", [r"stage\d\.\d+\.conv_[ab]"] * 54),
    ("densenet_bc_40_48_crelu", [r"dense\d\.\d\.conv2"] * 18),
])
def test_a_csg_generates_the_plain_block_convs(name, generated):
    model = create_model(name, csg={"slice_shape": [12, 12, 3, 3], "code_size": 72})
    names = [n for n, m in model.named_modules() if isinstance(m, GeneratedConv2d)]
    assert len(names) == len(generated) and all(re.fullmatch(p, n) for p, n in zip(generated, names))
    assert _count(model) < AUTHORS_COUNTS[name]
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("name,why,other,generated", [
    ("resnet56_gcnn", "its block convs are p4 group convolutions, which a CSG never generates", "stem", 1),
    ("densenet_bc_40_48_gcnn", "its bottleneck 3x3 convs are p4 group convolutions", "pointwise", 18),
    ("densenet_bc_40_48_sep", "its bottleneck 3x3 convs are depthwise, which a CSG never generates", "pointwise", 36),
])
def test_a_csg_with_nothing_to_generate_is_refused_in_one_line(cli, name, why, other, generated):
    res = cli("count-params", "--arch", name, "--slice-shape", "12,12,3,3", "--code-size", "72")
    assert res.exit_code == 2 and why in res.stderr and len(res.stderr.strip().splitlines()) == 1
    # the roles the note names generate: the 3x3 stem; every 1x1 of a bottleneck (and a separable one's pointwise)
    window = [12, 12, 3, 3] if other == "stem" else [16, 16, 1, 1]
    model = create_model(name, csg={"slice_shape": window, "code_size": 16, "targets": [other]})
    assert len([m for m in model.modules() if isinstance(m, GeneratedConv2d)]) == generated

