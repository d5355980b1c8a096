"""Several processes through torchrun (gloo on CPU): DDP training, rank-0 writes, exact evaluation counts."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

SETS = ["model.arch=resnet20", "model.csg={slice_shape: [16, 16, 3, 3], code_size: 16}", "data.name=synthetic",
        "data.synthetic_size=206", "data.val_split=0", "data.batch_size=16", "data.workers=0", "train.epochs=2", "train.progress=false",
        "train.checkpoint_every_steps=4"]


def _torchrun(*args, nproc=2):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    cmd = [torchrun, "--standalone", f"--nproc_per_node={nproc}", "-m", "acl_cli", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_two_process_training_on_cpu(tmp_path, cli):
    run = tmp_path / "ddp"
    sets = [a for s in SETS for a in ("--set", s)]
    res = _torchrun("train", "--config", "configs/quickstart.yaml", "--out", run, *sets)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.count("epoch   1/2") == 1  # logs from rank 0 only
    assert "x 2 processes (lr x 1)" in res.stdout  # no silent lr scaling: the recipe's lr, as configured
    events = sorted(p.name for p in (run / "tb").iterdir() if p.name.startswith("events"))
    assert len(events) == 2 and events[0].endswith("acl-hparams")  # rank 0's hparams and scalars, nothing from rank 1
    rows = (run / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 3  # header + one row per epoch
    final = json.loads((run / "final.json").read_text())
    assert final["val_samples"] == 206 // 4  # 51: an odd count split 26 + 25, every sample once
    state = torch.load(run / "last.pt", weights_only=True)
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in state["model"])
    assert state["optimizer"]["param_groups"][0]["lr"] >= 0
    single = json.loads(cli("eval", run / "last.pt", "--format", "json").output)  # a single-process model
    assert single["samples"] == 51 and single["top1"] == pytest.approx(final["val_top1"])
    assert single["loss"] == pytest.approx(final["val_loss"], rel=1e-5)
    # resume the DDP run with a longer budget
    res = _torchrun("train", "--resume", run, "--set", "train.epochs=3")
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads((run / "final.json").read_text())["epochs"] == 3


@pytest.mark.slow
def test_sigterm_stops_every_process_at_one_agreed_step_and_resumes(tmp_path):
    import signal

    from acl_cli.training import STOP_SYNC_STEPS

    run = tmp_path / "ddp"
    sets = [a for s in SETS + ["train.epochs=100", "train.checkpoint_every_steps=null"] for a in ("--set", s)]
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    proc = subprocess.Popen([torchrun, "--standalone", "--nproc_per_node=2", "-m", "acl_cli", "train", "--config",
                             "configs/quickstart.yaml", "--out", str(run), *sets], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    for line in proc.stdout:
        if "epoch   1/100" in line:  # training is under way on both processes
            break
    proc.send_signal(signal.SIGTERM)  # torchrun passes it on to both workers
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "SIGTERM received" in err
    step = torch.load(run / "last.pt", weights_only=True)["progress"]["step"]
    assert step % STOP_SYNC_STEPS == 0  # the step the processes agreed on
    assert not (run / "final.json").exists()
    res = _torchrun("train", "--resume", run, "--set", "train.epochs=3")
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads((run / "final.json").read_text())["epochs"] == 3


@pytest.mark.slow
def test_a_converted_user_model_trains_under_torchrun(tmp_path, cli, monkeypatch):
    """Converted networks go through DDP like the zoo: a user's factory, CSG, two gloo processes."""
    (tmp_path / "ddp_nets.py").write_text(
        "from torch import nn\n"
        "def tiny(num_classes=10):\n"
        "    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),\n"
        "                         nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),\n"
        "                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))\n")
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    monkeypatch.syspath_prepend(str(tmp_path))
    run = tmp_path / "ddp"
    sets = [a for s in SETS + ["model.arch=ddp_nets:tiny", "model.csg={slice_shape: [8, 8, 3, 3], code_size: 8}",
                               "train.epochs=1"] for a in ("--set", s)]
    res = _torchrun("train", "--config", "configs/quickstart.yaml", "--out", run, *sets)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads((run / "final.json").read_text())["val_samples"] == 206 // 4
    single = json.loads(cli("eval", run / "last.pt", "--format", "json", "--allow-import", "ddp_nets").output)
    assert single["samples"] == 206 // 4
