"""YAML configs: bases, overrides, strict typed validation, shipped configs by name, and acl config show."""
from pathlib import Path

import pytest
import yaml

from acl_cli.config import ConfigError, load_config
from acl_cli.models import resolve_model_config
from acl_cli.optim import milestone_epochs
from schedules import lr_per_step

ROOT = Path(__file__).resolve().parents[1]


def test_base_chain_and_overrides(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "root.yaml").write_text("optim: {lr: 0.3, momentum: 0.8}\ntrain: {epochs: 7}\n")
    (tmp_path / "base" / "mid.yaml").write_text("base: root.yaml\noptim: {lr: 0.2}\n")
    (tmp_path / "exp.yaml").write_text("base: base/mid.yaml\nmodel:\n  arch: resnet56\n")
    cfg = load_config(tmp_path / "exp.yaml", ["model.csg.slice_shape=[16,16,3,3]", "model.csg.code_size=128",
                                              "optim.nesterov=true", "data.name=cifar100"])
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.optim.nesterov, cfg.train.epochs) == (0.2, 0.8, True, 7)
    assert cfg.model.arch == "resnet56" and cfg.model.csg.slice_shape == [16, 16, 3, 3]
    assert cfg.model.csg.code_size == 128 and cfg.model.csg.layout == "flat"
    assert load_config(tmp_path / "exp.yaml", ["model.csg.code_size=72", "model.csg=null"]).model.csg is None


def test_shipped_configs_resolve():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "configs"
    files = sorted(p for p in root.rglob("*.yaml") if p.parent.name != "base")
    assert len(files) >= 18
    for path in files:
        cfg = load_config(path)
        assert cfg.model.arch in path.stem or path.stem == "quickstart"
        assert (cfg.model.csg is not None) == ("csg" in path.stem or path.stem == "quickstart")
    r56 = load_config(root / "cifar10" / "resnet56_csg_12_72.yaml")
    assert (r56.data.batch_size, r56.optim.lr, r56.optim.weight_decay, milestone_epochs(r56.schedule, 200),
            r56.train.epochs) == (192, 0.05, 5e-4, [100, 150], 200)
    assert load_config(root / "cifar10" / "densenet_bc_40_36.yaml").data.batch_size == 128


@pytest.mark.parametrize("text,overrides,message", [
    ("model: {arch: resnet20}\noptim: {lr: [1}\n", [], ":2:"),
    ("modle: {arch: resnet20}\n", [], "unknown key 'modle'; did you mean 'model'?"),
    ("optim: {learning_rate: 0.1}\n", [], "unknown key 'optim.learning_rate'"),
    ("optim: {lr: fast}\n", [], "optim.lr: expected a number, got 'fast'"),
    ("optim: {lr: -0.1}\n", [], "optim.lr: must be > 0"),
    ("train: {epochs: 2.5}\n", [], "train.epochs: expected an int"),
    ("data: {name: mnist}\n", [], "data.name: expected 'cifar10' or"),
    ("model: {csg: {slice_shape: [3, 3], code_size: 8}}\n", [], "slice_shape: expected 4 positive ints"),
    ("model: {csg: {slice_shape: [8, 8, 3, 3], code_size: 8, layout: diagonal}}\n", [], "model.csg.layout: expected 'flat' or 'tile'"),
    ("data: {name: digits}\n", [], "digits has no held-out split"),
    ("- a\n- b\n", [], "top level must be a mapping"),
    ("base: missing.yaml\n", [], "config file not found"),
    ("", ["optim.lr"], "expected key=value"),
    ("", ["optim.lr=[1"], "not valid YAML"),
    ("", ["train.device=tpu"], "train.device: expected auto, cpu, cuda"),
    ("", ["schedule.milestones=[150, 100]"], "must be increasing"),
])
def test_bad_configs_name_the_problem(tmp_path, text, overrides, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=None) as info:
        load_config(path, overrides)
    assert message in str(info.value)


def test_config_show_prints_the_resolved_config(cli, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: {arch: resnet56}\n")
    res = cli("config", "show", "--config", path, "--set", "optim.lr=0.1")
    assert res.exit_code == 0
    shown = yaml.safe_load(res.output)
    assert shown["model"]["arch"] == "resnet56" and shown["optim"]["lr"] == 0.1
    assert shown["schedule"]["milestones"] == [0.5, 0.75] and shown["model"]["csg"] is None
    res = cli("config", "show", "--config", path, "--set", "optim.lr=0")
    assert res.exit_code == 2 and res.stderr.strip() == "error: optim.lr: must be > 0, got 0.0"


def test_config_diff_names_what_would_change_a_result(cli, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    shown = cli("config", "show", "--config", "cifar10/resnet20_csg_16_72", "--set", "data.root=/a")
    (run / "config.yaml").write_text(shown.output)
    same = cli("config", "diff", run, "--config", "cifar10/resnet20_csg_16_72", "--set", "data.root=/b",
               "--set", "data.workers=7")
    assert same.exit_code == 0 and same.output == ""  # where the data lie and how it is loaded change no result
    shown_all = cli("config", "diff", run, "--config", "cifar10/resnet20_csg_16_72", "--set", "data.root=/b", "--all")
    assert shown_all.exit_code == 1 and shown_all.output == "data.root: '/a' -> '/b'\n"
    other = cli("config", "diff", run / "config.yaml", "--config", "cifar10/resnet20_csg_16_72", "--set",
                "train.epochs=30", "--set", "optim.csg_lr_scale=2")
    assert other.exit_code == 1
    assert other.output.splitlines() == ["optim.csg_lr_scale: 1.0 -> 2.0", "train.epochs: 200 -> 30"]
    missing = cli("config", "diff", tmp_path / "nothing", "--config", "cifar10/resnet20")
    assert missing.exit_code == 2 and missing.stderr.count("\n") == 1 and "not found" in missing.stderr


def test_exponent_floats_without_a_dot_are_numbers():
    """YAML 1.1 reads 1e-3 as a string; a config's lr is written that way more often than not."""
    from acl_cli.config import ConfigError

    assert load_config(None, ["optim.lr=1e-3", "schedule.min_lr=5E-6"]).optim.lr == 0.001
    with pytest.raises(ConfigError, match="optim.lr: expected a number, got 'fast'"):
        load_config(None, ["optim.lr=fast"])
    with pytest.raises(ConfigError, match="data.name"):  # strings stay strings elsewhere
        load_config(None, ["data.name=1e3"])


def test_milestones_are_fractions_of_the_run_or_epochs_before_its_end():
    """A 2-epoch run of a 200-epoch recipe must still lower the lr (it did not when milestones were epochs)."""
    from acl_cli.optim import build_optimizer, build_scheduler
    from acl_cli.errors import UserError
    from acl_cli.models import create_model

    cfg = load_config(None, ["train.epochs=2", "optim.lr=1.0"])  # the default: [0.5, 0.75]
    lrs = lr_per_step(create_model("resnet20"), cfg, epochs=2, steps_per_epoch=4)
    assert lrs == pytest.approx([1.0] * 4 + [0.1] * 2 + [0.01] * 2)
    opt = build_optimizer(create_model("resnet20"), cfg.optim)
    with pytest.raises(UserError, match="100 is at or past the last epoch .train.epochs 30."):
        build_scheduler(opt, load_config(None, ["schedule.milestones=[100, 150]"]).schedule, 30, 4)
    with pytest.raises(ConfigError, match="all as fractions of the run .< 1. or all as epochs"):
        load_config(None, ["schedule.milestones=[0.5, 150]"])


def test_a_csg_block_must_name_slice_shape_and_code_size():
    from acl_cli.models import create_model

    with pytest.raises(ConfigError, match="model.csg: missing slice_shape"):
        load_config(None, ["model.csg.code_size=64"])  # on an original config: no silent 12x12 default
    with pytest.raises(ValueError, match="unknown key 'csg.layuot'; did you mean 'layout'"):
        create_model("resnet20", csg={"slice_shape": [12, 12, 3, 3], "code_size": 72, "layuot": "tile"})
    with pytest.raises(ValueError, match="csg: missing code_size"):
        create_model("resnet20", csg={"slice_shape": [12, 12, 3, 3]})


@pytest.mark.parametrize("arch,classes", [("resnet56", 10), ("densenet_bc_40_12", 10), ("resnet50", 1000),
                                          ("densenet121", 1000)])
def test_each_architecture_has_its_own_default_num_classes(arch, classes, cli):
    import json

    assert load_config(None, [f"model.arch={arch}"]).model.num_classes is None  # a config knows nothing of models
    assert resolve_model_config(load_config(None, [f"model.arch={arch}"]).model).num_classes == classes
    report = json.loads(cli("count-params", "--arch", arch, "--format", "json").output)
    classifier = {"resnet56": 64, "densenet_bc_40_12": 132, "resnet50": 2048, "densenet121": 1024}[arch]
    assert report["by_kind"]["classifier"] == (classifier + 1) * classes  # weights and bias, default classes
    if arch == "resnet50":  # torchvision's ResNet-50
        assert report["total"] == 25_557_032


def test_shipped_configs_by_name_and_a_local_file_wins(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    assert load_config("cifar10/resnet56_csg_12_72").model.csg.code_size == 72  # base: resolves among the shipped
    assert load_config("quickstart").data.name == "digits"
    (tmp_path / "quickstart.yaml").write_text("model: {arch: resnet56}\ndata: {name: digits, val_split: 0.3}\n")
    assert load_config("quickstart").model.arch == "resnet56"  # the file in the working directory wins
    assert load_config("quickstart.yaml").data.val_split == 0.3
    (tmp_path / "mine.yaml").write_text("base: cifar10/resnet20\ntrain: {epochs: 3}\n")  # a base by name
    assert (load_config("mine.yaml").model.arch, load_config("mine.yaml").train.epochs) == ("resnet20", 3)
    with pytest.raises(ConfigError, match="closest shipped configs: imagenet/resnet50, imagenet/resnet18"):
        load_config("imagenet/resnet5")
    listed = cli("config", "list").output.splitlines()
    assert len(listed) == len(list((ROOT / "configs").rglob("*.yaml")))
    assert all(len(line.split(None, 1)) == 2 for line in listed)  # every shipped config says what it is
