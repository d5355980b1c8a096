"""Real data: CSG and original ResNet-20 on a class-balanced subset of the JPEG CIFAR-10 training images."""
import pytest

from acl_cli.config import load_config
from acl_cli.training import train

from cifar_jpeg import SHARED_TAR, extract_balanced

pytestmark = pytest.mark.skipif(not SHARED_TAR.exists(), reason="../shared/data/cifar10-jpeg-train.tar not present")


@pytest.fixture(scope="module")
def cifar_subset(tmp_path_factory):
    return extract_balanced(tmp_path_factory.mktemp("cifar"), per_class=300)


@pytest.mark.slow
@pytest.mark.parametrize("csg", ["{slice_shape: [16, 16, 3, 3], code_size: 72}", "null"])
def test_resnet20_learns_real_cifar10(cifar_subset, tmp_path, csg):
    cfg = load_config(None, [
        "model.arch=resnet20", f"model.csg={csg}", "data.name=imagefolder", f"data.root={cifar_subset}",
        "data.val_split=0.2", "data.batch_size=64", "data.workers=1", "optim.lr=0.1",
        "schedule.name=cosine", "schedule.warmup_epochs=1", "train.epochs=5", "train.progress=false"])
    final = train(cfg, tmp_path / "run", log=lambda *a: None)
    assert final["params"] == (176_698 if csg != "null" else 269_722)
    assert final["best_val_top1"] > 25.0  # 600 real validation images, chance is 10%


def test_device_loader_decodes_real_jpegs_like_the_torch_path(cifar_subset):
    """The GPU-resident path decodes the JPEG folder once (here with 2 worker processes) into exactly the
    pixels the DataLoader path reads, so both train on the same images."""
    import torch

    from acl_cli.data import DeviceLoader, build_splits, decode_all

    cfg = load_config(None, ["data.name=imagefolder", f"data.root={cifar_subset}", "data.val_split=0.2"]).data
    splits = build_splits(cfg, 10)
    serial, _ = decode_all(splits.val)
    parallel, targets = decode_all(splits.val, workers=2)
    assert torch.equal(serial, parallel) and parallel.shape == (600, 3, 32, 32)
    assert targets.tolist() == splits.val.targets
    loader = DeviceLoader(splits.val, torch.device("cpu"), positions=range(len(splits.val)), batch_size=100,
                          workers=2)
    x, _ = next(iter(loader))
    reference = torch.stack([splits.val[i][0] for i in range(100)])  # decoded and normalised by the torch path
    torch.testing.assert_close(x, reference, rtol=1e-5, atol=1e-5)
