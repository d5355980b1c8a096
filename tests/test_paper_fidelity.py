"""What the paper's rows need: the convs the authors generated, their counts, their recipes, their init.

Every expected number here is derived from the authors' own files (hamedomidvar/associativeconv), written
out with its source, and never from acl's code.
"""
import math
import re
from pathlib import Path

import pytest
import torch

from acl_cli import create_model
from acl_cli.config import load_config
from acl_cli.csg import GeneratedConv2d
from acl_cli.optim import milestone_epochs

ROOT = Path(__file__).resolve().parents[1]


def authors_count(original: int, generated: list[tuple[int, int]], slice_side: int, code_size: int) -> int:
    """The authors' parameter count: the original network less each generated 3x3 kernel, plus its codes
    (``ceil(in/S) * ceil(out/S)`` of them, ``torch.randn([num_slices, CODE_SIZE])``) and one generator
    ``nn.Linear(CODE_SIZE, S*S*9, bias=False)``."""
    kernels = sum(i * o * 9 for i, o in generated)
    codes = sum(math.ceil(i / slice_side) * math.ceil(o / slice_side) * code_size for i, o in generated)
    return original - kernels + codes + slice_side * slice_side * 9 * code_size


def _basic_stages(widths, blocks, first_in):
    """(in, out) of the two 3x3 convs of every basic block, stage by stage: [(first, second), ...]."""
    convs, inplanes = [], first_in
    for width, n in zip(widths, blocks):
        for _ in range(n):
            convs.append(((inplanes, width), (width, width)))
            inplanes = width
    return convs


def _bottleneck_3x3(blocks):
    """(in, out) of each bottleneck's 3x3 conv: width 64, 128, 256, 512 per stage."""
    return [(w, w) for w, n in zip((64, 128, 256, 512), blocks) for _ in range(n)]


def _densenet_bc_3x3(growth, per_block=6):
    """(in, out) of each bottleneck's 3x3 conv in DenseNet-BC: 4k -> k (models/densenet_bcsg.py)."""
    return [(4 * growth, growth)] * (3 * per_block)


# arch, slice side, code size, original total, generated (in, out), module names holding codes; sources:
# CIFAR ResNet: Implementations/CIFAR10/models/resnet_bcsg.py (both 3x3 convs of a block, `code`, `code2`);
# DenseNet-BC: models/densenet_bcsg.py (the bottleneck's 3x3, `code2`); ImageNet ResNet:
# Implementations/Imagenet-1000/models/resnet.py (ResNet-18 = BasicBlock2: only conv1 `code1`; ResNet-34 =
# BasicBlock: both; ResNet-50/101 = Bottleneck: the 3x3 `code2`). Original totals: the plain networks of the
# same files (torchvision's for ImageNet: resnet18 11,689,512, resnet34 21,797,672, resnet50 25,557,032,
# resnet101 44,549,160).
CIFAR_RESNET_56 = [c for pair in _basic_stages((16, 32, 64), (9, 9, 9), 16) for c in pair]
CIFAR_RESNET_20 = [c for pair in _basic_stages((16, 32, 64), (3, 3, 3), 16) for c in pair]
IMAGENET_18 = _basic_stages((64, 128, 256, 512), (2, 2, 2, 2), 64)
IMAGENET_34 = _basic_stages((64, 128, 256, 512), (3, 4, 6, 3), 64)
PRESETS = [
    ("resnet56", 12, 72, 853_018, CIFAR_RESNET_56, r"stage\d\.\d+\.conv_[ab]"),
    ("resnet20", 16, 72, 269_722, CIFAR_RESNET_20, r"stage\d\.\d+\.conv_[ab]"),
    ("densenet_bc_40_36", 12, 72, 1_542_682, _densenet_bc_3x3(36), r"dense\d\.\d+\.conv2"),
    ("densenet_bc_40_48", 12, 72, 2_733_130, _densenet_bc_3x3(48), r"dense\d\.\d+\.conv2"),
    ("resnet18", 16, 128, 11_689_512, [first for first, _ in IMAGENET_18], r"layer\d\.\d+\.conv1"),
    ("resnet34", 16, 128, 21_797_672, [c for pair in IMAGENET_34 for c in pair], r"layer\d\.\d+\.conv[12]"),
    ("resnet50", 16, 128, 25_557_032, _bottleneck_3x3((3, 4, 6, 3)), r"layer\d\.\d+\.conv2"),
    ("resnet101", 16, 128, 44_549_160, _bottleneck_3x3((3, 4, 23, 3)), r"layer\d\.\d+\.conv2"),
]


@pytest.mark.parametrize("arch,side,code,original,generated,names", PRESETS, ids=[p[0] for p in PRESETS])
def test_the_authors_preset_generates_exactly_their_convs(arch, side, code, original, generated, names):
    csg = {"slice_shape": [side, side, 3, 3], "code_size": code}  # targets: authors, the default
    model = create_model(arch, csg=csg)
    assert sum(p.numel() for p in create_model(arch).parameters()) == original
    assert sum(p.numel() for p in model.parameters()) == authors_count(original, generated, side, code)
    holders = [name for name, m in model.named_modules() if isinstance(m, GeneratedConv2d)]
    assert len(holders) == len(generated) and all(re.fullmatch(names, n) for n in holders), holders
    assert [(m.in_channels, m.out_channels) for m in model.modules() if isinstance(m, GeneratedConv2d)] == generated


def test_the_paper_imagenet_resnet18_count_and_the_block_choice(cli):
    import json

    base = ["count-params", "--arch", "resnet18", "--num-classes", "1000", "--slice-shape", "16,16,3,3",
            "--code-size", "128", "--format", "json"]
    assert json.loads(cli(*base).output)["total"] == 7_527_976  # the figure, from their BasicBlock2
    both = json.loads(cli(*base, "--set", "model.csg.targets=[block]").output)["total"]
    assert both == authors_count(11_689_512, [c for pair in IMAGENET_18 for c in pair], 16, 128) == 1_609_256
    layers = json.loads(cli(*base, "--per-layer").output)["layers"]
    generated = {row["name"] for row in layers if row["generated"]}
    assert "layer1.0.conv1" in generated and "layer1.0.conv2" not in generated


def test_the_shipped_imagenet_resnet18_csg_config_says_which_preset_it_uses():
    cfg = load_config(ROOT / "configs" / "imagenet" / "resnet18_csg_16_128.yaml")
    assert cfg.model.csg.targets == "authors"


# ---- recipes: the shipped configs against the authors' training scripts

# Implementations/CIFAR10/main.py and ORIGINAL.md: SGD momentum 0.9, no Nesterov, wd 5e-4 on all parameters,
# lr 0.05 -> 0.005 -> 0.0005 at epochs 100 and 150 of 200, batch 192 (ResNet) / 128 (DenseNet).
CIFAR_RECIPE = {"optim": ("sgd", 0.05, 0.9, False, 5e-4, True, True), "milestones": [100, 150], "gamma": 0.1,
                "epochs": 200}
# Implementations/Imagenet-1000/main.py: optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4),
# steps = [30, 30, 30, 10] (lr / 10 before each phase after the first): 100 epochs, milestones 30, 60, 90;
# batch 256 (ORIGINAL.md).
IMAGENET_RECIPE = {"optim": ("sgd", 0.1, 0.9, False, 1e-4, True, True), "milestones": [30, 60, 90], "gamma": 0.1,
                   "epochs": 100}


@pytest.mark.parametrize("path", sorted(p for p in (ROOT / "configs").glob("*/*.yaml") if p.parent.name != "base"),
                         ids=lambda p: p.stem)
def test_each_shipped_config_runs_the_authors_recipe(path):
    cfg = load_config(path)
    recipe = CIFAR_RECIPE if path.parent.name == "cifar10" else IMAGENET_RECIPE
    o = cfg.optim
    assert (o.name, o.lr, o.momentum, o.nesterov, o.weight_decay, o.decay_csg, o.decay_norm) == recipe["optim"]
    assert cfg.schedule.name == "multistep" and cfg.schedule.gamma == recipe["gamma"]
    assert cfg.train.epochs == recipe["epochs"] and cfg.optim.lr_scaling == "none"
    assert milestone_epochs(cfg.schedule, cfg.train.epochs) == pytest.approx(recipe["milestones"])
    expected_batch = 256 if path.parent.name == "imagenet" else 128 if "densenet" in path.stem else 192
    assert cfg.data.batch_size == expected_batch


# ---- the reproduction script: each paper row runs the config and count the table claims

# (config, parameters, the authors' CIFAR-10 top-1): ORIGINAL.md's table and counts; the DenseNet-BC CSG rows
# are 12x12/72 for both widths (their published checkpoints DNBC4036-CSG1212-72 and DNBC4048-CSG-1212-72).
PAPER_ROWS = [
    ("resnet20", 269_722, "91.98"), ("resnet20_csg_16_72", 176_698, "91.64"),
    ("resnet56", 853_018, "93.95"), ("resnet56_csg_12_72", 160_450, "92.37"),
    ("resnet56_csg_16_128", 347_162, "92.96"),
    ("densenet_bc_40_36", 1_542_682, "94.96"), ("densenet_bc_40_36_csg_12_72", 842_842, "94.95"),
    ("densenet_bc_40_48", 2_733_130, "95.01"), ("densenet_bc_40_48_csg_12_72", 1_416_394, "95.15"),
]


def test_the_reproduction_script_and_readme_table_run_the_paper_rows():
    script = (ROOT / "scripts" / "reproduce_cifar10.sh").read_text()
    listed = re.search(r"for exp in (.*?); do", script, re.S).group(1).replace("\\", " ").split()
    assert listed == [row[0] for row in PAPER_ROWS]
    readme = (ROOT / "README.md").read_text()
    for config, params, top1 in PAPER_ROWS:
        cfg = load_config(ROOT / "configs" / "cifar10" / f"{config}.yaml")
        model = create_model(cfg.model.arch, cfg.model.num_classes, cfg.model.csg)
        assert sum(p.numel() for p in model.parameters()) == params, config
        assert re.search(rf"\| `{config}` \| {params:,} \| [\d.]+× \| [\d,]+ \| (?:–|[\d,]+) \| {re.escape(top1)} \|", readme), config


# ---- init


def test_authors_init_zeroes_the_cifar_resnet_classifier_bias():
    """resnet_bcsg.py: every nn.Linear gets kaiming_normal weights and a zero bias."""
    for csg in (None, {"slice_shape": [12, 12, 3, 3], "code_size": 72}):
        torch.manual_seed(0)
        model = create_model("resnet56", csg=csg)
        assert torch.equal(model.classifier.bias, torch.zeros(10))
        assert model.classifier.weight.std().item() == pytest.approx(math.sqrt(2 / 64), rel=0.15)  # kaiming, fan-in


# ---- dilation


@pytest.mark.parametrize("dilation,stride", [(2, 1), (4, 1), (2, 2)])
def test_a_dilated_generated_conv_equals_nn_conv2d_with_its_kernel(dilation, stride):
    from acl_cli.csg import GeneratedConvFactory, SliceGenerator, attach_generator

    torch.manual_seed(0)
    generator = SliceGenerator([8, 8, 3, 3], 16)
    conv = GeneratedConvFactory(generator, ("block",))(16, 24, 3, stride=stride, padding=dilation,
                                                         dilation=dilation, role="block")
    holder = torch.nn.Module()
    holder.conv = conv
    attach_generator(holder, generator)
    x = torch.randn(2, 16, 17, 17)
    plain = torch.nn.Conv2d(16, 24, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
    with torch.no_grad():
        got = holder.conv(x)
        plain.weight.copy_(conv.weight)
    assert isinstance(conv, GeneratedConv2d) and conv.dilation == (dilation, dilation)
    torch.testing.assert_close(got, plain(x), rtol=1e-5, atol=1e-5)
    assert got.shape == plain(x).shape
