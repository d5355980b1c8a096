"""Recipe parts every modern reference has (issue 34): weight EMA, MixUp/CutMix, AutoAugment/RandAugment/
TrivialAugmentWide and random erasing, gradient accumulation. Each is off by default (the authors' recipe),
validated like every key, and (in the tests below the data side) recorded, resumed exactly and run under DDP."""

import pytest
import torch
from torchvision.transforms import v2

from acl_cli.config import ConfigError, load_config, shipped_configs
from acl_cli.data import (augment_policy, build_mixing, build_splits, build_transform, device_loader_declined,
                          dominant_labels, use_device_loader)
from acl_cli.errors import UserError

DIGITS = ["data.name=digits", "data.val_split=0.2", "data.train_subset=64", "data.batch_size=16", "data.workers=0"]


# ---- config: off by default, bad values named

def test_every_recipe_part_is_off_by_default_and_in_no_shipped_config():
    for cfg in [load_config(None)] + [load_config(path) for path in shipped_configs().values()]:
        d, t = cfg.data, cfg.train
        assert (t.ema, t.accumulate_steps, d.augment, d.random_erasing, d.mixup, d.cutmix) == \
            (None, 1, "none", 0.0, 0.0, 0.0)


def test_ema_block_takes_its_defaults_and_any_key_alone():
    assert load_config(None, ["train.ema={}"]).train.ema.__dict__ == {"decay": 0.9998, "every_steps": 1,
                                                                      "warmup_steps": 0}
    ema = load_config(None, ["train.ema.decay=0.99", "train.ema.warmup_steps=5"]).train.ema
    assert (ema.decay, ema.every_steps, ema.warmup_steps) == (0.99, 1, 5)
    assert load_config(None, ["train.ema={decay: 0.9}", "train.ema=null"]).train.ema is None


@pytest.mark.parametrize("override,message", [
    ("train.ema.decay=1", "train.ema.decay: must be in (0, 1), got 1.0"),
    ("train.ema.decay=0", "train.ema.decay: must be in (0, 1), got 0.0"),
    ("train.ema.every_steps=0", "train.ema.every_steps: must be >= 1, got 0"),
    ("train.ema.warmup_steps=-1", "train.ema.warmup_steps: must be >= 0, got -1"),
    ("train.ema={rate: 0.9}", "unknown key 'train.ema.rate'"),
    ("train.ema=0.999", "train.ema: expected a mapping"),
    ("train.accumulate_steps=0", "train.accumulate_steps: must be >= 1, got 0"),
    ("train.accumulate_steps=1.5", "train.accumulate_steps: expected an int"),
    ("data.mixup=-0.2", "data.mixup: must be >= 0"),
    ("data.cutmix=-1", "data.cutmix: must be >= 0"),
    ("data.mixup_switch_prob=1.5", "data.mixup_switch_prob: must be in [0, 1], got 1.5"),
    ("data.random_erasing=2", "data.random_erasing: must be in [0, 1], got 2.0"),
    ("data.augment=augmix", "data.augment: expected 'none' or 'autoaugment' or 'randaugment' or 'trivialaugment'"),
])
def test_bad_recipe_values_name_their_key(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert message in str(info.value)


@pytest.mark.parametrize("override,key", [("data.augment=randaugment", "data.augment: randaugment is not on the "
                                           "device loader yet"),
                                          ("data.random_erasing=0.25", "data.random_erasing: not on the device loader")])
def test_the_device_loader_refuses_per_image_recipe_parts_in_one_line(cli, tmp_path, override, key):
    res = cli("train", "--config", "quickstart", "--set", "data.loader=device", "--set", override,
              "--out", tmp_path / "run")
    assert res.exit_code == 2
    assert res.stderr.count("\n") == 1 and key in res.stderr and "data.loader: torch" in res.stderr
    assert not (tmp_path / "run").exists()


def test_auto_takes_the_dataloader_for_per_image_parts_and_says_why():
    cfg = load_config(None, DIGITS + ["data.augment=trivialaugment"]).data
    train = build_splits(cfg, 10).train
    assert not use_device_loader(train, cfg, torch.device("cpu"))
    assert device_loader_declined(train, cfg) == ("data.augment: trivialaugment needs it: the device loader has crop "
                                                  "and flip only")
    plain = load_config(None, DIGITS).data
    assert use_device_loader(build_splits(plain, 10).train, plain, torch.device("cpu"))
    assert device_loader_declined(build_splits(plain, 10).train, plain) is None
    cfg.loader = "device"  # built in Python, past the config's check
    with pytest.raises(UserError, match="^data.augment: not on the device loader yet"):
        use_device_loader(train, cfg, torch.device("cpu"))


# ---- per-image parts: torchvision's transforms, where its reference puts them

def test_augment_presets_are_torchvisions_with_the_policy_for_the_image_size():
    (cifar,), (imagenet,) = augment_policy("autoaugment", "cifar"), augment_policy("autoaugment", "imagenet")
    assert (cifar.policy, imagenet.policy) == (v2.AutoAugmentPolicy.CIFAR10, v2.AutoAugmentPolicy.IMAGENET)
    assert type(augment_policy("randaugment", "cifar")[0]) is v2.RandAugment
    assert type(augment_policy("trivialaugment", "digits")[0]) is v2.TrivialAugmentWide
    assert augment_policy("none", "cifar") == []
    steps = [type(t) for t in build_transform("cifar", True, None, "randaugment", 0.25).transforms]
    assert steps == [v2.ToImage, v2.RandomCrop, v2.RandomHorizontalFlip, v2.RandAugment, v2.ToDtype, v2.Normalize,
                     v2.RandomErasing]  # the policy on uint8 after crop and flip, erasing after normalisation
    assert build_transform("cifar", True, None, "randaugment", 0.25).transforms[-1].p == 0.25
    evaluation = [type(t) for t in build_transform("imagenet", False, None).transforms]
    assert v2.RandAugment not in evaluation and v2.RandomErasing not in evaluation
    assert [type(t) for t in build_transform("cifar", True).transforms] == \
        [v2.ToImage, v2.RandomCrop, v2.RandomHorizontalFlip, v2.ToDtype, v2.Normalize]  # the authors' recipe


def test_augmented_training_images_are_a_function_of_their_seed_and_validation_images_are_not_augmented():
    plain_cfg = load_config(None, DIGITS).data
    cfg = load_config(None, DIGITS + ["data.augment=autoaugment", "data.random_erasing=1"]).data
    plain, splits = build_splits(plain_cfg, 10), build_splits(cfg, 10)
    state = torch.get_rng_state()
    first = [splits.train[(i, 1000 + i)][0] for i in range(8)]
    assert torch.equal(torch.get_rng_state(), state)  # the process's random state is left as it was
    assert all(torch.equal(a, splits.train[(i, 1000 + i)][0]) for i, a in enumerate(first))
    assert not all(torch.equal(a, plain.train[(i, 1000 + i)][0]) for i, a in enumerate(first))
    assert all(torch.equal(splits.val[i][0], plain.val[i][0]) for i in range(4))


# ---- batch mixing: torchvision's MixUp / CutMix, soft targets, a function of (seed, rank, step)

def _batch(classes=10):
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 3, 32, 32, generator=g), torch.randperm(classes, generator=g)[:8]


def test_mixup_mixes_each_image_with_the_next_by_the_weight_its_target_gives():
    x, y = _batch()
    mixing = build_mixing(load_config(None, ["data.mixup=0.4"]).data, 10, seed=3)
    state = torch.get_rng_state()
    mixed, targets = mixing(x, y, step=7)
    assert torch.equal(torch.get_rng_state(), state)
    lam = targets[0, y[0]].item()
    assert 0 < lam < 1 and torch.allclose(targets.sum(1), torch.ones(8))
    assert torch.allclose(targets, lam * torch.nn.functional.one_hot(y, 10) +
                          (1 - lam) * torch.nn.functional.one_hot(y.roll(1), 10))
    assert torch.allclose(mixed, lam * x + (1 - lam) * x.roll(1, 0), atol=1e-6)
    assert torch.equal(dominant_labels(targets), y if lam > 0.5 else y.roll(1))
    assert torch.equal(dominant_labels(y), y)


def test_mixing_repeats_for_the_same_seed_rank_and_step_only():
    x, y = _batch()
    cfg = load_config(None, ["data.mixup=0.8", "data.cutmix=1.0"]).data
    a = build_mixing(cfg, 10, seed=0)(x, y, 5)
    torch.rand(100)  # whatever else draws in between
    b = build_mixing(cfg, 10, seed=0)(x, y, 5)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    for other in (build_mixing(cfg, 10, seed=0)(x, y, 6), build_mixing(cfg, 10, seed=1)(x, y, 5),
                  build_mixing(cfg, 10, seed=0, rank=1)(x, y, 5)):
        assert not torch.equal(a[1], other[1])


def test_cutmix_pastes_a_box_of_the_next_image_and_weights_the_labels_by_its_area():
    x, y = _batch()
    mixed, targets = build_mixing(load_config(None, ["data.cutmix=1.0"]).data, 10, seed=0)(x, y, 2)
    pasted = (mixed != x).any(dim=1)[0]  # the box's pixels in image 0 (random values: none equal by chance)
    assert torch.equal(mixed[0][:, pasted], x[-1][:, pasted])
    assert targets[0, y[-1]].item() == pytest.approx(pasted.sum().item() / 32 ** 2)
    switch = load_config(None, ["data.mixup=1", "data.cutmix=1", "data.mixup_switch_prob=1"]).data
    only_cut = build_mixing(switch, 10, seed=0)
    for step in range(5):  # switch probability 1: every batch cut-mixed, never blended
        out, _ = only_cut(x, y, step)
        assert ((out == x) | (out == x.roll(1, 0))).all()
    assert build_mixing(load_config(None).data, 10, seed=0) is None
