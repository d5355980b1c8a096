"""acl import-original of the authors' six baselines: a checkpoint saved as their main.py saves one
(``{'net': DataParallel state_dict, 'acc', 'epoch'}``) imports, and the imported model gives their module's logits."""
import json
import re

import pytest
import torch
import torch.nn.functional as F

from acl_cli import create_model
from acl_cli.evaluate import load_model
from acl_cli.models.p4_conv import P4ConvP4, weight_to_groupy
from authors_code import THEIRS, build_theirs, perturbed, their_modules

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)  # their main.py's normalisation
CLASSES = ["airplane", "automobile", "bird"]


@pytest.fixture(scope="module")
def theirs(tmp_path_factory):
    return their_modules(tmp_path_factory)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """An image folder of 9 random 32x32 PNGs (3 classes) and the same images as their main.py feeds them."""
    from PIL import Image

    root = tmp_path_factory.mktemp("cifar")
    g = torch.Generator().manual_seed(0)
    xs, ys = [], []
    for c, name in enumerate(CLASSES):
        (root / "test" / name).mkdir(parents=True)
        for i in range(3):
            pixels = torch.randint(0, 256, (32, 32, 3), generator=g, dtype=torch.uint8)
            Image.fromarray(pixels.numpy()).save(root / "test" / name / f"{i}.png")
            xs.append((pixels.permute(2, 0, 1).float() / 255 - torch.tensor(MEAN)[:, None, None])
                      / torch.tensor(STD)[:, None, None])
            ys.append(c)
    return root, torch.stack(xs), torch.tensor(ys)


def their_state(model, name):
    """Our baseline -> the state_dict their module of it has: their key names (a DataParallel ``module.`` prefix),
    GrouPy's p4 weight layout and index buffers, the G-CNN DenseNet's unused ``CSG``."""
    p4 = {f"{n}.weight": m for n, m in model.named_modules() if isinstance(m, P4ConvP4)}
    rules = ([(r"^conv1\.depthwise\.", "conv_dw1."), (r"^conv1\.pointwise\.", "conv_pw1."),
              (r"\.conv_a\.depthwise\.", ".conv_dw1."), (r"\.conv_a\.pointwise\.", ".conv_pw1."),
              (r"^conv1\.", "conv_1_3x3."), (r"^bn1\.", "bn_1."), (r"^stage(\d)\.", r"stage_\1.")]
             if name.startswith("resnet") else
             [(r"^conv1\.depthwise\.", "conv_dw1."), (r"^conv1\.pointwise\.", "conv_pw1."),
              (r"\.conv2\.depthwise\.", ".conv_dw."), (r"\.conv2\.pointwise\.", ".conv_pw."), (r"^bn\.", "trans3.bn."),
              (r"^unused_csg\.", "CSG.")])
    net = {}
    for key, value in model.state_dict().items():
        theirs = key
        for pattern, repl in rules:
            theirs = re.sub(pattern, repl, theirs)
        if key in p4:
            value = weight_to_groupy(value)
            out, fields = p4[key].out_fields, p4[key].in_fields
            net[f"module.{theirs.removesuffix('.weight')}.transform_indices"] = torch.zeros(out, 4, fields, 36,
                                                                                            dtype=torch.long)
        net[f"module.{theirs}"] = value.clone()
    return net


def _import_and_compare(cli, tmp_path, net, name, reference_logits, images, run_eval=True):
    root, x, y = images
    src, dst = tmp_path / "ckpt.t7", tmp_path / "imported.pt"
    torch.save({"net": net, "acc": 71.5, "epoch": 3}, src)
    res = cli("import-original", src, "--arch", name, "--out", dst)
    assert res.exit_code == 0, res.output
    model, cfg, state = load_model(dst)  # what acl eval runs
    assert cfg.model.arch == name and cfg.model.csg is None and state["imported"]["acc"] == 71.5
    with torch.no_grad():
        logits = model(x)
    assert (logits - reference_logits).abs().max().item() <= 1e-4
    if not run_eval:
        return
    res = cli("eval", dst, "--set", "data.name=imagefolder", "--set", f"data.root={root}", "--split", "test",
              "--format", "json")
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.output)
    assert metrics["samples"] == 9
    assert metrics["loss"] == pytest.approx(F.cross_entropy(reference_logits, y).item(), rel=1e-5)
    assert metrics["top1"] == pytest.approx(100 * (reference_logits.argmax(1) == y).float().mean().item())


@pytest.mark.parametrize("name", list(THEIRS))
def test_their_checkpoint_imports_and_evaluates_to_their_logits(theirs, tmp_path, cli, images, name):
    torch.manual_seed(0)
    module = perturbed(build_theirs(theirs, name), 2).eval()
    net = torch.nn.DataParallel(module).state_dict()  # as their main.py wraps the network before saving
    assert all(k.startswith("module.") for k in net)
    assert set(their_state(create_model(name), name)) == set(net)  # the round trip below writes their files' keys
    with torch.no_grad():
        expected = module(images[1])
    _import_and_compare(cli, tmp_path, net, name, expected, images)


@pytest.mark.parametrize("name", list(THEIRS))
def test_our_model_round_trips_through_their_key_names(tmp_path, cli, images, name):
    torch.manual_seed(0)
    model = perturbed(create_model(name), 3).eval()
    with torch.no_grad():
        expected = model(images[1])
    # acl eval's own path from that model to its figures is checked on their modules above (and elsewhere)
    _import_and_compare(cli, tmp_path, their_state(model, name), name, expected, images, run_eval=name.endswith("gcnn"))


def test_a_file_of_another_baseline_is_refused_by_name(tmp_path, cli):
    torch.save({"net": their_state(create_model("resnet20_gcnn"), "resnet20_gcnn"), "acc": 1.0, "epoch": 1},
               tmp_path / "ckpt.t7")
    res = cli("import-original", tmp_path / "ckpt.t7", "--arch", "resnet20_sep", "--out", tmp_path / "x.pt")
    assert res.exit_code == 2 and "does not fit resnet20_sep" in res.stderr and not (tmp_path / "x.pt").exists()
    res = cli("import-original", tmp_path / "ckpt.t7", "--arch", "resnet32_gcnn", "--out", tmp_path / "x.pt")
    assert res.exit_code == 2 and "does not fit resnet32_gcnn: missing" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
