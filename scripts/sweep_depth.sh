#!/usr/bin/env bash
# Compression as CIFAR ResNets grow: each depth original and CSG (SLICE x SLICE x 3 x 3, CODE).
#   scripts/sweep_depth.sh ~/data 200
#   DEPTHS="20 56 110" SLICE=16 CODE=128 DRY_RUN=1 scripts/sweep_depth.sh ~/data 200
source "$(dirname "$0")/lib.sh"
parse_args "$@"
SLICE=${SLICE:-12}
CODE=${CODE:-72}
need_int "SLICE and CODE" "$SLICE" "$CODE"
for depth in ${DEPTHS:-20 32 44 56 110}; do
    need_int DEPTHS "$depth"
    add_job "resnet$depth" --set "model.arch=resnet$depth" --set model.csg=null  # the original, whatever BASE_CONFIG has
    add_job "resnet${depth}_csg_${SLICE}_${CODE}" --set "model.arch=resnet$depth" \
        --set "model.csg={slice_shape: [$SLICE, $SLICE, 3, 3], code_size: $CODE}"
done
run_jobs
