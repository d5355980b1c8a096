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
source "$(dirname "$0")/lib.sh"
parse_args "$@"
for exp in ${CONFIGS:-resnet20 resnet20_csg_16_72}; do
    BASE_CONFIG=cifar10/$exp add_job "$exp" --set data.name=imagefolder --set data.val_split=0.1 \
        --set data.split_seed=0 --set data.loader=device --set train.channels_last=true
done
run_jobs
