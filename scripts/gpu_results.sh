#!/usr/bin/env bash
# The GPU runs of results/cifar10 in one call on a lent device machine (one GPU, a 10-minute limit a call),
# then the step profile. From the repository root there:
#   ZIP=gpu_data/cifar10-jpeg-train.zip scripts/gpu_results.sh EPOCHS OUT_DIR
# with gpu_data/ (the shared uncompressed zip, 52 MB, copied into a folder .git/info/exclude ignores) in the
# call's carry. It trains resnet20, resnet56 and their CSG configs with the authors' recipe (200 epochs is
# theirs; fewer keep its fractions), the CSG configs again with CSG_LR_SCALE=2, and the baselines the paper
# compared with (separable, CReLU and p4 group convolutions of ResNet-56 and DenseNet-BC-40 k=48), twelve runs
# at once on GPU 0:
# eager steps of these small networks are bound by kernel launches, so one GPU has room for several, and
# CUDA graphs (train.compile_mode reduce-overhead) cut the launches. At LIMIT_S (default 300) the sweeps are
# sent SIGTERM: their runs checkpoint and stop. The run folders are trained in RUNS (runs/gpu_results):
# recipe/, lr2/ and baselines/, last.pt included so a later call can resume them; OUT_DIR gets them packed, runs.tar,
# and profile_step.txt (two files: the device tool brings back at most 8). The images are unzipped into a
# fresh temporary folder, removed at exit (or into DATA_DIR, which must not exist yet: it is kept); an archive
# with a link, an absolute path or a .. among its members is refused. DRY_RUN=1 prints the commands. Commit a
# finished run by moving its folder (without last.pt) to results/cifar10/ and naming the device in the README table.
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${1:?usage: ZIP=... scripts/gpu_results.sh EPOCHS OUT_DIR}
OUT=${2:?usage: ZIP=... scripts/gpu_results.sh EPOCHS OUT_DIR}
LIMIT_S=${LIMIT_S:-300}
PYTHON=${PYTHON:-python}
DRY_RUN=${DRY_RUN:-0}
export DRY_RUN
export GPUS="0 0 0 0 0 0"  # each sweep's jobs at once, all on GPU 0
export EXTRA_SET="--set train.amp=bf16 --set train.compile=true --set train.compile_mode=reduce-overhead
--set data.workers=2"
RUNS=${RUNS:-runs/gpu_results}
if [ "$DRY_RUN" = 1 ]; then
    DATA=${DATA_DIR:-${TMPDIR:-/tmp}/acl-cifar10-jpeg.XXXXXX}
    printf 'unzip %q into %q (a new folder)\n' "${ZIP:-ZIP}" "$DATA"
else
    [ -f "${ZIP:-}" ] || { echo "error: ZIP must name the CIFAR-10 JPEG zip (got '${ZIP:-}')" >&2; exit 2; }
    # never a folder that may hold something: files left by an earlier call (or planted on a shared /tmp) would
    # join the training set, and a link among them would be written through
    if [ -n "${DATA_DIR:-}" ]; then
        mkdir -p -- "$(dirname -- "$DATA_DIR")"
        mkdir -- "$DATA_DIR" 2>/dev/null || { echo "error: DATA_DIR '$DATA_DIR' exists or cannot be made: give a new folder" >&2; exit 2; }
        DATA=$DATA_DIR
    else
        DATA=$(mktemp -d "${TMPDIR:-/tmp}/acl-cifar10-jpeg.XXXXXX")
    fi
    trap 'rm -rf -- "$DATA"' EXIT  # made here, so ours to remove; DATA_DIR is kept once unpacked
    # zipfile would quietly rewrite such members (or write a link's target as a file): refuse the archive instead
    "$PYTHON" - "$ZIP" "$DATA" <<'PY'
import stat, sys, zipfile

def refuse(why):
    print(f"error: ZIP {why}", file=sys.stderr)
    sys.exit(2)

try:
    with zipfile.ZipFile(sys.argv[1]) as z:
        for info in z.infolist():
            name, mode = info.filename, info.external_attr >> 16
            if stat.S_ISLNK(mode):
                refuse(f"member {name[:60]!r} is a symbolic link")
            if name.startswith("/") or ".." in name.split("/"):
                refuse(f"member {name[:60]!r} would be written outside the folder")
            if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
                refuse(f"member {name[:60]!r} is not a file or a folder")
        z.extractall(sys.argv[2])  # every member checked first: nothing is written from a refused archive
except (OSError, zipfile.BadZipFile, zipfile.LargeZipFile) as e:
    refuse(f"{sys.argv[1][:60]!r}: {e}")
PY
    [ -z "${DATA_DIR:-}" ] || trap - EXIT
fi
pids=()
status=0
CONFIGS="resnet20 resnet20_csg_16_72 resnet56 resnet56_csg_12_72" \
    timeout -s TERM "$LIMIT_S" scripts/results_cifar10.sh "$DATA" "$EPOCHS" "$RUNS/recipe" & pids+=($!)
if [ "$DRY_RUN" = 1 ]; then  # one after the other: two printing at once would mix their command lines
    wait "${pids[0]}" || status=1
    pids=()
fi
CSG_LR_SCALE=2 CONFIGS="resnet20_csg_16_72 resnet56_csg_12_72" \
    timeout -s TERM "$LIMIT_S" scripts/results_cifar10.sh "$DATA" "$EPOCHS" "$RUNS/lr2" & pids+=($!)
if [ "$DRY_RUN" = 1 ]; then
    wait "${pids[-1]}" || status=1
    pids=()
fi
CONFIGS="resnet56_sep resnet56_crelu resnet56_gcnn densenet_bc_40_48_sep densenet_bc_40_48_crelu densenet_bc_40_48_gcnn" \
    timeout -s TERM "$LIMIT_S" scripts/results_cifar10.sh "$DATA" "$EPOCHS" "$RUNS/baselines" & pids+=($!)
for pid in "${pids[@]}"; do wait "$pid" || status=1; done  # 1: a run failed or was stopped at LIMIT_S
if [ "$DRY_RUN" = 1 ]; then
    printf 'tar -cf %q -C %q recipe lr2 baselines\n' "$OUT/runs.tar" "$RUNS"
    printf '%q scripts/profile_step.py --device cuda --fused > %q\n' "$PYTHON" "$OUT/profile_step.txt"
    exit 0
fi
mkdir -p "$OUT"
tar -cf "$OUT/runs.tar" -C "$RUNS" recipe lr2 baselines
"$PYTHON" scripts/profile_step.py --device cuda --fused > "$OUT/profile_step.txt" || status=1
exit $status
