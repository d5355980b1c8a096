"""acl import-original: checkpoints in the authors' exact format (written here from our models) import exactly."""
import json
import re

import pytest
import torch

from acl_cli import create_model
from acl_cli.checkpoint import load_checkpoint


def _trained_like(arch, csg):
    torch.manual_seed(0)
    model = create_model(arch, csg=csg)
    with torch.no_grad():  # non-trivial BN statistics
        model(torch.randn(8, 3, 32, 32))
    return model.eval()


def authors_resnet_state(model, generator_name="CSG", half=False):
    """Our CIFAR ResNet -> their key names: module. prefix, codes as code/code2, generator in every block."""
    net = {}
    generator = model.state_dict().get("csg.weight")
    for key, value in model.state_dict().items():
        if key == "csg.weight":
            continue
        key = key.replace("conv1.", "conv_1_3x3.") if key.startswith("conv1.") else key
        key = key.replace("bn1.", "bn_1.") if key.startswith("bn1.") else key
        key = re.sub(r"^stage(\d)\.", r"stage_\1.", key)
        key = key.replace("conv_a.codes", "code").replace("conv_b.codes", "code2")
        net["module." + key] = value.clone()
    if generator is not None:
        blocks = sorted({m.group(0) for k in net if (m := re.match(r"module\.stage_\d\.\d+", k))})
        for block in blocks:
            net[f"{block}.{generator_name}.weight"] = generator.clone()
    if half:
        net = {k: v.half() if v.is_floating_point() else v for k, v in net.items()}
    return {"net": net, "acc": 92.37, "epoch": 199}


def authors_densenet_state(model):
    net = {}
    generator = model.state_dict()["csg.weight"]
    for key, value in model.state_dict().items():
        if key == "csg.weight":
            continue
        key = key.replace("conv2.codes", "code2")
        key = "trans3." + key if key.startswith("bn.") else key
        net["module." + key] = value.clone()
    for d in (1, 2, 3):
        for b in range(6):
            net[f"module.dense{d}.{b}.CSG.weight"] = generator.clone()
    return {"net": net, "acc": 94.95, "epoch": 299}


CASES = [
    ("resnet56", {"slice_shape": [12, 12, 3, 3], "code_size": 72}, "CSG", False),
    ("resnet20", {"slice_shape": [16, 16, 3, 3], "code_size": 72}, "CLG", False),
    ("resnet20", {"slice_shape": [16, 16, 3, 3], "code_size": 128}, "CSG", True),
    ("resnet32", None, "CSG", False),
]


@pytest.mark.parametrize("arch,csg,generator_name,half", CASES)
def test_import_resnet_outputs_equal(tmp_path, cli, arch, csg, generator_name, half):
    model = _trained_like(arch, csg)
    src = tmp_path / "ckpt.t7"
    torch.save(authors_resnet_state(model, generator_name, half), src)
    dst = tmp_path / "ours.pt"
    res = cli("import-original", src, "--arch", arch, "--out", dst)
    assert res.exit_code == 0, res.output
    state = load_checkpoint(dst)
    cfg = state["config"]
    assert cfg["model"]["csg"] == (None if csg is None else {**csg, "layout": "flat", "targets": "authors",
                                                            "init": "authors", "init_from": None, "freeze": False})
    assert cfg["data"]["preset"] == "cifar" and state["imported"]["acc"] == 92.37
    assert sum(1 for k in state["model"] if k.endswith("csg.weight")) == (0 if csg is None else 1)
    if half:  # what their float16 file holds
        with torch.no_grad():
            for p in list(model.parameters()) + list(model.buffers()):
                if p.is_floating_point():
                    p.copy_(p.half().float())
    imported = create_model(arch, csg=cfg["model"]["csg"])
    imported.load_state_dict(state["model"])
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(imported.eval()(x), model(x), rtol=0, atol=0)


def test_import_densenet_and_eval_an_image_folder(tmp_path, cli):
    from PIL import Image

    model = _trained_like("densenet_bc_40_12", {"slice_shape": [12, 12, 3, 3], "code_size": 72})
    src, dst = tmp_path / "ckpt.t7", tmp_path / "dn.pt"
    torch.save(authors_densenet_state(model), src)
    assert cli("import-original", src, "--arch", "densenet_bc_40_12", "--out", dst).exit_code == 0
    folder = tmp_path / "cifar"
    g = torch.Generator().manual_seed(0)
    for name in ["airplane", "automobile"]:
        (folder / "test" / name).mkdir(parents=True)
        for i in range(3):
            pixels = torch.randint(0, 256, (32, 32, 3), generator=g, dtype=torch.uint8).numpy()
            Image.fromarray(pixels).save(folder / "test" / name / f"{i}.png")
    res = cli("eval", dst, "--set", "data.name=imagefolder", "--set", f"data.root={folder}", "--split", "test",
              "--format", "json")
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.output)
    # the same numbers by hand: the authors' normalisation, our model with their weights
    from torchvision.transforms import v2
    tf = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                     v2.Normalize((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))])
    xs, ys = [], []
    for c, name in enumerate(["airplane", "automobile"]):
        for i in range(3):
            xs.append(tf(Image.open(folder / "test" / name / f"{i}.png").convert("RGB")))
            ys.append(c)
    with torch.no_grad():
        logits = model(torch.stack(xs))
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor(ys)).item()
    assert metrics["samples"] == 6 and metrics["loss"] == pytest.approx(loss, rel=1e-5)


def test_refuses_what_does_not_fit(tmp_path, cli):
    model = _trained_like("resnet20", {"slice_shape": [16, 16, 3, 3], "code_size": 72})
    src = tmp_path / "ckpt.t7"
    torch.save(authors_resnet_state(model), src)
    res = cli("import-original", src, "--arch", "resnet56", "--out", tmp_path / "x.pt")
    assert res.exit_code == 2 and "does not fit resnet56 with a CSG: missing" in res.stderr
    assert not (tmp_path / "x.pt").exists()
    res = cli("import-original", src, "--arch", "densenet_bc_40_12", "--out", tmp_path / "x.pt")
    assert res.exit_code == 2 and "does not fit densenet_bc_40_12" in res.stderr
    res = cli("import-original", src, "--arch", "resnet50", "--out", tmp_path / "x.pt")
    assert res.exit_code == 2 and "supports the authors' CIFAR ResNets, DenseNet-BC, ShuffleNetV2 and MobileNetV2" in res.stderr
    broken = authors_resnet_state(model)
    broken["net"]["module.stage_1.0.code"] = torch.zeros(3, 72)
    torch.save(broken, src)
    res = cli("import-original", src, "--arch", "resnet20", "--out", tmp_path / "x.pt")
    assert res.exit_code == 2 and "stage1.0.conv_a.codes: (3, 72), expected (1, 72)" in res.stderr
    torch.save({"state_dict": {}}, src)
    res = cli("import-original", src, "--arch", "resnet20", "--out", tmp_path / "x.pt")
    assert res.exit_code == 2 and "not in the authors' format" in res.stderr
    assert not (tmp_path / "x.pt").exists()


def test_warns_when_generator_copies_differ(tmp_path, cli):
    model = _trained_like("resnet20", {"slice_shape": [16, 16, 3, 3], "code_size": 72})
    data = authors_resnet_state(model)
    data["net"]["module.stage_3.2.CSG.weight"] += 1.0
    torch.save(data, tmp_path / "ckpt.t7")
    res = cli("import-original", tmp_path / "ckpt.t7", "--arch", "resnet20", "--out", tmp_path / "o.pt")
    assert res.exit_code == 0
    assert "warning: 1 of 9 generator copies differ" in res.stderr and "stage_3.2.CSG.weight" in res.stderr
