#!/usr/bin/env bash
# The paper's comparison: does CSG reduce parameters better than the usual alternatives? Trains, on one split
# and schedule (the committed results' split: 10 % held out, split_seed 0, as results_cifar10.sh), the
# original network of a FAMILY, its CSG config and the authors' three baselines: separable convolutions
# (<family>_sep), CReLU (<family>_crelu) and p4 group convolutions (<family>_gcnn); the report is one table:
# params, compression, top-1, img/s, s/epoch.
#   TRAIN_SUBSET=10000 scripts/compare_baselines.sh DATA_ROOT EPOCHS [OUT_DIR]
#   FAMILY=densenet_bc_40_48 scripts/compare_baselines.sh DATA_ROOT 300 runs/baselines_dn
# DATA_ROOT is an image folder (DATA_ROOT/train/<class>/...). FAMILY (default resnet56) is a shipped config
# of configs/cifar10/; CSG names its CSG config (default <family>_csg_12_72, the paper's). A baseline trains
# from its own config (configs/cifar10/<family>_sep.yaml, ...) where one is shipped, else from the family's
# config with model.arch set. CSG_INIT (default scaled, as the committed CSG runs) sets model.csg.init;
# TRAIN_SUBSET trains on that many of the training images (default all). Every sweep option works here too
# (PARALLEL, GPUS, SEEDS, DRY_RUN, --sbatch; see scripts/lib.sh).
source "$(dirname "$0")/lib.sh"
parse_args "$@"
family=${FAMILY:-resnet56}
csg=${CSG:-${family}_csg_12_72}
for name in "$family" "$csg"; do  # plain words: folder names and shipped configs' names
    [[ $name =~ ^[a-z0-9_]+$ ]] || die "FAMILY and CSG name shipped configs (acl config list), got '$name'"
    [ -f "$ROOT_DIR/configs/cifar10/$name.yaml" ] || die "no shipped config cifar10/$name (acl config list)"
done
[[ $csg == "${family}"_csg_* ]] || die "CSG must name a CSG config of $family (${family}_csg_...), got '$csg'"
[[ ${CSG_INIT:-scaled} =~ ^[a-z_]+$ ]] || die "CSG_INIT must name an init (authors, scaled, binary), got '${CSG_INIT:-}'"
sets=("${RESULTS_SETS[@]}")
[ -n "${TRAIN_SUBSET:-}" ] && need_int TRAIN_SUBSET "$TRAIN_SUBSET" && sets+=(--set "data.train_subset=$TRAIN_SUBSET")
BASE_CONFIG=cifar10/$family add_job "$family" "${sets[@]}" --set model.csg=null
BASE_CONFIG=cifar10/$csg add_job "$csg" "${sets[@]}" --set "model.csg.init=${CSG_INIT:-scaled}"
for kind in sep crelu gcnn; do
    if [ -f "$ROOT_DIR/configs/cifar10/${family}_$kind.yaml" ]; then
        BASE_CONFIG=cifar10/${family}_$kind add_job "${family}_$kind" "${sets[@]}"
    else
        BASE_CONFIG=cifar10/$family add_job "${family}_$kind" "${sets[@]}" --set "model.arch=${family}_$kind" \
            --set model.csg=null
    fi
done
run_jobs
