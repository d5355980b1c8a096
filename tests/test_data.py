"""Datasets, splits, presets and the resumable sampler."""
from collections import Counter

import pytest
import torch

from acl_cli.config import load_config
from acl_cli.data import (EpochBatchSampler, balanced_split, balanced_subset, build_splits, load_digits_images)
from acl_cli.errors import UserError


def test_digits_are_real_32px_rgb():
    digits = load_digits_images()
    assert digits.images.shape == (1797, 3, 32, 32) and digits.images.dtype == torch.uint8
    counts = Counter(digits.targets)
    assert sorted(counts) == list(range(10)) and min(counts.values()) >= 170  # 174 to 183 images per digit
    assert digits.images.max() == 255 and digits.images.min() == 0


def test_balanced_split_is_fixed_disjoint_and_balanced():
    targets = [i % 4 for i in range(400)] + [0] * 100  # class 0 has 200 images, others 100
    train, held = balanced_split(targets, 0.1, seed=3)
    assert set(train).isdisjoint(held) and len(train) + len(held) == 500
    assert Counter(targets[i] for i in held) == {0: 20, 1: 10, 2: 10, 3: 10}
    assert balanced_split(targets, 0.1, seed=3) == (train, held)
    assert balanced_split(targets, 0.1, seed=4)[1] != held
    subset = balanced_subset(train, targets, 40, seed=0)
    assert len(subset) == 40 and Counter(targets[i] for i in subset) == {0: 10, 1: 10, 2: 10, 3: 10}


def test_sampler_is_deterministic_resumable_and_sharded():
    s = EpochBatchSampler(100, 8, seed=5)
    s.set_epoch(2)
    full = list(s)
    assert len(full) == 12 and all(len(b) == 8 for b in full)
    positions = [p for b in full for p, _ in b]
    assert len(set(positions)) == 96
    s.set_epoch(2, start_batch=5)
    assert list(s) == full[5:] and len(s) == 7
    s.set_epoch(3)
    assert list(s) != full
    ranks = [EpochBatchSampler(100, 8, seed=5, rank=r, world_size=2) for r in (0, 1)]
    for r in ranks:
        r.set_epoch(2)
    shards = [[p for b in r for p, _ in b] for r in ranks]
    assert len(shards[0]) == len(shards[1]) == 48 and set(shards[0]).isdisjoint(shards[1])


def test_seeded_augmentation_is_reproducible_and_leaves_global_rng_alone():
    splits = build_splits(load_config(None, ["data.name=digits", "data.val_split=0.2"]).data, 10)
    state = torch.get_rng_state()
    a, _ = splits.train[(0, 1234)]
    b, _ = splits.train[(0, 1234)]
    c, _ = splits.train[(0, 99)]
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.get_rng_state(), state)
    x, _ = splits.val[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32


def test_image_folder_with_cifar_preset(tmp_path):
    from PIL import Image

    for split in ("train", "test"):
        for c, colour in (("cat", (200, 10, 10)), ("dog", (10, 10, 200))):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(6):
                Image.new("RGB", (32, 32), colour).save(tmp_path / split / c / f"{i}.jpg")
    cfg = load_config(None, ["data.name=imagefolder", f"data.root={tmp_path}", "model.num_classes=2"])
    splits = build_splits(cfg.data, 2)
    assert splits.preset == "cifar" and splits.classes == ["cat", "dog"]
    assert len(splits.train) == 12 and len(splits.val) == 12 and splits.test is splits.val
    cfg = load_config(None, ["data.name=imagefolder", f"data.root={tmp_path}", "data.val_split=0.5"])
    splits = build_splits(cfg.data, 10)
    assert len(splits.train) == len(splits.val) == 6 and len(splits.test) == 12
    imagenet = build_splits(load_config(None, ["data.name=imagenet", f"data.root={tmp_path}",
                                               "data.image_size=24"]).data, 2)
    assert imagenet.preset == "imagenet" and imagenet.train[(0, 1)][0].shape == (3, 24, 24)


def test_device_loader_refuses_images_of_several_sizes(tmp_path):
    from PIL import Image

    from acl_cli.data import DeviceLoader

    for c, side in (("cat", 32), ("dog", 40)):
        (tmp_path / "train" / c).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (side, side), (i, i, i)).save(tmp_path / "train" / c / f"{i}.png")
    cfg = load_config(None, ["data.name=imagefolder", f"data.root={tmp_path}", "data.val_split=0.5",
                             "data.preset=cifar"]).data
    splits = build_splits(cfg, 2)
    with pytest.raises(UserError, match="device needs images of one size"):
        DeviceLoader(splits.train, torch.device("cpu"), positions=range(len(splits.train)))


def test_missing_data_says_where_it_looked(tmp_path):
    cfg = load_config(None, [f"data.root={tmp_path / 'nothing'}"])
    with pytest.raises(UserError, match="cifar10 not found in .*nothing/cifar-10-batches-py: set data.download: true"):
        build_splits(cfg.data, 10)
    cfg = load_config(None, ["data.name=imagefolder", f"data.root={tmp_path}"])
    with pytest.raises(UserError, match="no training folder at"):
        build_splits(cfg.data, 10)


def test_too_many_classes_for_the_model():
    cfg = load_config(None, ["data.name=digits", "data.val_split=0.2", "model.num_classes=5"])
    with pytest.raises(UserError, match="10 classes but model.num_classes is 5"):
        build_splits(cfg.data, 5)


def test_synthetic_data_is_learnable(tmp_path):
    from acl_cli.training import train

    cfg = load_config(None, ["model.arch=resnet20", "data.name=synthetic", "data.synthetic_size=512",
                             "data.batch_size=32", "data.workers=0", "train.epochs=4", "train.progress=false",
                             "schedule.name=constant"])
    final = train(cfg, tmp_path / "run", log=lambda *a: None)
    assert final["best_val_top1"] > 50  # chance is 10%


def test_device_loader_crops_flips_and_normalises_like_the_recipe():
    from acl_cli.data import DeviceLoader

    cfg = load_config(None, ["data.name=digits", "data.val_split=0.2", "data.loader=device"]).data
    splits = build_splits(cfg, 10)
    loader = DeviceLoader(splits.val, torch.device("cpu"), positions=range(len(splits.val)), batch_size=100)
    x, y = next(iter(loader))
    reference = torch.stack([splits.val[i][0] for i in range(100)])  # the torch path's eval transform
    torch.testing.assert_close(x, reference, rtol=1e-5, atol=1e-5)
    assert y.tolist() == splits.val.targets[:100]
    # training augmentation: each output is the 32x32 window of the zero-padded image its seed names
    images = loader.images[:8]
    seeds = torch.randint(0, 2**62, (8,), generator=torch.Generator().manual_seed(0))
    a = loader.augment(torch.arange(8), seeds)
    assert torch.equal(a, loader.augment(torch.arange(8), seeds))
    assert not torch.equal(a, loader.augment(torch.arange(8), seeds + 1))
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    offsets = {(int(s) % 5, int(s) // 5 % 5) for s in seeds}
    assert len(offsets) > 1  # the seeds do move the window
    for i, s in enumerate(seeds.tolist()):
        r, c = s % 5, s // 5 % 5
        assert torch.equal(a[i], padded[i, :, r:r + 32, c:c + 32])  # digits preset: crop, no flip


def test_device_loader_flips_half_and_keeps_pixels():
    from acl_cli.data import DeviceLoader

    cfg = load_config(None, ["data.name=synthetic", "data.synthetic_size=64", "data.preset=cifar",
                             "data.loader=device"]).data
    splits = build_splits(cfg, 10)
    loader = DeviceLoader(splits.train, torch.device("cpu"), positions=range(64))
    images = loader.images
    seeds = torch.randint(0, 2**62, (len(images),), generator=torch.Generator().manual_seed(1))
    out = loader.augment(torch.arange(len(images)), seeds)
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    flipped = 0
    for i, s in enumerate(seeds.tolist()):
        window = padded[i, :, s % 9:s % 9 + 32, s // 9 % 9:s // 9 % 9 + 32]
        is_flipped = (s >> 32) & 1 == 1
        assert torch.equal(out[i], window.flip(2) if is_flipped else window)
        flipped += is_flipped
    assert 16 < flipped < 48  # about half of 64


def test_device_loader_batches_are_the_samplers_samples_and_crops():
    from acl_cli.data import DeviceLoader, EpochBatchSampler

    cfg = load_config(None, ["data.name=synthetic", "data.synthetic_size=80", "data.preset=cifar"]).data
    train = build_splits(cfg, 10).train
    sampler = EpochBatchSampler(len(train), 16, seed=3)
    loader = DeviceLoader(train, torch.device("cpu"), sampler)
    sampler.set_epoch(2, 1)  # mid-epoch, as a resumed run starts
    batches = list(sampler)
    assert len(batches) == len(loader) == len(train) // 16 - 1
    for (x, y), batch in zip(loader, batches, strict=True):
        pos, seeds = torch.tensor(batch).T
        assert torch.equal(x, loader._normalise(loader.augment(pos, seeds)))
        assert y.tolist() == [train.targets[p] for p in pos.tolist()]


def test_device_loader_training_resumes_exactly(tmp_path):
    from acl_cli.checkpoint import load_checkpoint
    from acl_cli.training import TrainingInterrupted, train

    sets = ["model.arch=resnet20", "data.name=digits", "data.val_split=0.2", "data.train_subset=128",
            "data.batch_size=32", "data.loader=device", "train.epochs=2", "train.progress=false"]
    cfg = load_config(None, sets)
    lines = []
    train(cfg, tmp_path / "a", log=lines.append)
    assert "steps per epoch on cpu (device loader)" in lines[0]
    with pytest.raises(TrainingInterrupted):
        train(cfg, tmp_path / "b", stop_after_steps=5, log=lambda *a: None)
    train(cfg, tmp_path / "b", resume=True, log=lambda *a: None)
    a, b = load_checkpoint(tmp_path / "a" / "last.pt")["model"], load_checkpoint(tmp_path / "b" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)

    from types import SimpleNamespace

    from acl_cli.data import use_device_loader
    device_cfg = load_config(None, ["data.loader=device"]).data
    with pytest.raises(UserError, match="data.loader: device supports"):
        use_device_loader(SimpleNamespace(preset="imagenet"), device_cfg, torch.device("cpu"))
