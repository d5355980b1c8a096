#!/usr/bin/env bash
# Code size x slice shape on one architecture (ARCH, default resnet56), plus its original.
#   scripts/sweep_code_slice.sh ~/data 200
#   ARCH=resnet20 CODE_SIZES="36 72" SLICES="8 16" DRY_RUN=1 scripts/sweep_code_slice.sh ~/data 50
source "$(dirname "$0")/lib.sh"
parse_args "$@"
ARCH=${ARCH:-resnet56}
add_job "$ARCH" --set "model.arch=$ARCH" --set model.csg=null  # the original, whatever BASE_CONFIG has
for slice in ${SLICES:-8 12 16}; do
    for code in ${CODE_SIZES:-36 72 128}; do
        need_int "SLICES and CODE_SIZES" "$slice" "$code"
        add_job "${ARCH}_csg_${slice}_${code}" --set "model.arch=$ARCH" \
            --set "model.csg={slice_shape: [$slice, $slice, 3, 3], code_size: $code}"
    done
done
run_jobs
