# Shared by the sweep scripts: argument parsing, one run per experiment, GPU fan-out, the final report.
#
#   script.sh DATA_ROOT EPOCHS [OUT_DIR]
#
# Environment:
#   DRY_RUN=1         print the commands instead of running them
#   GPUS="0 1 2 3"    run up to one job per listed GPU at a time (CUDA_VISIBLE_DEVICES); default: one at a time
#   ACL="acl"         the command to call (e.g. "python -m acl_cli")
#   EXTRA_SET="--set data.workers=8"   extra overrides for every run
# A run whose directory holds final.json is skipped; one with only last.pt is resumed.
set -euo pipefail

ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ACL=${ACL:-acl}
read -r -a ACL_CMD <<< "$ACL"
DRY_RUN=${DRY_RUN:-0}
GPUS=${GPUS:-}
EXTRA_SET=${EXTRA_SET:-}

parse_args() {  # DATA_ROOT EPOCHS [OUT_DIR]
    if [ $# -lt 2 ]; then
        echo "usage: $(basename "$0") DATA_ROOT EPOCHS [OUT_DIR]   (DRY_RUN=1 prints the commands)" >&2
        exit 2
    fi
    DATA_ROOT=$1
    EPOCHS=$2
    OUT=${3:-runs/$(basename "$0" .sh)}
    case $EPOCHS in ''|*[!0-9]*|0) echo "EPOCHS must be a positive integer, got '$EPOCHS'" >&2; exit 2;; esac
    # the configs give milestones as fractions of the run, so they scale with EPOCHS
    read -r -a GPU_LIST <<< "$GPUS"
    NEXT_GPU=0
}

run_exp() {  # NAME CONFIG [--set k=v ...]: train (or resume, or skip) one experiment
    local name=$1 config=$2
    shift 2
    local dir="$OUT/$name"
    if [ -f "$dir/final.json" ]; then
        echo "skip $name (finished)"
        return
    fi
    local cmd
    if [ -f "$dir/last.pt" ]; then
        cmd=("${ACL_CMD[@]}" train --resume "$dir")
    else
        cmd=("${ACL_CMD[@]}" train --config "$ROOT_DIR/$config" --out "$dir" --overwrite
             --set "data.root=$DATA_ROOT" --set "train.epochs=$EPOCHS" "$@")
        # shellcheck disable=SC2206
        cmd+=($EXTRA_SET)
    fi
    if [ "$DRY_RUN" = 1 ]; then
        printf '%q ' "${cmd[@]}"
        echo
        return
    fi
    if [ ${#GPU_LIST[@]} -eq 0 ]; then
        "${cmd[@]}"
        return
    fi
    while [ "$(jobs -rp | wc -l)" -ge ${#GPU_LIST[@]} ]; do wait -n; done
    local gpu=${GPU_LIST[$(( NEXT_GPU % ${#GPU_LIST[@]} ))]}
    NEXT_GPU=$(( NEXT_GPU + 1 ))
    mkdir -p "$dir"
    echo "start $name on GPU $gpu"
    CUDA_VISIBLE_DEVICES=$gpu "${cmd[@]}" > "$OUT/$name.log" 2>&1 &
}

finish() {  # wait for the jobs, then write the report
    wait
    if [ "$DRY_RUN" = 1 ]; then
        echo "$ACL report $OUT/* --format markdown --plot $OUT/report.png"
        return
    fi
    local runs=()
    for d in "$OUT"/*/; do [ -f "$d/config.yaml" ] && runs+=("${d%/}"); done
    "${ACL_CMD[@]}" report "${runs[@]}" --format markdown > "$OUT/report.md"
    "${ACL_CMD[@]}" report "${runs[@]}" --format csv > "$OUT/report.csv"
    "${ACL_CMD[@]}" report "${runs[@]}" --plot "$OUT/report.png" > /dev/null 2>&1 || true  # the plot needs matplotlib
    cat "$OUT/report.md"
}
