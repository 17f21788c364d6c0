#!/usr/bin/env bash
# Runs jobs through Slurm with the calling convention of Kaldi's run.pl / slurm.pl, for setups
# without an ESPnet/Kaldi checkout (cmd.sh selects it for cmd_backend=slurm when utils/slurm.pl
# is absent).
#
#   run_slurm.sh [options] [JOB=1:N] LOGFILE COMMAND [ARGS...]
#
# JOB=1:N becomes one Slurm job array (sbatch --wait --array=1-N), a single command one job; this
# script returns when every task has ended.  Each task runs COMMAND through run_local.sh on the node
# it got, from the current directory after sourcing ./path.sh (as slurm.pl does), so LOGFILE
# (with JOB replaced by the task number) is framed as the local runner frames it, and its
# "# Running on" line names the host and the Slurm job id.  As with run_local.sh, the arguments are
# executed as given: shell pipes must be written as an explicit "bash -c '...'".
#
# Options, translated into sbatch options by the config file in Kaldi's slurm.pl format
# (--config, default conf/slurm.conf of the current directory, else the plugin's conf/slurm.conf):
#   --gpu N, --mem M, --num_threads N (or --num-threads), --time T, --num_nodes N, --name NAME and
#   any other "--opt value" the config describes ("option opt=* ... $0", "option opt=value ...",
#   "default opt=value"; the "command" line is the sbatch command, with partition and account).
#   An option the config does not describe is an error, as in slurm.pl.
#   --max-jobs-run M: at most M tasks of the array at once (--array=1-N%M).
#   Other single-dash options ("-x value") are passed to sbatch as given.
# The job script and Slurm's own output of each task go to q/ beside LOGFILE.
# Exit status: 0 when every task succeeded, else 1 with a message naming the failed logs.
set -u

me=${0##*/}
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/job_range.sh" || exit 1
usage="usage: ${me} [--config FILE] [--gpu N] [--mem M] [--num_threads N] [--max-jobs-run N] [JOB=1:N] LOGFILE COMMAND [ARGS...]"
here=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
runner="${here}/run_local.sh"

config=
max_jobs_run=
declare -A cli_value=()
cli_order=()
extra_opts=()

while [ $# -gt 0 ]; do
    case "$1" in
        -V) shift ;;
        --config)
            [ $# -ge 2 ] || { echo "${me}: --config needs a value" >&2; exit 1; }
            config=$2; shift 2 ;;
        --max-jobs-run|--max_jobs_run)
            [ $# -ge 2 ] || { echo "${me}: $1 needs a value" >&2; exit 1; }
            max_jobs_run=$2; shift 2 ;;
        --*)
            [ $# -ge 2 ] || { echo "${me}: $1 needs a value" >&2; exit 1; }
            _name=${1#--}
            _name=${_name//-/_}
            [ -n "${cli_value[${_name}]+x}" ] || cli_order+=("${_name}")
            cli_value[${_name}]=$2
            shift 2 ;;
        -*)
            [ $# -ge 2 ] || { echo "${me}: $1 needs a value" >&2; exit 1; }
            extra_opts+=("$1" "$2")
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
cmd=("$@")

check_job_log "${logfile}"
if [ -n "${max_jobs_run}" ] && { ! [[ "${max_jobs_run}" =~ ^[0-9]+$ ]] || [ "${max_jobs_run}" -le 0 ]; }; then
    echo "${me}: --max-jobs-run expects a positive number, got '${max_jobs_run}'" >&2
    exit 1
fi

# ------------------------------------------------------------------ the config (slurm.pl's format)
if [ -z "${config}" ]; then
    config=conf/slurm.conf
    [ -f "${config}" ] || config="$(cd "${here}/.." && pwd)/conf/slurm.conf"
fi
if [ ! -f "${config}" ]; then
    echo "${me}: cannot read the Slurm config ${config} (write one in Kaldi's slurm.pl format, e.g. a copy of the plugin's conf/slurm.conf)" >&2
    exit 1
fi

submit=()
declare -A star_arg=() exact_arg=()
lineno=0
while IFS= read -r line || [ -n "${line}" ]; do
    lineno=$((lineno + 1))
    body=${line%%#*}
    body=$(echo "${body}" | sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//')
    [ -n "${body}" ] || continue
    if [[ "${body}" =~ ^command[[:space:]]+(.+)$ ]]; then
        read -r -a submit <<< "${BASH_REMATCH[1]}"
    elif [[ "${body}" =~ ^option[[:space:]]+([^=[:space:]]+)=\*[[:space:]]+(.+)$ ]]; then
        star_arg[${BASH_REMATCH[1]}]=${BASH_REMATCH[2]}
    elif [[ "${body}" =~ ^option[[:space:]]+([^=[:space:]]+)=([^[:space:]]+)[[:space:]]*(.*)$ ]]; then
        exact_arg[${BASH_REMATCH[1]}=${BASH_REMATCH[2]}]=${BASH_REMATCH[3]}
    elif [[ "${body}" =~ ^default[[:space:]]+([^=[:space:]]+)=([^[:space:]]+)$ ]]; then
        if [ -z "${cli_value[${BASH_REMATCH[1]}]+x}" ]; then
            cli_order+=("${BASH_REMATCH[1]}")
            cli_value[${BASH_REMATCH[1]}]=${BASH_REMATCH[2]}
        fi
    else
        echo "${me}: cannot parse line ${lineno} of ${config}: '${line}' (expected 'command ...', 'option NAME=VALUE ...' or 'default NAME=VALUE')" >&2
        exit 1
    fi
done < "${config}"
if [ "${#submit[@]}" -eq 0 ]; then
    echo "${me}: ${config} has no 'command' line (e.g. 'command sbatch --export=PATH')" >&2
    exit 1
fi
if ! command -v "${submit[0]}" > /dev/null; then
    echo "${me}: '${submit[0]}' (the command line of ${config}) is not found: install Slurm's client commands or fix that line" >&2
    exit 1
fi

sbatch_opts=()
for name in "${cli_order[@]+"${cli_order[@]}"}"; do
    value=${cli_value[${name}]}
    if [ -n "${exact_arg[${name}=${value}]+x}" ]; then
        arg=${exact_arg[${name}=${value}]}
    elif [ -n "${star_arg[${name}]+x}" ]; then
        arg=${star_arg[${name}]//\$0/${value}}
    else
        echo "${me}: option --${name} ${value} is not described in ${config} (add 'option ${name}=* ... \$0' there)" >&2
        exit 1
    fi
    read -r -a words <<< "${arg}"
    sbatch_opts+=("${words[@]+"${words[@]}"}")
done
sbatch_opts+=("${extra_opts[@]+"${extra_opts[@]}"}")

# ------------------------------------------------------------------ the job script
logdir=$(dirname "${logfile}")
base=$(basename "${logfile}")
qdir="${logdir}/q"
mkdir -p "${qdir}" || { echo "${me}: cannot create ${qdir}" >&2; exit 1; }
qdir=$(cd "${qdir}" && pwd)
qbase=${base}
[ -n "${jobvar}" ] && qbase=${qbase//.${jobvar}/} && qbase=${qbase//${jobvar}/}
qbase=${qbase%.*}
[ -n "${qbase}" ] || qbase=job
script="${qdir}/${qbase}.sh"

log_of() {
    local log=${logfile}
    [ -n "${jobvar}" ] && log=${log//${jobvar}/$1}
    echo "${log}"
}

# Logs of an earlier run must not be read as this run's.
for ((id = jobstart; id <= jobend; id++)); do
    rm -f "$(log_of "${id}")"
done

{
    echo "#!/usr/bin/env bash"
    echo "# Written by ${me} for: ${logfile}"
    printf 'cd %q || exit 1\n' "${PWD}"
    echo '[ -f ./path.sh ] && . ./path.sh'
    printf 'runner=%q\n' "${runner}"
    printf 'log=%q\n' "${logfile}"
    printf 'cmd=('; printf ' %q' "${cmd[@]}"; printf ' )\n'
    if [ -n "${jobvar}" ]; then
        printf 'jobvar=%q\n' "${jobvar}"
        # shellcheck disable=SC2016
        echo 'log=${log//${jobvar}/${SLURM_ARRAY_TASK_ID}}'
        # shellcheck disable=SC2016
        echo '"${runner}" "${jobvar}=${SLURM_ARRAY_TASK_ID}" "${log}" "${cmd[@]}"'
    else
        # shellcheck disable=SC2016
        echo '"${runner}" "${log}" "${cmd[@]}"'
    fi
    # The task ends with the command's own exit code (the log's last line), seen by the scheduler.
    # shellcheck disable=SC2016
    echo 'status=$?'
    # shellcheck disable=SC2016
    echo 'code=$(sed -n "s/^# Ended (code \([0-9]*\)).*/\1/p" "${log}" 2>/dev/null | tail -n 1)'
    # shellcheck disable=SC2016
    echo 'exit "${code:-${status}}"'
} > "${script}.tmp" && mv "${script}.tmp" "${script}" || { echo "${me}: cannot write ${script}" >&2; exit 1; }
chmod +x "${script}"

array_opts=()
if [ -n "${jobvar}" ]; then
    spec="${jobstart}-${jobend}"
    [ -n "${max_jobs_run}" ] && spec+="%${max_jobs_run}"
    array_opts=("--array=${spec}")
    qout="${qdir}/${qbase}.%A_%a.out"
else
    qout="${qdir}/${qbase}.%j.out"
fi

# ------------------------------------------------------------------ submit and wait
submit_out="${qdir}/${qbase}.sbatch"
jobid=
sbatch_pid=
cancel() {
    local status=$1
    jobid=$(head -n 1 "${submit_out}" 2>/dev/null | cut -d';' -f1)
    if [ -n "${jobid}" ]; then
        scancel "${jobid}" 2>/dev/null
        echo "${me}: interrupted; cancelled Slurm job ${jobid}" >&2
    fi
    [ -n "${sbatch_pid}" ] && kill "${sbatch_pid}" 2>/dev/null
    exit "${status}"
}
trap 'cancel 130' INT
trap 'cancel 143' TERM

"${submit[@]}" "${sbatch_opts[@]+"${sbatch_opts[@]}"}" --parsable --wait "${array_opts[@]+"${array_opts[@]}"}" \
    --output="${qout}" --open-mode=append "${script}" > "${submit_out}" 2>&1 &
sbatch_pid=$!
wait "${sbatch_pid}"
sbatch_status=$?
trap - INT TERM
jobid=$(head -n 1 "${submit_out}" | cut -d';' -f1)
if ! [[ "${jobid}" =~ ^[0-9]+$ ]]; then
    echo "${me}: submitting ${logfile} to Slurm failed: $(tr '\n' ' ' < "${submit_out}")" >&2
    echo "${me}: the submission was: ${submit[*]} ${sbatch_opts[*]+"${sbatch_opts[*]}"} ${array_opts[*]+"${array_opts[*]}"} ${script} (options from ${config})" >&2
    exit 1
fi

# Each task's status is the last line of its log; a shared file system may show it a moment late.
failed=()
unfinished=()
for ((id = jobstart; id <= jobend; id++)); do
    log=$(log_of "${id}")
    code=
    for wait_s in 0 1 2 4; do
        sleep "${wait_s}"
        code=$(sed -n 's/^# Ended (code \([0-9]*\)).*/\1/p' "${log}" 2>/dev/null | tail -n 1)
        [ -n "${code}" ] && break
        [ "${sbatch_status}" -eq 0 ] || break
    done
    if [ -z "${code}" ]; then
        unfinished+=("${id}")
    elif [ "${code}" -ne 0 ]; then
        failed+=("${id}:${code}")
    fi
done

total=$((jobend - jobstart + 1))
if [ "${#failed[@]}" -gt 0 ] || [ "${#unfinished[@]}" -gt 0 ]; then
    for item in "${failed[@]+"${failed[@]}"}"; do
        echo "${me}: job ${item%%:*} (Slurm job ${jobid}${jobvar:+_${item%%:*}}) failed with code ${item#*:}, log is in $(log_of "${item%%:*}")" >&2
    done
    for id in "${unfinished[@]+"${unfinished[@]}"}"; do
        echo "${me}: job ${id} (Slurm job ${jobid}${jobvar:+_${id}}) did not finish (cancelled, timed out or its node failed); see $(log_of "${id}") and Slurm's output in ${qdir}/" >&2
    done
    echo "${me}: $(( ${#failed[@]} + ${#unfinished[@]} )) / ${total} failed" >&2
    exit 1
fi
if [ "${sbatch_status}" -ne 0 ]; then
    echo "${me}: sbatch --wait for Slurm job ${jobid} returned ${sbatch_status} although every log ends with code 0; see ${submit_out}" >&2
    exit 1
fi
exit 0
