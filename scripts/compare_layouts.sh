#!/usr/bin/env bash
# flat (the authors' reshape, some codes unused) vs tile (every code reaches the kernel), same parameters.
#   scripts/compare_layouts.sh ~/data 200
#   ARCH=resnet20 SETTINGS="16:72" DRY_RUN=1 scripts/compare_layouts.sh ~/data 200
source "$(dirname "$0")/lib.sh"
parse_args "$@"
ARCH=${ARCH:-resnet56}
for setting in ${SETTINGS:-12:72 16:128}; do
    slice=${setting%%:*}
    code=${setting##*:}
    need_int "SETTINGS (SLICE:CODE)" "$slice" "$code"
    for layout in flat tile; do
        add_job "${ARCH}_csg_${slice}_${code}_${layout}" --set "model.arch=$ARCH" \
            --set "model.csg={slice_shape: [$slice, $slice, 3, 3], code_size: $code, layout: $layout}"
    done
done
run_jobs
