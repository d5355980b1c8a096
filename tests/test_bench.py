"""acl bench: CSG against its original twin, and the loaders (structure and consistency, not speed)."""
import json

import pytest


def test_bench_models_json(cli):
    res = cli("bench", "--config", "configs/cifar10/resnet20_csg_16_72.yaml", "--device", "cpu", "--batch-size", "4",
              "--steps", "1", "--repeats", "2", "--format", "json")
    assert res.exit_code == 0, res.output
    r = json.loads(res.output)
    for name in ("csg", "original"):
        assert {"train_img_s", "infer_img_s", "params", "train_step_ms", "infer_ms"} <= set(r[name])
        assert r[name]["train_img_s"] == pytest.approx(4 / (r[name]["train_step_ms"] / 1e3))
    assert (r["csg"]["params"], r["original"]["params"]) == (176_698, 269_722)
    assert r["ratios"]["train_step"] == pytest.approx(r["csg"]["train_step_ms"] / r["original"]["train_step_ms"])
    assert r["ratios"]["params"] == pytest.approx(176_698 / 269_722)
    table = cli("bench", "--config", "configs/cifar10/resnet20_csg_16_72.yaml", "--device", "cpu", "--batch-size",
                "4", "--steps", "1", "--repeats", "1").output
    assert "CSG/original" in table and "train step (ms)" in table


def test_bench_loaders(cli):
    res = cli("bench", "--config", "configs/quickstart.yaml", "--data", "--device", "cpu", "--steps", "3",
              "--repeats", "1", "--format", "json")
    assert res.exit_code == 0, res.output
    loaders = json.loads(res.output)["loaders"]
    assert loaders["torch"]["img_s"] > 0 and loaders["device"]["img_s"] > 0
    assert loaders["ratio_device_over_torch"] == pytest.approx(loaders["device"]["img_s"] / loaders["torch"]["img_s"])


def test_bench_epochs_runs_the_training_loop(cli):
    res = cli("bench", "--config", "configs/quickstart.yaml", "--epochs", "2", "--device", "cpu", "--batch-size", "32",
              "--set", "data.train_subset=96", "--set", "data.loader=device", "--format", "json")
    assert res.exit_code == 0, res.output
    r = json.loads(res.output)
    assert r["loader"] == "device" and r["batch_size"] == 32 and r["epochs"] == 2
    assert (r["csg"]["params"], r["original"]["params"]) == (176_698, 269_722)
    for name in ("csg", "original"):
        assert r[name]["images_per_epoch"] == 96  # 3 full batches of 32
        assert r[name]["train_img_s"] == pytest.approx(96 / r[name]["epoch_s"])
    assert r["ratios"]["epoch"] == pytest.approx(r["csg"]["epoch_s"] / r["original"]["epoch_s"])


@pytest.mark.parametrize("args,message", [
    (["--config", "configs/quickstart.yaml", "--epochs", "1"], "--epochs must be >= 2"),
    (["--config", "configs/quickstart.yaml", "--epochs", "2", "--data"], "two different benchmarks"),
    (["--config", "configs/cifar10/resnet20.yaml", "--device", "cpu"], "model.csg: null"),
    (["--device", "cpu"], "give --config FILE"),
    (["--config", "configs/quickstart.yaml", "--steps", "0"], "must be >= 1"),
    (["--config", "configs/quickstart.yaml", "--set", "optim.lr=-1"], "optim.lr: must be > 0"),
])
def test_bench_bad_input(cli, args, message):
    res = cli("bench", *args)
    assert res.exit_code == 2 and message in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_gpu_targets_reads_bench_output_and_judges_it(cli, tmp_path):
    """scripts/gpu_targets.py on real (CPU) bench JSON: each verdict follows the measured figure."""
    import subprocess
    import sys

    small = ["--device", "cpu", "--format", "json", "--config", "configs/quickstart.yaml"]
    runs = {"step_bf16_cl": ["--batch-size", "4", "--steps", "1", "--repeats", "1"],
            "loaders": ["--data", "--steps", "2", "--repeats", "1"],
            "epochs_bf16_cl": ["--epochs", "2", "--batch-size", "32", "--set", "data.train_subset=64"]}
    for name, args in runs.items():
        res = cli("bench", *small, *args)
        assert res.exit_code == 0, res.output
        (tmp_path / f"{name}.json").write_text(res.output)
    res = subprocess.run([sys.executable, "scripts/gpu_targets.py", str(tmp_path)], capture_output=True, text=True)
    assert res.returncode == 1  # compiled runs are missing
    lines = {line[:48].strip(): line[48:].split() for line in res.stdout.splitlines()}
    step = json.loads((tmp_path / "step_bf16_cl.json").read_text())["ratios"]["train_step"]
    assert lines["step_bf16_cl: CSG/original train step"] == [f"{step:.3f}", "<=", "1.03",
                                                               "PASS" if step <= 1.03 else "FAIL"]
    assert lines["step_bf16_cl_compile: CSG/original train step"][-1] == "MISSING"
    loaders = json.loads((tmp_path / "loaders.json").read_text())["loaders"]["ratio_device_over_torch"]
    assert lines["device loader / DataLoader img/s"][-1] == ("PASS" if loaders >= 3 else "FAIL")
    epoch = json.loads((tmp_path / "epochs_bf16_cl.json").read_text())["csg"]["epoch_s"]
    assert lines["best CSG epoch (s)"] == [f"{epoch:.3f}", "<=", "1.5", "PASS" if epoch <= 1.5 else "FAIL"]


@pytest.mark.parametrize("delay", [1, 6])  # while importing torch at start-up; inside the CSG run's training loop
def test_interrupted_epoch_bench_says_so_without_a_resume_hint(tmp_path, delay):
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "acl_cli", "bench", "--config", "configs/quickstart.yaml",
                             "--epochs", "500", "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=300)  # a busy machine may take a while to reach the step's end
    finally:
        proc.kill()  # never left running (a 500-epoch bench) when the test fails
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1] == "interrupted" and "Resume with" not in err and "Traceback" not in err


def test_training_loop_adds_a_few_kernels_per_step():
    """acl train's per-step work beyond forward/backward/optimizer (GPU crop, flip and normalise; the loss
    and accuracy record) stays a handful of kernels: launches are what bound a small net on a fast GPU."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "bench_train_overhead.py"
    spec = importlib.util.spec_from_file_location("bench_train_overhead", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    engine, bare = module.kernels_per_step("configs/quickstart.yaml", ["data.batch_size=16"])
    assert engine == int(engine) and 0 < engine - bare <= 12
