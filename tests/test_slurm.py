"""A sweep as a real SLURM job array, on a one-node cluster this test starts (munged, slurmctld and slurmd on
localhost, in a temporary folder). Skipped cleanly where SLURM is not installed or cannot start; the same
sweep is tested without SLURM in test_sweeps.py."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_sweeps import DEPTHS, STAND_IN

ROOT = Path(__file__).resolve().parents[1]
DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _which(name):
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


@pytest.fixture
def cluster(tmp_path):
    if os.geteuid() != 0 or not all(_which(d) for d in DAEMONS):
        pytest.skip("SLURM (slurm-wlm, munge) is not installed here, or not as root")
    d = tmp_path / "slurm"
    for sub in ("state", "spool", "log"):
        (d / sub).mkdir(parents=True)
    (d / "munge.key").write_bytes(os.urandom(1024))
    (d / "munge.key").chmod(0o400)
    host = socket.gethostname()
    conf = d / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=acltest", f"SlurmctldHost={host}(127.0.0.1)", "AuthType=auth/munge",
        f"AuthInfo=socket={d}/munge.sock", "CredType=cred/munge", "SlurmUser=root", "SlurmdUser=root",
        f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}", f"StateSaveLocation={d}/state",
        f"SlurmdSpoolDir={d}/spool", f"SlurmctldPidFile={d}/ctld.pid", f"SlurmdPidFile={d}/d.pid",
        f"SlurmctldLogFile={d}/log/ctld.log", f"SlurmdLogFile={d}/log/d.log", "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none", "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU", "ReturnToService=2",
        "JobCompType=jobcomp/none", "AccountingStorageType=accounting_storage/none", "MpiDefault=none",
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs=2 RealMemory=2000 State=UNKNOWN",
        f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP"]) + "\n")
    env = {**os.environ, "SLURM_CONF": str(conf)}
    procs = [subprocess.Popen([_which("munged"), f"--key-file={d}/munge.key", f"--socket={d}/munge.sock",
                               f"--pid-file={d}/munged.pid", f"--log-file={d}/log/munge.log",
                               f"--seed-file={d}/munge.seed", "-F", "-f"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)]
    time.sleep(0.5)
    for daemon in ("slurmctld", "slurmd"):
        procs.append(subprocess.Popen([_which(daemon), "-D", "-f", str(conf)], env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            state = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True).stdout
            if state.strip() == "idle":
                break
            time.sleep(0.5)
        else:
            pytest.skip(f"the one-node SLURM did not start (sinfo: {state.strip()!r})")
        yield env
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def _wait_for_empty_queue(env, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not subprocess.run(["squeue", "-h"], env=env, capture_output=True, text=True).stdout.strip():
            return
        time.sleep(1)
    raise AssertionError("the SLURM jobs did not finish in time")


def test_the_sweep_runs_as_a_slurm_job_array_and_reports(cluster, tmp_path):
    stand_in, trace, out = tmp_path / "acl_stand_in.py", tmp_path / "trace.jsonl", tmp_path / "out"
    stand_in.write_text(STAND_IN)
    env = {**cluster, "ACL": f"{sys.executable} {stand_in}", "TRACE": str(trace), "DEPTHS": "20 56 110",
           "SBATCH_GPUS": "0", "SBATCH_CPUS": "1", "SBATCH_MEM": "100M", "SBATCH_TIME": "00:10:00"}
    res = subprocess.run(["bash", "scripts/sweep_depth.sh", "--sbatch", "/data", "5", str(out)], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    jid = subprocess.run(["sbatch", "--parsable", str(out / "sweep.sbatch")], env=env, capture_output=True,
                         text=True, check=True).stdout.strip()
    subprocess.run(["sbatch", "--parsable", f"--dependency=afterany:{jid}", str(out / "report.sbatch")], env=env,
                   capture_output=True, text=True, check=True)
    _wait_for_empty_queue(env)
    calls = [json.loads(line) for line in trace.read_text().splitlines()]
    assert sorted(c["name"] for c in calls) == sorted(DEPTHS)  # every array task ran its own job, once
    report = "".join(p.read_text() for p in out.glob("report-*.log"))
    assert "6 of 6 finished" in report and (out / "report.md").exists(), report
    # a resubmitted (or requeued) task of a finished run skips it
    subprocess.run(["sbatch", "--array=2", str(out / "sweep.sbatch")], env=env, capture_output=True, check=True)
    _wait_for_empty_queue(env)
    assert "skip resnet56 (finished)" in "".join(p.read_text() for p in out.glob("slurm-*_2.log"))
    assert len(trace.read_text().splitlines()) == 6
