#!/usr/bin/env bash
# Does giving codes and generator their own lr and weight decay (optim.csg_lr_scale, optim.csg_weight_decay)
# close the CSG network's gap to its original on a short schedule? Trains the original, the CSG network with
# the recipe, and the CSG network once per VARIANTS entry LR_SCALE:WEIGHT_DECAY, on the same images, split
# (10 % held out, split_seed 0, as results_cifar10.sh) and schedule; the report compares their held-out top-1.
#   TRAIN_SUBSET=10000 VARIANTS="0.125:4e-3" scripts/compare_csg_optim.sh DATA_ROOT EPOCHS [OUT_DIR]
# DATA_ROOT is an image folder (DATA_ROOT/train/<class>/...). PAIR="resnet20 resnet20_csg_16_72" names the two
# configs (configs/cifar10/); CSG_INIT (default scaled, as the committed CSG run) sets model.csg.init;
# TRAIN_SUBSET trains on that many of the training images (default all). Every sweep option works here too
# (PARALLEL, GPUS, DRY_RUN, --sbatch; see scripts/lib.sh).
source "$(dirname "$0")/lib.sh"
parse_args "$@"
read -r original csg <<< "${PAIR:-resnet20 resnet20_csg_16_72}"
[ -n "${csg:-}" ] || die "PAIR must name two configs, the original and its CSG version, got '${PAIR:-}'"
sets=("${RESULTS_SETS[@]}")
[ -n "${TRAIN_SUBSET:-}" ] && need_int TRAIN_SUBSET "$TRAIN_SUBSET" && sets+=(--set "data.train_subset=$TRAIN_SUBSET")
# plain in --set: a word, never cut at a " #" or read as something else
[[ ${CSG_INIT:-scaled} =~ ^[a-z_]+$ ]] || die "CSG_INIT must name an init (authors, scaled, binary), got '${CSG_INIT:-}'"
BASE_CONFIG=cifar10/$original add_job "$original" "${sets[@]}"
csg_sets=("${sets[@]}" --set "model.csg.init=${CSG_INIT:-scaled}")
BASE_CONFIG=cifar10/$csg add_job "$csg" "${csg_sets[@]}"
number='([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?'  # two numbers: plain in --set and in the run's name
for variant in ${VARIANTS:-0.125:4e-3}; do
    lr_scale=${variant%%:*} weight_decay=${variant##*:}
    [[ $variant =~ ^$number:$number$ ]] || die "VARIANTS entries are LR_SCALE:WEIGHT_DECAY, got '$variant'"
    BASE_CONFIG=cifar10/$csg add_job "${csg}_lr${lr_scale}_wd${weight_decay}" "${csg_sets[@]}" \
        --set "optim.csg_lr_scale=$lr_scale" --set "optim.csg_weight_decay=$weight_decay"
done
run_jobs
