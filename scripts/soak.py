#!/usr/bin/env python3
"""Soak test (not in CI): 2,000 training steps on synthetic data while watching the trainer from outside.

    python scripts/soak.py                 # about 3 minutes on 2 CPU cores
    python scripts/soak.py --steps 500 --workers 0

Samples the process's resident memory (VmRSS) and open file descriptors (its own and its loader
workers') every half second. After warm-up (the first quarter of the run) neither may grow: RSS by more
than --rss-tolerance MiB, descriptors not at all. Exit status 0 when both hold.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _sample(pid: int) -> tuple[float, int, int]:
    """(RSS in MiB, open fds) of the trainer itself, and how many child processes (loader workers) it has."""
    try:
        rss = next(int(line.split()[1]) / 1024 for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                   if line.startswith("VmRSS:"))
        return rss, len(os.listdir(f"/proc/{pid}/fd")), len(_children(pid))
    except (OSError, StopIteration):
        return 0.0, 0, 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rss-tolerance", type=float, default=30.0, help="MiB of growth allowed after warm-up")
    args = parser.parse_args()
    steps_per_epoch, batch = 100, 32
    epochs = max(1, args.steps // steps_per_epoch)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "soak.yaml"
        config.write_text(f"""\
model: {{arch: resnet20, csg: {{slice_shape: [16, 16, 3, 3], code_size: 72}}}}
data: {{name: synthetic, synthetic_size: {steps_per_epoch * batch}, batch_size: {batch}, workers: {args.workers}}}
schedule: {{name: cosine}}
train: {{epochs: {epochs}, checkpoint_every_steps: 50, progress: false, log_every_steps: 10}}
""")
        cmd = [sys.executable, "-m", "acl_cli", "train", "--config", str(config), "--out", str(Path(tmp) / "run")]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL)
        samples = []
        while proc.poll() is None:
            samples.append((time.perf_counter() - t0, *_sample(proc.pid)))
            time.sleep(0.5)
        if proc.returncode != 0:
            print(f"training failed with exit {proc.returncode}")
            return 1
    wall = time.perf_counter() - t0
    # steady state: after warm-up (first eval, loader workers started), before the final log flush
    steady = [s for s in samples if 0.25 * wall <= s[0] <= 0.95 * wall and s[1] > 0]
    if len(steady) < 4:
        print("run too short to judge")
        return 1
    head, tail = steady[: len(steady) // 4], steady[-(len(steady) // 4):]
    rss_start, rss_end = max(s[1] for s in head), max(s[1] for s in tail)
    fds = sorted({s[2] for s in steady})
    workers = sorted({s[3] for s in steady})
    print(f"{epochs * steps_per_epoch} steps in {wall:.0f}s, {len(samples)} samples")
    print(f"RSS after warm-up: {rss_start:.0f} MiB -> at the end {rss_end:.0f} MiB "
          f"(peak {max(s[1] for s in steady):.0f} MiB)")
    print(f"open file descriptors after warm-up: {fds[0]}..{fds[-1]} (start of the steady part "
          f"{max(s[2] for s in head)}, end {max(s[2] for s in tail)}); loader worker processes: {workers}")
    mode = lambda xs: max(set(xs), key=xs.count)  # noqa: E731  (a checkpoint write briefly holds one more)
    ok = rss_end - rss_start <= args.rss_tolerance and mode([s[2] for s in tail]) <= mode([s[2] for s in head])
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
