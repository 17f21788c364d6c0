#!/usr/bin/env bash
# Runs jobs on the local machine with the calling convention of Kaldi's run.pl, for setups without
# an ESPnet/Kaldi checkout (cmd.sh selects it when utils/run.pl is absent).
#
#   run_local.sh [options] [JOB=1:N] LOGFILE COMMAND [ARGS...]
#
# With JOB=1:N the command runs N times (in parallel, at most --max-jobs-run at once, default the
# number of CPU cores this process may use, or the number of GPUs with --gpu N > 0); every occurrence
# of the variable name (here "JOB") in LOGFILE and in each argument is replaced by the job number.
# Without JOB=... the command runs once.  The command's stdout and stderr go to LOGFILE, framed like
# run.pl's logs ("# command", "# Started at", "# Running on", ..., "# Ended (code N) at ...").
# The number of cores ignores OMP_NUM_THREADS (which path.sh sets to 1 for each job's own threads and
# which nproc would otherwise honour); the jobs inherit the environment as it is.
# Inside a Slurm job (run_slurm.sh runs each task through this script) "# Running on" names the job.
# Unlike run.pl, the arguments are executed as given (no second round of shell evaluation), so a
# command needs no extra quoting, and shell pipes must be written as an explicit "bash -c '...'".
#
# Options: --gpu N (limits parallelism to the visible GPUs when N > 0), --max-jobs-run N; the
# scheduler options --name, --mem, --time, --num_threads, --num-threads, --num_nodes, --config and
# any other "--opt value" pair are accepted and ignored.
# Exit status: 0 when every job succeeded, else 1 with a message naming the failed logs.
set -u

me=${0##*/}
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/job_range.sh" || exit 1
usage="usage: ${me} [--gpu N] [--max-jobs-run N] [JOB=1:N] LOGFILE COMMAND [ARGS...]"

gpu=0
max_jobs_run=

while [ $# -gt 0 ]; do
    case "$1" in
        -V) shift ;;
        --gpu)
            [ $# -ge 2 ] || { echo "${me}: --gpu needs a value" >&2; exit 1; }
            gpu=$2; shift 2 ;;
        --max-jobs-run|--max_jobs_run|-tc)
            [ $# -ge 2 ] || { echo "${me}: $1 needs a value" >&2; exit 1; }
            max_jobs_run=$2; shift 2 ;;
        -*)
            [ $# -ge 2 ] || { echo "${me}: $1 needs a value" >&2; exit 1; }
            shift 2 ;;
        *=*)
            parse_job_range "$1" || break
            shift ;;
        *) break ;;
    esac
done

if [ $# -lt 2 ]; then
    echo "${usage}" >&2
    exit 1
fi
logfile=$1
shift

check_job_log "${logfile}"

if ! [[ "${gpu}" =~ ^[0-9]+$ ]]; then
    echo "${me}: --gpu expects a number, got '${gpu}'" >&2
    exit 1
fi
if [ -z "${max_jobs_run}" ]; then
    if [ "${gpu}" -gt 0 ]; then
        max_jobs_run=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
        [ "${max_jobs_run:-0}" -gt 0 ] || max_jobs_run=1
    else
        max_jobs_run=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc 2>/dev/null || echo 4)
    fi
fi
if ! [[ "${max_jobs_run}" =~ ^[0-9]+$ ]] || [ "${max_jobs_run}" -le 0 ]; then
    echo "${me}: --max-jobs-run expects a positive number, got '${max_jobs_run}'" >&2
    exit 1
fi

# Runs job $1 with its own log file; returns the command's exit status.
run_one() {
    local id=$1 log=${logfile} arg start status
    local -a argv=()
    if [ -n "${jobvar}" ]; then
        log=${log//${jobvar}/${id}}
        for arg in "${cmd[@]}"; do
            argv+=("${arg//${jobvar}/${id}}")
        done
    else
        argv=("${cmd[@]}")
    fi
    mkdir -p "$(dirname "${log}")" || return 1
    start=$(date +%s)
    {
        printf '#'; printf ' %q' "${argv[@]}"; printf '\n'
        echo "# Started at $(date)"
        echo "# Running on $(uname -n)${where}"
        echo "#"
    } > "${log}" || return 1
    ( "${argv[@]}" ) >> "${log}" 2>&1 < /dev/null
    status=$?
    {
        echo "# Accounting: time=$(( $(date +%s) - start )) threads=1"
        echo "# Ended (code ${status}) at $(date), elapsed time $(( $(date +%s) - start )) seconds"
    } >> "${log}"
    return "${status}"
}

# The scheduler's name for this job, when it runs inside one (job ids in the logs).
where=
if [ -n "${SLURM_ARRAY_JOB_ID:-}" ]; then
    where=", Slurm job ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID} (job id ${SLURM_JOB_ID})"
elif [ -n "${SLURM_JOB_ID:-}" ]; then
    where=", Slurm job ${SLURM_JOB_ID}"
fi

cmd=("$@")
declare -A pid_of_job=()
failed=()
running=0

wait_one() {
    # Reaps one finished job, recording its status.
    local id
    wait -n
    for id in "${!pid_of_job[@]}"; do
        if ! kill -0 "${pid_of_job[${id}]}" 2>/dev/null; then
            wait "${pid_of_job[${id}]}" || failed+=("${id}")
            unset "pid_of_job[${id}]"
            running=$((running - 1))
        fi
    done
}

for ((id = jobstart; id <= jobend; id++)); do
    while [ "${running}" -ge "${max_jobs_run}" ]; do
        wait_one
    done
    run_one "${id}" &
    pid_of_job[${id}]=$!
    running=$((running + 1))
done
for id in "${!pid_of_job[@]}"; do
    wait "${pid_of_job[${id}]}" || failed+=("${id}")
done

if [ "${#failed[@]}" -gt 0 ]; then
    total=$((jobend - jobstart + 1))
    for id in $(printf '%s\n' "${failed[@]}" | sort -n); do
        log=${logfile}
        [ -n "${jobvar}" ] && log=${log//${jobvar}/${id}}
        echo "${me}: job ${id} failed, log is in ${log}" >&2
    done
    echo "${me}: ${#failed[@]} / ${total} failed" >&2
    exit 1
fi
exit 0
