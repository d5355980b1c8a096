"""The authors' CIFAR ShuffleNetV2: our registered family has their layout and counts, and their published
checkpoints (tests/fixtures/authors, MIT) import and classify real CIFAR-10 images."""
import json
from pathlib import Path

import pytest
import torch

from acl_cli import create_model
from acl_cli.csg import GeneratedConv2d

FIXTURES = Path(__file__).parent / "fixtures" / "authors"
CSG = {"slice_shape": [16, 16, 1, 1], "code_size": 16}  # their SLICE_SHAPE and CODE_SIZE


def _their_count(name):
    net = torch.load(FIXTURES / name, weights_only=True, map_location="cpu")["net"]
    return sum(v.numel() for k, v in net.items() if "running_" not in k and "num_batches" not in k)


def test_counts_and_layout_match_their_checkpoints():
    original, csg = create_model("shufflenet_v2_0_5"), create_model("shufflenet_v2_0_5", csg=CSG)
    assert sum(p.numel() for p in original.parameters()) == _their_count("shufflenetv2_0_5.t7") == 352_042
    assert sum(p.numel() for p in csg.parameters()) == _their_count("shufflenetv2_0_5_csg.t7") == 171_818
    generated = [n for n, m in csg.named_modules() if isinstance(m, GeneratedConv2d)]
    assert generated == ["conv2"]  # targets: authors = their final 1x1 conv only (their `code2`)
    pointwise = create_model("shufflenet_v2_0_5", csg={**CSG, "targets": ["pointwise"]})  # every 1x1, head too
    ones = [m for m in original.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1)]
    assert len([m for m in pointwise.modules() if isinstance(m, GeneratedConv2d)]) == len(ones) == 3 * 3 + 13 * 2 + 1


def test_binary_init_is_their_bcsg_generator():
    torch.manual_seed(0)
    model = create_model("shufflenet_v2_0_5", csg={**CSG, "init": "binary", "freeze": True})
    assert set(model.csg.weight.unique().tolist()) == {-0.5, 0.5} and not model.csg.weight.requires_grad


@pytest.mark.parametrize("name,csg", [("shufflenetv2_0_5.t7", False), ("shufflenetv2_0_5_csg.t7", True)])
def test_their_checkpoints_import_and_classify_real_cifar10(tmp_path, cli, name, csg):
    from cifar_jpeg import SHARED_TAR, extract_balanced

    out = tmp_path / "imported.pt"
    res = cli("import-original", FIXTURES / name, "--arch", "shufflenet_v2_0_5", "--out", out)
    assert res.exit_code == 0, res.output
    assert ("CSG slice [16, 16, 1, 1], code 16" in res.output) == csg
    if not SHARED_TAR.is_file():
        pytest.skip("the CIFAR-10 JPEG tar is not in ../shared/data")
    root = extract_balanced(tmp_path / "cifar", per_class=50)  # real CIFAR-10 training images (JPEG)
    (root / "train").rename(root / "test")  # an evaluation-only folder
    ev = json.loads(cli("eval", out, "--set", "data.name=imagefolder", "--set", f"data.root={root}",
                        "--set", "data.val_split=0", "--split", "test", "--format", "json").output)
    assert ev["samples"] == 500 and ev["top1"] > 80  # images they trained on; chance is 10


# ---- their CIFAR MobileNetV2 (Implementations/CIFAR10/models/mobilenetv2_bcsg.py)

THEIR_CFG = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def _their_mobilenet_expansions():
    """(in, planes) of each block's 1x1 expansion conv, from their cfg table (in_planes starts at 32)."""
    convs, in_planes = [], 32
    for expansion, out_planes, n, _ in THEIR_CFG:
        for _ in range(n):
            convs.append((in_planes, expansion * in_planes))
            in_planes = out_planes
    return convs


def test_mobilenet_v2_counts_layout_and_binary_generator_are_theirs():
    import math

    original = create_model("mobilenet_v2_cifar")
    model = create_model("mobilenet_v2_cifar", csg={**CSG, "freeze": True})  # init: authors = their binary one
    plain = 2_296_922  # their MobileNetV2(org=True) for 10 classes
    convs = _their_mobilenet_expansions()
    expected = plain - sum(i * o for i, o in convs) + sum(math.ceil(i / 16) * math.ceil(o / 16) * 16 for i, o in convs) \
        + 16 * 16 * 16
    assert sum(p.numel() for p in original.parameters()) == plain
    assert sum(p.numel() for p in model.parameters()) == expected == 1_595_322
    generated = [(n, m.in_channels, m.out_channels) for n, m in model.named_modules() if isinstance(m, GeneratedConv2d)]
    assert [(i, o) for _, i, o in generated] == convs and all(n.endswith(".conv1") for n, _, _ in generated)
    assert set(model.csg.weight.unique().tolist()) == {-0.5, 0.5} and not model.csg.weight.requires_grad


def test_a_checkpoint_in_their_mobilenet_format_imports_exactly(tmp_path, cli):
    """Their MOBILENETV2_CSG file is not retrievable: this one is written in its format (module. prefixes,
    `CSG.weight` repeated per block, `layers.N.code1`) from a model of ours, and must come back identical."""
    torch.manual_seed(0)
    ours = create_model("mobilenet_v2_cifar", csg=CSG).eval()
    theirs = {}
    for key, value in ours.state_dict().items():
        if key == "csg.weight":
            theirs["module.CSG.weight"] = value
            for i in range(len(ours.layers)):
                theirs[f"module.layers.{i}.CSG.weight"] = value
        else:
            theirs["module." + key.replace(".conv1.codes", ".code1")] = value
    torch.save({"net": theirs, "acc": 91.5, "epoch": 180}, tmp_path / "ckpt.t7")
    res = cli("import-original", tmp_path / "ckpt.t7", "--arch", "mobilenet_v2_cifar", "--out", tmp_path / "m.pt")
    assert res.exit_code == 0, res.output
    from acl_cli.evaluate import load_model

    imported, _, _ = load_model(tmp_path / "m.pt")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(imported(x), ours(x))


def test_a_file_of_another_family_or_size_is_refused(tmp_path, cli):
    for arch in ("mobilenet_v2_cifar", "shufflenet_v2_1_0"):
        res = cli("import-original", FIXTURES / "shufflenetv2_0_5_csg.t7", "--arch", arch, "--out", tmp_path / "x.pt")
        assert res.exit_code == 2 and "does not fit" in res.stderr, res.output
        assert not (tmp_path / "x.pt").exists()
