#!/usr/bin/env python3
"""Compare the JSON files of scripts/gpu_acceptance.sh with the speed targets.

    python scripts/gpu_targets.py runs/gpu_acceptance

Prints one line per target (measured figure, target, PASS/FAIL/MISSING); exits 1 if any is missed.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def _load(out: Path, name: str) -> dict | None:
    path = out / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() and path.stat().st_size else None


def targets(out: Path) -> list[tuple[str, float | None, str, bool | None]]:
    """(what, measured, target, met) for each target; measured None when its benchmark did not run."""
    rows: list[tuple[str, float | None, str, bool | None]] = []
    for name in ("step_bf16_cl", "step_bf16_cl_compile"):
        r = _load(out, name)
        ratio = r["ratios"]["train_step"] if r else None
        rows.append((f"{name}: CSG/original train step", ratio, "<= 1.03", None if r is None else ratio <= 1.03))
    loaders = _load(out, "loaders")
    ratio = loaders["loaders"].get("ratio_device_over_torch") if loaders else None
    rows.append(("device loader / DataLoader img/s", ratio, ">= 3", None if ratio is None else ratio >= 3))
    epochs = {name: _load(out, name) for name in ("epochs_bf16_cl", "epochs_bf16_cl_compile",
                                                  "epochs_bf16_cl_cudagraphs")}
    for name, r in epochs.items():
        rows.append((f"{name}: CSG epoch (s)", r["csg"]["epoch_s"] if r else None, "(best of these <= 1.5)", None))
        rows.append((f"{name}: CSG/original epoch", r["ratios"]["epoch"] if r else None, "<= 1.03",
                     None if r is None else r["ratios"]["epoch"] <= 1.03))
    done = [r["csg"]["epoch_s"] for r in epochs.values() if r]
    best = min(done) if done else None
    rows.append(("best CSG epoch (s)", best, "<= 1.5", None if best is None else best <= 1.5))
    return rows


def main() -> int:
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_dir():
        print("usage: gpu_targets.py OUT_DIR (the folder scripts/gpu_acceptance.sh wrote)", file=sys.stderr)
        return 2
    rows = targets(Path(sys.argv[1]))
    for what, measured, target, met in rows:
        figure = "-" if measured is None else f"{measured:.3f}"
        verdict = {True: "PASS", False: "FAIL", None: "MISSING" if measured is None else ""}[met]
        print(f"{what:<48}{figure:>10}  {target:<24}{verdict}")
    return 1 if any(met is False or (met is None and measured is None) for _, measured, _, met in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
