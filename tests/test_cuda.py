"""CUDA paths: generated convs, mixed precision, the GPU-resident loader and a sync-free training loop.

Skipped without a CUDA device; ``scripts/gpu_acceptance.sh`` runs them (and the GPU benchmarks) on one.
"""
import json
import warnings

import pytest
import torch

from acl_cli import create_model
from acl_cli.checkpoint import load_checkpoint
from acl_cli.config import load_config
from acl_cli.csg import materialize

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CSG = {"slice_shape": [12, 12, 3, 3], "code_size": 72, "init": "scaled"}
BASE = ["model.arch=resnet20", "model.csg={slice_shape: [16, 16, 3, 3], code_size: 72}", "data.name=digits",
        "data.val_split=0.2", "data.train_subset=256", "data.batch_size=32", "data.workers=0", "train.epochs=1",
        "train.progress=false", "train.device=cuda"]


@pytest.fixture(autouse=True)
def exact_fp32():
    """TF32 would make fp32 comparisons loose; the speed options are checked separately."""
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


@pytest.mark.parametrize("arch", ["resnet56", "densenet_bc_40_12", "resnet18"])
def test_csg_model_on_cuda_equals_its_materialised_twin(arch):
    torch.manual_seed(0)
    model = create_model(arch, csg=CSG).cuda().eval()
    side = 64 if arch == "resnet18" else 32
    x = torch.randn(4, 3, side, side, device="cuda")
    with torch.no_grad():
        got, again = model(x), model(x)  # the second pass uses cached kernels
        expected = materialize(model)(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert torch.equal(got, again)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_autocast_channels_last_close_to_fp32(amp):
    torch.manual_seed(0)
    model = create_model("resnet20", csg=CSG).cuda().eval()
    x = torch.randn(8, 3, 32, 32, device="cuda")
    with torch.no_grad():
        reference = model(x)
        model.to(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16):
            got = model(x.contiguous(memory_format=torch.channels_last))
    assert got.dtype != torch.float32
    relative_error = (got.float() - reference).norm() / reference.norm()
    assert relative_error < 0.05  # half precision through 20 layers, not a wrong kernel


def test_device_loader_on_cuda_matches_cpu():
    from acl_cli.data import DeviceLoader, build_splits

    cfg = load_config(None, ["data.name=synthetic", "data.synthetic_size=64", "data.preset=cifar"]).data
    splits = build_splits(cfg, 10)
    cpu = DeviceLoader(splits.train, torch.device("cpu"), positions=range(32))
    gpu = DeviceLoader(splits.train, torch.device("cuda"), positions=range(32))
    seeds = torch.randint(0, 2**62, (32,), generator=torch.Generator().manual_seed(0))
    assert torch.equal(gpu.augment(torch.arange(32), seeds).cpu(), cpu.augment(torch.arange(32), seeds))
    (xg, yg), (xc, yc) = next(iter(gpu)), next(iter(cpu))
    torch.testing.assert_close(xg.cpu(), xc)
    assert torch.equal(yg.cpu(), yc)


@pytest.mark.parametrize("extra", [["train.amp=bf16", "train.channels_last=true", "data.loader=device"],
                                   ["train.amp=fp16", "data.loader=torch", "data.workers=2"],
                                   ["train.amp=bf16", "train.channels_last=true", "train.compile=true"]])
def test_training_on_cuda_saves_plain_checkpoints(tmp_path, cli, extra):
    from acl_cli.training import train

    run = tmp_path / "run"
    final = train(load_config(None, BASE + extra), run, log=lambda *a: None)
    assert final["val_loss"] == final["val_loss"] and final["val_samples"] == 359  # finite, every image
    state = load_checkpoint(run / "last.pt")
    assert all(t.device.type == "cpu" for t in state["model"].values())
    assert not any(k.startswith(("_orig_mod.", "module.")) for k in state["model"])
    res = json.loads(cli("eval", run / "last.pt", "--format", "json", "--device", "cpu").output)
    assert res["loss"] == pytest.approx(final["val_loss"], rel=0.05)  # cpu fp32 vs the run's cuda + amp


def test_training_steps_do_not_synchronise_with_the_host(tmp_path):
    """Host syncs per step stop the CPU from queueing work ahead of the GPU; the loop syncs per log interval,
    per checkpoint and per epoch only. Doubling the steps of an epoch must not add syncs."""
    from acl_cli.training import train

    def syncs(batches: int) -> int:
        cfg = load_config(None, BASE + ["train.amp=bf16", "data.loader=device", "train.log_every_steps=1000",
                                        f"data.train_subset={32 * batches}", "data.val_split=0.2"])
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                train(cfg, tmp_path / f"run{batches}", log=lambda *a: None)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in caught)

    assert syncs(4) == syncs(8)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_two_gpu_nccl_training(tmp_path, cli):
    import os
    import shutil
    import subprocess
    import sys

    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    run = tmp_path / "ddp"
    sets = [a for s in BASE + ["train.sync_bn=true", "train.amp=bf16", "train.epochs=2"] for a in ("--set", s)]
    res = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "acl_cli", "train", "--config",
                          "configs/quickstart.yaml", "--out", str(run), *sets], capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    final = json.loads((run / "final.json").read_text())
    assert final["val_samples"] == 359  # every validation image once over both GPUs
    single = json.loads(cli("eval", run / "last.pt", "--format", "json").output)
    assert single["samples"] == 359

