#!/usr/bin/env python3
"""Fault injection: kill a training run with SIGKILL at random moments, resume each time, and check that
the final weights equal those of an uninterrupted run (CPU, deterministic).

    python scripts/fault_injection.py --kills 10            # about 2 minutes on 2 CPU cores
    python scripts/fault_injection.py --kills 3 --signal INT

Kills land anywhere: during start-up, mid-step, mid-checkpoint-write (a checkpoint is written every step),
mid-evaluation. Exit status 0 when every kill left a loadable checkpoint and the final weights match.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from acl_cli.checkpoint import load_checkpoint  # noqa: E402
from acl_cli.errors import UserError  # noqa: E402

CONFIG = """\
model:
  arch: resnet20
  csg: {slice_shape: [16, 16, 3, 3], code_size: 72}
data: {name: digits, val_split: 0.2, train_subset: 384, batch_size: 32, workers: 0}
schedule: {name: cosine, warmup_epochs: 0.5}
train: {epochs: 3, checkpoint_every_steps: 1, progress: false}
"""


def _acl(*args: str) -> list[str]:
    return [sys.executable, "-m", "acl_cli", *args]


def _start(config: Path, run_dir: Path) -> subprocess.Popen:
    if (run_dir / "last.pt").exists():
        cmd = _acl("train", "--resume", str(run_dir))
    else:  # killed before its first checkpoint: start over
        cmd = _acl("train", "--config", str(config), "--out", str(run_dir), "--overwrite")
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _weights(run_dir: Path, name: str = "last.pt") -> dict:
    return load_checkpoint(run_dir / name)["model"]


def run(workdir: Path, kills: int, seed: int = 0, sig: signal.Signals = signal.SIGKILL, log=print) -> bool:
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "fault.yaml"
    config.write_text(CONFIG)
    reference, faulted = workdir / "reference", workdir / "faulted"
    for d in (reference, faulted):
        shutil.rmtree(d, ignore_errors=True)

    t0 = time.perf_counter()
    proc = subprocess.Popen(_acl("train", "--config", str(config), "--out", str(reference), "--overwrite"),
                            cwd=ROOT, stdout=subprocess.DEVNULL)
    while proc.poll() is None and not (reference / "last.pt").exists():
        time.sleep(0.02)
    startup = time.perf_counter() - t0  # until the first checkpoint
    if proc.wait() != 0:
        raise SystemExit("the uninterrupted run failed")
    training = time.perf_counter() - t0 - startup
    log(f"uninterrupted run: {startup:.1f}s to the first checkpoint, then {training:.1f}s")

    rng = random.Random(seed)
    ok = True
    for i in range(kills):
        proc = _start(config, faulted)
        if rng.random() < 0.2:  # during start-up
            delay = rng.uniform(0, startup)
        else:  # while training: wait for the line printed just before the first step
            delay = rng.uniform(0, 2 * training / kills)
            for line in proc.stdout:
                if "steps per epoch" in line:
                    break
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(sig)
        _, err = proc.communicate()
        state = None
        if (faulted / "last.pt").exists():
            try:
                state = load_checkpoint(faulted / "last.pt")["progress"]
            except UserError as e:
                log(f"kill {i + 1}: last.pt NOT loadable: {e}")
                ok = False
        where = f"epoch {state['epoch']}, step {state['step']}" if state else "no checkpoint yet"
        log(f"kill {i + 1}/{kills} after {delay:.1f}s ({sig.name}): exit {proc.returncode}, last.pt at {where}")
        if sig != signal.SIGKILL and proc.returncode == 130 and "Resume with: acl train --resume" not in err:
            if "interrupted" not in err:  # a signal during start-up has nothing to resume yet
                log(f"kill {i + 1}: exit 130 without the resume hint: {err.strip()!r}")
                ok = False
        elif sig != signal.SIGKILL and proc.returncode not in (0, 2, 130):
            log(f"kill {i + 1}: unexpected exit {proc.returncode}: {err.strip()[-300:]!r}")
            ok = False

    while not (faulted / "final.json").exists():  # finish: resume until the run says it is complete (an epoch
        # can be checkpointed before its evaluation, so "epoch 3 reached" is not yet finished)
        proc = _start(config, faulted)
        proc.communicate()
        if proc.returncode != 0:
            log(f"final resume failed with exit {proc.returncode}")
            return False

    for name in ("last.pt", "best.pt"):
        a, b = _weights(reference, name), _weights(faulted, name)
        same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        log(f"{name}: {'bit-identical' if same else 'DIFFERENT'} to the uninterrupted run")
        ok &= same
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--signal", default="KILL", choices=["KILL", "INT", "TERM"])
    parser.add_argument("--workdir", type=Path, help="where runs go (default: a temporary folder)")
    args = parser.parse_args()
    sig = signal.Signals[f"SIG{args.signal}"]
    with tempfile.TemporaryDirectory() as tmp:
        ok = run(args.workdir or Path(tmp), args.kills, args.seed, sig)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
