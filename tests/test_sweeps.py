"""Sweeps on a cluster: free-GPU scheduling, failures that do not stop the night, resumes that take the new
settings, SLURM job arrays, seeds. A stand-in for acl records every call, so no training is needed."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

STAND_IN = '''
import json, os, sys, time
from pathlib import Path
args = sys.argv[1:]
if args[0] == "plan":  # acl's decision: a finished run differs from its job where STAND_IN_DIFFERS names it
    run = Path(args[1])
    if (run / "final.json").exists():
        differs = run.name in os.environ.get("STAND_IN_DIFFERS", "").split()
        print("conflict: finished with other settings (train.epochs: 5 -> 6)" if differs else "skip (finished)")
    else:
        print("resume" if (run / "last.pt").exists() else "train")
    sys.exit(0)
if args[0] == "report":
    table = "| stand-in report | " + " ".join(Path(a).name for a in args[1:] if Path(a).is_dir()) + " |"
    if "--out" in args:
        Path(args[args.index("--out") + 1]).write_text(table + "\\n")
    else:
        print(table)
    sys.exit(0)
out = Path(args[args.index("--out") + 1] if "--out" in args else args[args.index("--resume") + 1])
start = time.time()
time.sleep(json.loads(os.environ.get("DURATIONS", "{}")).get(out.name, 0.2))
with open(os.environ["TRACE"], "a") as f:
    f.write(json.dumps({"name": out.name, "gpu": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": start,
                        "end": time.time(), "args": args}) + "\\n")
if out.name in os.environ.get("FAIL", "").split():
    print("stand-in failure", file=sys.stderr)
    sys.exit(3)
out.mkdir(parents=True, exist_ok=True)
(out / "final.json").write_text("{}")
'''
DEPTHS = ["resnet20", "resnet20_csg_12_72", "resnet56", "resnet56_csg_12_72", "resnet110", "resnet110_csg_12_72"]


@pytest.fixture
def sweep(tmp_path):
    stand_in = tmp_path / "acl_stand_in.py"
    stand_in.write_text(STAND_IN)
    trace = tmp_path / "trace.jsonl"

    def run(*args, script="sweep_depth.sh", **env):
        full = {**os.environ, "ACL": f"{sys.executable} {stand_in}", "TRACE": str(trace), "POLL_S": "0.05",
                "DEPTHS": "20 56 110", **env}
        res = subprocess.run(["bash", str(ROOT / "scripts" / script), *map(str, args)], cwd=ROOT, env=full,
                             capture_output=True, text=True, timeout=120)
        calls = [json.loads(line) for line in trace.read_text().splitlines()] if trace.exists() else []
        trace.unlink(missing_ok=True)
        return res, calls
    return run


def test_each_job_goes_to_a_free_gpu_never_to_a_busy_one(sweep, tmp_path):
    # resnet20 holds GPU 0 for 2 s; the old round-robin queued resnet56 and resnet110 behind it on GPU 0
    res, calls = sweep("/data", 5, tmp_path / "out", GPUS="0 1", DURATIONS=json.dumps({"resnet20": 2.0}))
    assert res.returncode == 0, res.stderr
    assert sorted(c["name"] for c in calls) == sorted(DEPTHS)
    by_gpu = {}
    for c in calls:
        by_gpu.setdefault(c["gpu"], []).append((c["start"], c["end"]))
    for spans in by_gpu.values():  # one job at a time on each GPU
        spans.sort()
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:])), spans
    assert len(by_gpu["0"]) == 1 and len(by_gpu["1"]) == 5  # the others never waited for GPU 0
    assert "6 finished, 0 failed" in res.stdout


def test_a_failed_job_is_named_and_the_others_still_run(sweep, tmp_path):
    out = tmp_path / "out"
    res, calls = sweep("/data", 5, out, GPUS="0 1", FAIL="resnet56")
    assert res.returncode == 1
    assert sorted(c["name"] for c in calls) == sorted(DEPTHS)  # every job ran
    assert f"failed: resnet56 (exit 3): see {out}/resnet56.log" in res.stderr
    assert "stand-in failure" in (out / "resnet56.log").read_text()
    assert "sweep " in res.stdout and "5 finished, 1 failed, 0 skipped" in res.stdout
    assert (out / "report.md").read_text().startswith("| stand-in report |")  # of the runs that finished
    again, calls = sweep("/data", 5, out, GPUS="0 1")  # a rerun does only what is left
    assert again.returncode == 0 and [c["name"] for c in calls] == ["resnet56"]
    assert "1 finished, 0 failed, 5 skipped" in again.stdout


def test_one_at_a_time_without_gpus_and_a_failure_still_continues(sweep, tmp_path):
    res, calls = sweep("/data", 5, tmp_path / "out", FAIL="resnet20")
    assert res.returncode == 1 and len(calls) == 6
    assert all(a["end"] <= b["start"] for a, b in zip(calls, calls[1:]))


def test_a_resumed_run_takes_the_new_data_root_budget_and_overrides(sweep, tmp_path):
    out = tmp_path / "out"
    (out / "resnet56").mkdir(parents=True)
    (out / "resnet56" / "last.pt").write_bytes(b"")  # stopped earlier
    res, calls = sweep("/scratch/node7/cifar", 300, out, EXTRA_SET="--set data.workers=3")
    assert res.returncode == 0, res.stderr
    args = next(c["args"] for c in calls if c["name"] == "resnet56")
    assert args[:3] == ["train", "--resume", str(out / "resnet56")]
    assert {"data.root=/scratch/node7/cifar", "train.epochs=300", "data.workers=3", "model.arch=resnet56"} <= set(args)


def test_list_and_task_index_run_exactly_the_listed_job(sweep, tmp_path):
    out = tmp_path / "out"
    res, _ = sweep("--list", "/data", 5, out)
    listed = [line.split("\t") for line in res.stdout.splitlines()]
    assert listed == [[str(i), name] for i, name in enumerate(DEPTHS)]
    res, calls = sweep("/data", 5, out, TASK_INDEX="3")
    assert res.returncode == 0 and [c["name"] for c in calls] == ["resnet56_csg_12_72"]
    res, calls = sweep("/data", 5, out, TASK_INDEX="6")
    assert res.returncode == 2 and "TASK_INDEX 6 is out of range: this sweep has 6 jobs (0-5)" in res.stderr
    assert calls == []


def test_seeds_multiply_the_grid(sweep, tmp_path):
    res, _ = sweep("--list", "/data", 5, tmp_path / "out", SEEDS="0 1", DEPTHS="20")
    assert [line.split("\t")[1] for line in res.stdout.splitlines()] == [
        "resnet20_seed0", "resnet20_seed1", "resnet20_csg_12_72_seed0", "resnet20_csg_12_72_seed1"]
    res, _ = sweep("--list", "/data", 5, tmp_path / "out", SEEDS="0 x")
    assert res.returncode == 2 and "SEEDS must be non-negative integers" in res.stderr


def test_the_sbatch_array_runs_every_job_once_and_a_requeued_task_resumes(sweep, tmp_path):
    out = tmp_path / "out"
    res, _ = sweep("--sbatch", "/data", 5, out, SBATCH_MAX_PARALLEL="2", SBATCH_PARTITION="gpu", SEEDS="4")
    assert res.returncode == 0, res.stderr
    text = (out / "sweep.sbatch").read_text()
    for line in ("#SBATCH --array=0-5%2", "#SBATCH --requeue", '#SBATCH --partition="gpu"', "#SBATCH --gpus=1",
                 "#SBATCH --signal=B:TERM@120", "export SEEDS=4", "export DEPTHS="):
        assert line in text, line
    assert "sbatch --dependency=afterany:$jid" in res.stdout
    env = {k: v for k, v in os.environ.items() if k not in ("DEPTHS", "SEEDS", "ACL")}  # the file sets the grid
    trace = tmp_path / "trace.jsonl"
    text = text.replace("export ACL=", f"export TRACE={trace}\nexport ACL=")
    (out / "sweep.sbatch").write_text(text)
    for task in range(6):  # what SLURM does: each array task runs the file with its index
        done = subprocess.run(["bash", str(out / "sweep.sbatch")], env={**env, "SLURM_ARRAY_TASK_ID": str(task)},
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    calls = [json.loads(line) for line in trace.read_text().splitlines()]
    assert sorted(c["name"] for c in calls) == sorted(f"{n}_seed4" for n in DEPTHS)
    assert all("train.seed=4" in c["args"] for c in calls)
    again = subprocess.run(["bash", str(out / "sweep.sbatch")], env={**env, "SLURM_ARRAY_TASK_ID": "1"},
                           capture_output=True, text=True, timeout=60)
    assert "skip resnet20_csg_12_72_seed4 (finished)" in again.stdout  # a requeued task that had finished
    report = subprocess.run(["bash", str(out / "report.sbatch")], env=env, capture_output=True, text=True,
                            timeout=60)
    assert report.returncode == 0 and "6 of 6 finished" in report.stdout, report.stderr


def test_the_report_covers_every_finished_run_in_the_folder_not_only_this_grids(sweep, tmp_path):
    """Several sweeps into one folder (results/cifar10 is made so): each report.md covers all finished runs there."""
    out = tmp_path / "out"
    res, _ = sweep("/data", 5, out, DEPTHS="20")
    assert res.returncode == 0, res.stderr
    (out / "unfinished").mkdir()  # a run still training (no final.json) is left out
    res, calls = sweep("/data", 5, out, DEPTHS="56")
    assert res.returncode == 0 and [c["name"] for c in calls] == ["resnet56", "resnet56_csg_12_72"]
    shown = (out / "report.md").read_text().split("|")[2].split()
    assert sorted(shown) == ["resnet20", "resnet20_csg_12_72", "resnet56", "resnet56_csg_12_72"]


def test_a_finished_run_made_with_other_settings_is_a_failure_not_a_skip(sweep, tmp_path):
    """Rerunning a sweep skips finished runs; one whose settings differ from its job (acl config diff) would
    otherwise pass for this sweep's result in the report."""
    out = tmp_path / "out"
    res, _ = sweep("/data", 5, out)
    assert res.returncode == 0, res.stderr
    res, calls = sweep("/data", 5, out, STAND_IN_DIFFERS="resnet56")
    assert res.returncode == 1 and calls == []  # nothing retrained, nothing overwritten
    assert ("FAILED resnet56 finished with other settings (train.epochs: 5 -> 6): kept as it is; to train this job "
            "too, give the sweep another OUT_DIR") in res.stderr
    assert "remove" not in res.stderr  # no message advises deleting a finished run
    assert "0 finished, 1 failed, 5 skipped" in res.stdout
    index = DEPTHS.index("resnet56")
    res, calls = sweep("/data", 5, out, STAND_IN_DIFFERS="resnet56", TASK_INDEX=str(index))  # a SLURM array task
    assert res.returncode == 1 and calls == [] and "error: resnet56 finished with other settings" in res.stderr
    res, _ = sweep("--report", "/data", 5, out, STAND_IN_DIFFERS="resnet56")
    assert res.returncode == 1 and "5 of 6 finished" in res.stdout and "not this sweep's: resnet56" in res.stderr
