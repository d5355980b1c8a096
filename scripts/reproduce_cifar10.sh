#!/usr/bin/env bash
# The authors' CIFAR-10 table: ResNet-20/56 and DenseNet-BC-40 (k=36, 48), original and CSG.
#   scripts/reproduce_cifar10.sh ~/data 200            # the full recipe (200 epochs)
#   DRY_RUN=1 scripts/reproduce_cifar10.sh ~/data 200  # print the commands
#   GPUS="0 1 2 3" SEEDS="0 1 2" scripts/reproduce_cifar10.sh ~/data 200   # one job per free GPU, 3 seeds each
#   scripts/reproduce_cifar10.sh --sbatch ~/data 200 runs/paper       # a SLURM job array instead
#   DATASET=cifar100 scripts/reproduce_cifar10.sh ~/data 200 runs/c100 # the same grid on CIFAR-100
source "$(dirname "$0")/lib.sh"
parse_args "$@"
for exp in resnet20 resnet20_csg_16_72 resnet56 resnet56_csg_12_72 resnet56_csg_16_128 \
           densenet_bc_40_36 densenet_bc_40_36_csg_12_72 densenet_bc_40_48 densenet_bc_40_48_csg_12_72; do
    BASE_CONFIG=cifar10/$exp add_job "$exp"
done
run_jobs
