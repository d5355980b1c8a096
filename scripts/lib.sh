# Shared by the sweep scripts: arguments, the job list, free-GPU scheduling, SLURM job arrays, the report.
#
#   script.sh DATA_ROOT EPOCHS [OUT_DIR]            run the grid here, one job per free GPU (GPUS=...)
#   script.sh --list DATA_ROOT EPOCHS [OUT_DIR]     the jobs, one per line: INDEX NAME (a stable order)
#   TASK_INDEX=N script.sh DATA_ROOT EPOCHS [OUT]   run only job N (what each SLURM array task does)
#   script.sh --sbatch DATA_ROOT EPOCHS [OUT_DIR]   write OUT_DIR/sweep.sbatch (the job array) and report.sbatch
#   script.sh --report DATA_ROOT EPOCHS [OUT_DIR]   which jobs finished, and the report of those that did
#
# Environment:
#   DRY_RUN=1            print what the run would do instead of doing it: each job's command, or the skip or
#                        FAILED line the run would print (acl plan decides, as for the run itself)
#   GPUS="0 1 2 3"       run one job per listed GPU at a time, each started on a GPU that is free
#   PARALLEL=2           without GPUS: run this many jobs at a time here (CPU runs; set OMP_NUM_THREADS=cores/N)
#   SEEDS="0 1 2"        run every grid point once per seed (names end in _seedN; acl report gives mean ± std)
#   BASE_CONFIG=CONFIG   the config every job starts from: a file, or a shipped config's name (acl config list;
#                        default cifar10/resnet20; imagenet/resnet18 for an ImageNet grid)
#   DATASET=cifar100     shorthand for --set data.name=cifar100 --set model.num_classes=100
#   ACL="acl"            the command to call (e.g. "python -m acl_cli")
#   EXTRA_SET="--set data.workers=8"   extra overrides for every run, resumed ones too
#   POLL_S=2             how often (seconds) the local scheduler looks at running jobs
#   SLURM (--sbatch): SBATCH_PARTITION, SBATCH_TIME (24:00:00), SBATCH_GPUS (1; 0 for none), SBATCH_CPUS (8), SBATCH_MEM
#                     (32G), SBATCH_MAX_PARALLEL (tasks at once; default all), SBATCH_EXTRA (more #SBATCH lines)
# What each job does is acl plan's decision alone (bash runs what it is told): a run whose directory holds
# final.json is skipped if it was trained with the settings its job asks for (else it is a failed job, named
# with what differs, and left as it is); one with last.pt is resumed, with the data root, epoch budget and
# EXTRA_SET given now (a cluster may stage the data under a new path each time), if a resume can bring it to
# the job's settings; any other is trained.
set -uo pipefail  # not -e: one failed job must not stop the others
source "$(dirname "${BASH_SOURCE[0]}")/yaml_str.sh"  # yaml_str: every path given to --set goes through it

ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCRIPT_PATH="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
ACL=${ACL:-acl}
read -r -a ACL_CMD <<< "$ACL"
DRY_RUN=${DRY_RUN:-0}
GPUS=${GPUS:-}
PARALLEL=${PARALLEL:-1}
EXTRA_SET=${EXTRA_SET:-}
BASE_CONFIG=${BASE_CONFIG:-cifar10/resnet20}
POLL_S=${POLL_S:-2}
# every variable a script's grid may read: written into the sbatch file so each task sees the same grid
SWEEP_VARS=(ACL SEEDS BASE_CONFIG DATASET EXTRA_SET ARCH SLICES CODE_SIZES DEPTHS SLICE CODE SETTINGS CONFIGS
            DISTILL CSG_LR_SCALE PAIR CSG_INIT TRAIN_SUBSET VARIANTS FAMILY CSG REUSE_GENERATOR)
# the split of the committed results (results_cifar10.sh, compare_csg_optim.sh): an image folder with a
# class-balanced 10 % of its training images held out (split_seed 0), best.pt chosen on those
RESULTS_SETS=(--set data.name=imagefolder --set data.val_split=0.1 --set data.split_seed=0 --set data.loader=device
              --set train.channels_last=true)
JOB_NAMES=()
JOB_CONFIGS=()
JOB_ARGS=()

die() {  # MESSAGE: one line, exit 2
    echo "error: $*" >&2
    exit 2
}

not_writable() {  # PATH: why a file the script writes with a redirect may not be written there, or nothing.
    # A redirect follows a symbolic link (it would fill the file it points to) and blocks on a FIFO.
    if [ -L "$1" ]; then
        echo "$1 is a symbolic link (never written through): remove it"
    elif [ -e "$1" ] && [ ! -f "$1" ]; then
        echo "$1 is not a regular file: remove it"
    elif [ -f "$1" ] && [ "$(stat -c %h -- "$1")" -gt 1 ]; then  # a hard link: truncating it empties the other name
        echo "$1 is a hard link (another name for one of your files): remove it"
    fi
}

need_int() {  # WHAT VALUE...: die unless each VALUE is a positive integer (grids write them into YAML as they are)
    local value
    for value in "${@:2}"; do
        case $value in ''|*[!0-9]*|0*) die "$1 must hold positive integers, got '$value'";; esac
        small_int "$1" "$value"
    done
}

small_int() {  # WHAT VALUE: die unless VALUE (digits) is below 2^32: bash arithmetic wraps silently past 2^63
    local digits=$2
    while [ "${digits:0:1}" = 0 ]; do digits=${digits:1}; done
    if [ ${#digits} -gt 10 ] || { [ ${#digits} -eq 10 ] && [[ $digits > 4294967295 ]]; }; then
        die "$1 must be below 2^32, got '${2:0:60}'"
    fi
}

parse_args() {  # [--list|--sbatch|--report] DATA_ROOT EPOCHS [OUT_DIR]
    MODE=run
    case ${1:-} in --list|--sbatch|--report) MODE=${1#--}; shift;; esac
    if [ $# -lt 2 ] || [ $# -gt 3 ]; then
        echo "usage: $(basename "$0") [--list|--sbatch|--report] DATA_ROOT EPOCHS [OUT_DIR]   (DRY_RUN=1 prints" \
             "the commands; TASK_INDEX=N runs job N)" >&2
        exit 2
    fi
    DATA_ROOT=$1
    EPOCHS=$2
    OUT=${3:-runs/$(basename "$0" .sh)}
    [ -n "$DATA_ROOT" ] || die "DATA_ROOT is empty (an unset variable?): name the data folder"
    [ ! -e "$OUT" ] || [ -d "$OUT" ] || die "OUT_DIR '${OUT:0:60}' is not a folder: name a folder (or a new one)"
    DATA_ROOT_YAML=$(yaml_str DATA_ROOT "$DATA_ROOT") || exit 2
    case $EPOCHS in ''|*[!0-9]*|0) die "EPOCHS must be a positive integer, got '$EPOCHS'";; esac
    small_int EPOCHS "$EPOCHS"
    if [ -n "${TASK_INDEX+set}" ]; then  # set, even to nothing: an empty index must not mean "every job"
        case $TASK_INDEX in ''|*[!0-9]*) die "TASK_INDEX must be a job index (see --list), got '$TASK_INDEX'";; esac
        small_int TASK_INDEX "$TASK_INDEX"
        TASK_INDEX=$((10#$TASK_INDEX))  # decimal: 08 is job 8, not a bad octal number
    fi
    local seeds=() seed
    for seed in ${SEEDS:-}; do
        case $seed in *[!0-9]*) die "SEEDS must be non-negative integers, got '$seed'";; esac
        small_int SEEDS "$seed"
        [[ " ${seeds[*]} " != *" $((10#$seed)) "* ]] || die "SEEDS names seed $((10#$seed)) twice: its runs would share a folder"
        seeds+=("$((10#$seed))")  # decimal: 010 is seed 10
    done
    [ -n "${SEEDS+set}" ] && SEEDS="${seeds[*]}"
    # the configs give milestones as fractions of the run, so they scale with EPOCHS
    case $PARALLEL in ''|*[!0-9]*|0) die "PARALLEL must be a positive integer, got '$PARALLEL'";; esac
    read -r -d '' -a GPU_LIST <<< "$GPUS"  # -d '': every line, not only the first
    read -r -d '' -a EXTRA <<< "$EXTRA_SET"
    DATASET_SET=()
    case ${DATASET:-} in
        '') ;;
        cifar10) DATASET_SET=(--set data.name=cifar10 --set model.num_classes=10);;
        cifar100) DATASET_SET=(--set data.name=cifar100 --set model.num_classes=100);;
        *) die "DATASET must be cifar10 or cifar100 (for other data set BASE_CONFIG), got '$DATASET'";;
    esac
}

config_arg() {  # CONFIG: a file (made absolute: a task may run elsewhere) or a shipped config's name, as acl takes it
    if [ -f "$1" ]; then
        realpath -- "$1"
    elif [ -f "$ROOT_DIR/$1" ]; then  # a path in this project, given from another directory
        printf '%s\n' "$ROOT_DIR/$1"
    else
        case $1 in *[!A-Za-z0-9_./-]*|'') die "BASE_CONFIG '$1' is neither a file nor a shipped config's name";; esac
        printf '%s\n' "$1"  # a shipped config's name: acl finds it, or says which names are close
    fi
}

add_job() {  # NAME [--set k=v ...]: one grid point (once per seed with SEEDS)
    local name=$1
    shift
    if [ -z "${SEEDS:-}" ]; then
        _add_job "$name" "$@"
        return
    fi
    for seed in $SEEDS; do
        _add_job "${name}_seed$seed" "$@" --set "train.seed=$seed"
    done
}

_add_job() {
    local name=$1
    shift
    # the name is a folder in OUT: no / or .. to leave it, no leading . (the report's $OUT/*/ would miss it), and
    # nothing YAML reads as syntax, since the grid values that make it up are also given to --set unquoted
    case $name in
        .*|*[!A-Za-z0-9_.:+=@-]*) die "job name '$name' (from the grid's variables) must be a folder name of letters, digits and _ . : + = @ -, not starting with .";;
    esac
    JOB_NAMES+=("$name")
    JOB_CONFIGS+=("$(config_arg "$BASE_CONFIG")")
    JOB_ARGS+=("$( (($#)) && printf '%q ' "$@")")  # nothing, not '' (an empty argument), when there are none
}

job_sets() {  # INDEX: SETS=(every --set of that job: data root, epochs, its grid point, DATASET, EXTRA_SET)
    local args
    eval "args=(${JOB_ARGS[$1]})"
    SETS=(--set "data.root=$DATA_ROOT_YAML" --set "train.epochs=$EPOCHS" "${args[@]}" "${DATASET_SET[@]}" "${EXTRA[@]}")
}

job_plan() {  # INDEX: acl plan's decision for that job: PLAN (train, resume, skip, conflict or error), WHY (of a
    # conflict or error) and CMD (of train and resume). A finished run is never retrained, and one made with other
    # settings (another epoch budget, init, EXTRA_SET) never passes for this job's result.
    local i=$1 dir="$OUT/${JOB_NAMES[$1]}" answer status
    job_sets "$i"
    answer=$("${ACL_CMD[@]}" plan "$dir" --config "${JOB_CONFIGS[$i]}" "${SETS[@]}" 2>&1)
    status=$?
    local last=${answer##*$'\n'}  # the answer is the last line (a library's warning may come first)
    CMD=()
    WHY=""
    case $status:$last in
        0:train) PLAN=train; CMD=("${ACL_CMD[@]}" train --config "${JOB_CONFIGS[$i]}" --out "$dir" --overwrite "${SETS[@]}");;
        0:resume) PLAN=resume; CMD=("${ACL_CMD[@]}" train --resume "$dir" "${SETS[@]}");;
        "0:skip (finished)") PLAN=skip;;
        "0:conflict: "*) PLAN=conflict; WHY=${last#conflict: };;
        *) PLAN=error; answer=${answer//$'\n'/; }; WHY="acl plan: ${answer:-no answer (exit $status)}";;
    esac
}

_not_run() {  # INDEX: the line of a job acl plan did not let run (PLAN conflict or error); the run is kept as it is
    if [ "$PLAN" = conflict ]; then
        echo "${JOB_NAMES[$1]} $WHY: kept as it is; to train this job too, give the sweep another OUT_DIR"
    else
        echo "${JOB_NAMES[$1]}: $WHY"
    fi
}

run_jobs() {  # what the script's mode asks for, over the jobs added
    case $MODE in
        list) for i in "${!JOB_NAMES[@]}"; do printf '%s\t%s\n' "$i" "${JOB_NAMES[$i]}"; done;;
        sbatch) write_sbatch;;
        report) report_status;;
        run)
            if [ -n "${TASK_INDEX+set}" ]; then
                run_one "$TASK_INDEX"
            elif [ "$DRY_RUN" = 1 ]; then
                dry_run
            else
                run_local
            fi;;
    esac
}

dry_run() {  # DRY_RUN=1: each job's decision, printed as the run prints it (a command for train and resume);
    # nothing runs. Exit 1 where the run would have a failed job.
    local failed=0
    for i in "${!JOB_NAMES[@]}"; do
        job_plan "$i"
        case $PLAN in
            train|resume) printf '%q ' "${CMD[@]}"; echo;;
            skip) echo "skip ${JOB_NAMES[$i]} (finished)";;
            *) echo "FAILED $(_not_run "$i")" >&2; failed=1;;
        esac
    done
    # what write_report runs after the jobs (over the runs that finished then)
    printf '%s report %q/* --format markdown --out %q --overwrite\n' "$ACL" "$OUT" "$OUT/report.md"
    exit $failed
}

run_one() {  # INDEX: exactly that job, in the foreground (a SLURM array task); its exit status is ours
    local i=$1
    [ "$i" -lt "${#JOB_NAMES[@]}" ] || die "TASK_INDEX $i is out of range: this sweep has ${#JOB_NAMES[@]} jobs (0-$(( ${#JOB_NAMES[@]} - 1 )))"
    job_plan "$i"
    case $PLAN in
        skip) echo "skip ${JOB_NAMES[$i]} (finished)"; return 0;;
        conflict|error) echo "error: $(_not_run "$i")" >&2; exit 1;;
    esac
    if [ "$DRY_RUN" = 1 ]; then  # that job's command, printed as dry_run prints it; nothing made, nothing run
        printf '%q ' "${CMD[@]}"; echo
        exit 0
    fi
    mkdir -p "$OUT"
    echo "job $i: ${JOB_NAMES[$i]}"
    exec "${CMD[@]}"  # acl itself gets SLURM's signals: it checkpoints and a requeued task resumes
}

# ---- local runs: every job, each on a free GPU, supervised to the end

declare -A RUNNING_GPU=() RUNNING_JOB=()
FINISHED=()
FAILED=()
SKIPPED=()
FREE_GPUS=()

_record() {  # INDEX STATUS
    local name=${JOB_NAMES[$1]}
    if [ "$2" -eq 0 ]; then
        FINISHED+=("$name")
        echo "done $name"
    else
        FAILED+=("$name (exit $2): see $OUT/$name.log")
        echo "FAILED $name (exit $2): see $OUT/$name.log" >&2
    fi
}

_reap() {  # collect the jobs that ended, free their GPUs; status 0 if any ended
    local running pid ended=1
    running=" $(jobs -rp | tr '\n' ' ') "
    for pid in "${!RUNNING_GPU[@]}"; do
        if [[ $running != *" $pid "* ]]; then
            wait "$pid"
            _record "${RUNNING_JOB[$pid]}" $?
            FREE_GPUS+=("${RUNNING_GPU[$pid]}")
            unset "RUNNING_GPU[$pid]" "RUNNING_JOB[$pid]"
            ended=0
        fi
    done
    return $ended
}

_stop_all() {  # Ctrl-C or SIGTERM: the running jobs checkpoint and stop; the summary still comes
    trap - INT TERM
    echo "stopping: signalling ${#RUNNING_GPU[@]} running job(s) to checkpoint" >&2
    for pid in "${!RUNNING_GPU[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    STOPPED=1
}

run_local() {
    mkdir -p "$OUT"
    FREE_GPUS=("${GPU_LIST[@]}")
    local slots=${#GPU_LIST[@]}
    if [ "$slots" -eq 0 ] && [ "$PARALLEL" -gt 1 ]; then  # CPU slots: no GPU to name
        for ((slot = 0; slot < PARALLEL; slot++)); do FREE_GPUS+=("cpu$slot"); done
        slots=$PARALLEL
    fi
    STOPPED=0
    trap _stop_all INT TERM
    for i in "${!JOB_NAMES[@]}"; do
        [ "$STOPPED" = 1 ] && break
        local name=${JOB_NAMES[$i]} line
        job_plan "$i"
        case $PLAN in
            skip) SKIPPED+=("$name"); echo "skip $name (finished)"; continue;;
            conflict|error) line=$(_not_run "$i"); FAILED+=("$line"); echo "FAILED $line" >&2; continue;;
        esac
        line=$(not_writable "$OUT/$name.log")
        if [ -n "$line" ]; then
            FAILED+=("$name: its log $line"); echo "FAILED $name: its log $line" >&2; continue
        fi
        if [ "$slots" -eq 0 ]; then  # one at a time, here
            echo "start $name"
            "${CMD[@]}" 2>&1 | tee "$OUT/$name.log"
            _record "$i" "${PIPESTATUS[0]}"
            continue
        fi
        while [ ${#FREE_GPUS[@]} -eq 0 ]; do
            _reap || sleep "$POLL_S"
        done
        local gpu=${FREE_GPUS[0]}
        FREE_GPUS=("${FREE_GPUS[@]:1}")
        if [[ $gpu == cpu* ]]; then
            echo "start $name (slot $gpu)"
            "${CMD[@]}" > "$OUT/$name.log" 2>&1 &
        else
            echo "start $name on GPU $gpu"
            CUDA_VISIBLE_DEVICES=$gpu "${CMD[@]}" > "$OUT/$name.log" 2>&1 &
        fi
        RUNNING_GPU[$!]=$gpu
        RUNNING_JOB[$!]=$i
    done
    while [ ${#RUNNING_GPU[@]} -gt 0 ]; do
        _reap || sleep "$POLL_S"
    done
    trap - INT TERM
    summary
}

summary() {  # the report of what finished, one line per failure; exit 1 if any failed
    echo "sweep $OUT: ${#FINISHED[@]} finished, ${#FAILED[@]} failed, ${#SKIPPED[@]} skipped (finished before)," \
         "$(( ${#JOB_NAMES[@]} - ${#FINISHED[@]} - ${#FAILED[@]} - ${#SKIPPED[@]} )) not started"
    for line in "${FAILED[@]}"; do echo "failed: $line" >&2; done
    write_report || exit 2  # the report could not be written: said in one line by acl
    [ ${#FAILED[@]} -eq 0 ] && [ "${STOPPED:-0}" = 0 ]
    exit $?
}

write_report() {  # report.md / .csv / .png of every finished run in OUT: this grid's and those of sweeps before
    local done_runs=() dir
    for dir in "$OUT"/*/; do [ -f "$dir/final.json" ] && done_runs+=("${dir%/}"); done
    if [ ${#done_runs[@]} -eq 0 ]; then
        echo "no finished run to report" >&2
        return
    fi
    # --out, not a shell redirect: written atomically, never through a link or into a FIFO (acl refuses it)
    "${ACL_CMD[@]}" report "${done_runs[@]}" --format markdown --out "$OUT/report.md" --overwrite &&
        "${ACL_CMD[@]}" report "${done_runs[@]}" --format csv --out "$OUT/report.csv" --overwrite || return 2
    "${ACL_CMD[@]}" report "${done_runs[@]}" --plot "$OUT/report.png" --overwrite > /dev/null 2>&1  # needs matplotlib
    cat "$OUT/report.md"
}

report_status() {  # --report: after a job array, which tasks finished, and the report
    local missing=() elsewise=()
    for i in "${!JOB_NAMES[@]}"; do
        job_plan "$i"
        case $PLAN in
            skip) FINISHED+=("${JOB_NAMES[$i]}");;
            train|resume) missing+=("$i ${JOB_NAMES[$i]}");;
            *) elsewise+=("$(_not_run "$i")");;
        esac
    done
    echo "sweep $OUT: ${#FINISHED[@]} of ${#JOB_NAMES[@]} finished"
    for line in "${missing[@]}"; do echo "not finished: job $line (resubmit with --array=${line%% *})" >&2; done
    for line in "${elsewise[@]}"; do echo "not this sweep's: $line" >&2; done
    write_report || exit 2
    [ ${#missing[@]} -eq 0 ] && [ ${#elsewise[@]} -eq 0 ]
    exit $?
}

directive_value() {  # WHAT VALUE: VALUE double-quoted for an #SBATCH line, or die if a directive cannot carry it
    case $2 in
        *$'\n'*|*'"'*|*'\'*) die "$1 $(printf '%q' "$2") holds a newline, a double quote or a backslash, which an #SBATCH line cannot carry; use another path";;
    esac
    printf '"%s"' "$2"  # sbatch splits directives at unquoted spaces; within quotes, " and \ would be special
}

write_sbatch() {  # OUT/sweep.sbatch: one array task per job; OUT/report.sbatch: the report once all ended
    local n=${#JOB_NAMES[@]} out_abs data_abs
    mkdir -p "$OUT"
    out_abs="$(cd "$OUT" && pwd)"
    data_abs="$(realpath -m -- "$DATA_ROOT")"  # the tasks cd into the project: a relative root would move
    case $out_abs in *%*) die "OUT_DIR '$out_abs' holds a %, which sbatch reads as a file-name pattern; use another path";; esac
    local output report_output partition=""
    output="$(directive_value OUT_DIR "$out_abs/slurm-%A_%a.log")" || exit 2
    report_output="$(directive_value OUT_DIR "$out_abs/report-%j.log")" || exit 2
    if [ -n "${SBATCH_PARTITION:-}" ]; then
        partition="#SBATCH --partition=$(directive_value SBATCH_PARTITION "$SBATCH_PARTITION")"$'\n' || exit 2
    fi
    local exports="" var
    for var in "${SWEEP_VARS[@]}"; do
        [ -n "${!var+x}" ] && exports+="export $var=$(printf '%q' "${!var}")"$'\n'
    done
    local setting file
    for setting in SBATCH_TIME SBATCH_MEM SBATCH_CPUS SBATCH_GPUS SBATCH_MAX_PARALLEL; do  # each fills one directive
        case ${!setting:-x} in
            *[!A-Za-z0-9:._-]*) die "$setting $(printf '%q' "${!setting}") must be a plain value (letters, digits, : . _ -), as sbatch takes it";;
        esac
    done
    for file in "$OUT/sweep.sbatch" "$OUT/report.sbatch"; do
        file=$(not_writable "$file")
        [ -z "$file" ] || die "$file"
    done
    local limit="" gpus=""
    [ -n "${SBATCH_MAX_PARALLEL:-}" ] && limit="%$SBATCH_MAX_PARALLEL"
    [ "${SBATCH_GPUS:-1}" != 0 ] && gpus="#SBATCH --gpus=${SBATCH_GPUS:-1}"$'\n'  # 0: a CPU-only task
    local args
    args="$(printf '%q ' "$data_abs" "$EPOCHS" "$out_abs")"
    cat > "$OUT/sweep.sbatch" <<EOF
#!/usr/bin/env bash
#SBATCH --job-name=$(basename "$0" .sh)
#SBATCH --array=0-$(( n - 1 ))$limit
${gpus}#SBATCH --cpus-per-task=${SBATCH_CPUS:-8}
#SBATCH --mem=${SBATCH_MEM:-32G}
#SBATCH --time=${SBATCH_TIME:-24:00:00}
${partition}#SBATCH --requeue
#SBATCH --signal=B:TERM@120
#SBATCH --output=$output
${SBATCH_EXTRA:-}
# $n jobs: bash $(printf '%q' "$SCRIPT_PATH") --list $args
# A requeued or resubmitted task resumes its run from last.pt; a finished one is skipped.
cd $(printf '%q' "$ROOT_DIR")
$exports
TASK_INDEX=\$SLURM_ARRAY_TASK_ID exec bash $(printf '%q' "$SCRIPT_PATH") $args
EOF
    cat > "$OUT/report.sbatch" <<EOF
#!/usr/bin/env bash
#SBATCH --job-name=$(basename "$0" .sh)-report
#SBATCH --time=00:30:00
${partition}#SBATCH --output=$report_output
${SBATCH_EXTRA:-}
cd $(printf '%q' "$ROOT_DIR")
$exports
exec bash $(printf '%q' "$SCRIPT_PATH") --report $args
EOF
    echo "wrote $OUT/sweep.sbatch ($n array tasks) and $OUT/report.sbatch; submit both with:"
    printf '  jid=$(sbatch --parsable %q) && sbatch --dependency=afterany:$jid %q\n' "$OUT/sweep.sbatch" \
        "$OUT/report.sbatch"
}
