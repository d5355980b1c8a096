#!/usr/bin/env bash
# The runs committed under results/cifar10/: the paper's CIFAR-10 configs trained by acl itself, with the
# authors' recipe (configs/base/cifar10.yaml), on an image folder of the CIFAR-10 training images (the
# JPEGs in shared/data: DATA_ROOT/train/<class>/*.jpg). 10 % of it, class-balanced with split_seed 0, is
# held out (45,000 train / 5,000 val) and best.pt is selected on that split alone.
#   PARALLEL=2 OMP_NUM_THREADS=1 scripts/results_cifar10.sh ~/cifar10-jpeg 30 results/cifar10   # the CPU pair: ResNet-20
#   CONFIGS="resnet56 resnet56_csg_12_72" scripts/results_cifar10.sh ~/cifar10-jpeg 200 results/cifar10
# Every sweep option works here too (GPUS, DRY_RUN, --sbatch, TASK_INDEX; see scripts/lib.sh). Each run's
# folder is named after its config in configs/cifar10/; its best.pt holds no optimizer state (the resume
# state is last.pt, which results/ does not commit).
#
# DISTILL=1: each CSG config is trained instead as <config>_distill, distilled (configs' distill defaults:
# alpha 0.9, T 4) from the run of its original in OUT_DIR (resnet20_csg_16_72 from resnet20), which must
# be finished first.
# CSG_LR_SCALE=2: each CSG config is trained instead as <config>_lr2, with optim.csg_lr_scale=2 (codes and
# generator at twice the recipe's lr; see the README, "Codes and generator at their own lr"). With DISTILL
# too, the name is <config>_lr2_distill.
# REUSE_GENERATOR=CKPT: each CSG config is trained instead as <config>_reuse, its generator taken from CKPT
# (an acl checkpoint, e.g. the authors' RN20_1616-128 made one by acl import-original) and kept frozen
# (model.csg.init_from, model.csg.freeze): only codes, norms and the classifier train. CSG_LR_SCALE still
# sets the codes' lr but does not rename the run (the committed reuse run is at the lr2 run's lr: the
# README's command says CSG_LR_SCALE=2). It cannot be combined with DISTILL.
# The commands that made the committed runs are in the README ("Reproducing the paper"), which a test runs.
source "$(dirname "$0")/lib.sh"
parse_args "$@"
if [ -n "${CSG_LR_SCALE:-}" ] && ! [[ $CSG_LR_SCALE =~ ^[0-9]+(\.[0-9]+)?$ ]]; then
    die "CSG_LR_SCALE must be a number such as 2 or 0.5 (it names the runs), got '$CSG_LR_SCALE'"
fi
if [ -n "${REUSE_GENERATOR:-}" ]; then
    [ -z "${DISTILL:-}" ] || die "REUSE_GENERATOR and DISTILL cannot be combined"
    [ -f "$REUSE_GENERATOR" ] || die "REUSE_GENERATOR: '$REUSE_GENERATOR' is not a checkpoint file"
    REUSE_GENERATOR=$(realpath -- "$REUSE_GENERATOR")  # absolute: an sbatch task runs from the project
    reuse=$(yaml_str REUSE_GENERATOR "$REUSE_GENERATOR") || exit 2
fi
for exp in ${CONFIGS:-resnet20 resnet20_csg_16_72}; do
    name=$exp
    sets=("${RESULTS_SETS[@]}")
    if [[ $exp == *_csg_* ]]; then
        if [ -n "${CSG_LR_SCALE:-}" ]; then
            [ -n "${REUSE_GENERATOR:-}" ] || name+=_lr$CSG_LR_SCALE
            sets+=(--set "optim.csg_lr_scale=$CSG_LR_SCALE")
        fi
        if [ -n "${REUSE_GENERATOR:-}" ]; then
            name+=_reuse
            sets+=(--set "model.csg.init_from=$reuse" --set model.csg.freeze=true)
        fi
        if [ -n "${DISTILL:-}" ]; then
            name+=_distill
            teacher=$(yaml_str OUT_DIR "$(realpath -m -- "$OUT/${exp%%_csg_*}")") || exit 2
            sets+=(--set "distill.teacher=$teacher")
        fi
    fi
    BASE_CONFIG=cifar10/$exp add_job "$name" "${sets[@]}"
done
run_jobs
