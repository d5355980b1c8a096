#!/usr/bin/env bash
# The GPU side of the speed targets in one command, on a machine with a CUDA device:
#   scripts/gpu_acceptance.sh [OUT_DIR]                 # synthetic CIFAR-10-sized data (50,000 32x32 images)
#   DATA_ROOT=~/data scripts/gpu_acceptance.sh          # real CIFAR-10 (torchvision's files under DATA_ROOT)
# Runs the CUDA tests, then acl bench: the CSG/original train-step ratio with bf16 + channels_last (eager and
# compiled), the loaders, whole CIFAR-10-sized epochs of acl train (eager, compiled, CUDA graphs) and the
# share of kernel generation in a step. One JSON per benchmark lands in OUT_DIR; the last lines compare
# them with the targets (exit 1 if one is missed). DRY_RUN=1 prints the commands instead; ONLY="tests step_fp32"
# runs just those steps (names as in OUT_DIR, without the extension), e.g. to split the run or redo one figure.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/yaml_str.sh
OUT=${1:-runs/gpu_acceptance}
ACL=${ACL:-acl}
read -r -a ACL_CMD <<< "$ACL"
PYTHON=${PYTHON:-python}
DRY_RUN=${DRY_RUN:-0}
ONLY=${ONLY:-}
CFG=configs/cifar10/resnet56_csg_12_72.yaml  # the authors' recipe: batch 192
if [ -n "${DATA_ROOT:-}" ]; then
    root=$(yaml_str DATA_ROOT "$DATA_ROOT") || exit 2
    DATA=(--set data.name=cifar10 --set "data.root=$root" --set data.val_split=0)
else
    DATA=(--set data.name=synthetic --set data.synthetic_size=50000 --set data.preset=cifar --set data.val_split=0)
fi
FAST=(--set train.amp=bf16 --set train.channels_last=true)
FAILED=()

step() {  # LOG_FILE COMMAND...: run it, its output also in OUT/LOG_FILE (or only print it with DRY_RUN=1)
    local log=$1
    shift
    if [ -n "$ONLY" ] && [[ " $ONLY " != *" ${log%.*} "* ]]; then
        return
    fi
    if [ "$DRY_RUN" = 1 ]; then
        printf '%q ' "$@"
        printf '> %q\n' "$OUT/$log"
        return
    fi
    echo "== $log" >&2
    "$@" | tee "$OUT/$log" || FAILED+=("$log")  # carry on: the other figures are still worth having
}
bench() {  # NAME ARGS...: one acl bench, its JSON in OUT/NAME.json
    local name=$1
    shift
    step "$name.json" "${ACL_CMD[@]}" bench --config "$CFG" --device cuda --format json "$@"
}

[ "$DRY_RUN" = 1 ] || mkdir -p "$OUT"
step tests.txt "$PYTHON" -m pytest -q -rs tests/test_cuda.py
bench step_fp32
bench step_bf16_cl "${FAST[@]}"
bench step_bf16_cl_compile "${FAST[@]}" --set train.compile=true
bench loaders "${DATA[@]}" --set data.workers=8 --data --steps 20 --repeats 5
bench epochs_bf16_cl "${DATA[@]}" "${FAST[@]}" --set data.loader=device --epochs 3
bench epochs_bf16_cl_compile "${DATA[@]}" "${FAST[@]}" --set data.loader=device --set train.compile=true --epochs 3
bench epochs_bf16_cl_cudagraphs "${DATA[@]}" "${FAST[@]}" --set data.loader=device --set train.compile=true \
    --set train.compile_mode=reduce-overhead --epochs 3
step profile.txt "$PYTHON" scripts/profile_generation.py --device cuda --batch-size 192
step targets.txt "$PYTHON" scripts/gpu_targets.py "$OUT"
if [ ${#FAILED[@]} -gt 0 ]; then
    echo "failed: ${FAILED[*]}" >&2
    exit 1
fi
