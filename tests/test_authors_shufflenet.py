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
