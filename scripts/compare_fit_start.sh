#!/usr/bin/env bash
# Does model.csg.init: fit (generator and codes from an SVD of the teacher's kernels) make distillation
# converge faster than the authors' random start? Trains CONFIG distilled from TEACHER once per start, on the
# same images, split and schedule, and prints each epoch's held-out top-1 side by side.
#   TRAIN_SUBSET=10000 scripts/compare_fit_start.sh DATA_ROOT TEACHER_RUN EPOCHS OUT_DIR [CONFIG]
# DATA_ROOT is an image folder (DATA_ROOT/train/<class>/...), 10 % held out with split_seed 0 as in
# results_cifar10.sh; CONFIG defaults to cifar10/resnet20_csg_16_72; EXTRA_SET adds --set options (one per line
# or space-separated); STARTS defaults to "fit authors".
set -euo pipefail
if [ $# -lt 4 ] || [ $# -gt 5 ]; then
    echo "usage: $(basename "$0") DATA_ROOT TEACHER_RUN EPOCHS OUT_DIR [CONFIG]" >&2
    exit 2
fi
data=$1 teacher=$2 epochs=$3 out=$4 config=${5:-cifar10/resnet20_csg_16_72}
read -r -d '' -a extra <<< "${EXTRA_SET:-}" || true
subset=()
[ -n "${TRAIN_SUBSET:-}" ] && subset=(--set "data.train_subset=$TRAIN_SUBSET")
starts=(${STARTS:-fit authors})
for start in "${starts[@]}"; do
    acl train --config "$config" --out "$out/$start" --overwrite --set "data.root=$data" --set data.name=imagefolder \
        --set data.val_split=0.1 --set data.split_seed=0 --set data.loader=device --set train.channels_last=true \
        --set "train.epochs=$epochs" --set "distill.teacher=$teacher" --set "model.csg.init=$start" \
        --set train.progress=false "${subset[@]}" "${extra[@]}" | grep -v '^  epoch' | grep -v '^epoch'
done
# held-out top-1 after each epoch, one column per start (read back from each run's metrics.csv)
python3 - "$out" "${starts[@]}" <<'PY'
import csv, sys
out, starts = sys.argv[1], sys.argv[2:]
tops = {s: [row["val_top1"] for row in csv.DictReader(open(f"{out}/{s}/metrics.csv"))] for s in starts}
print("epoch " + " ".join(f"{s:>10}" for s in starts))
for e in range(max(map(len, tops.values()))):
    print(f"{e + 1:>5} " + " ".join(f"{float(tops[s][e]):>10.2f}" if e < len(tops[s]) else f"{'-':>10}" for s in starts))
PY
