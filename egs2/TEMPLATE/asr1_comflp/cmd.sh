# shellcheck shell=bash
# Job dispatch of the recipe, in ESPnet's convention: scripts run parallel work as
#     ${train_cmd} JOB=1:N LOGFILE command ...      (data preparation, stats, state dumping)
#     ${cuda_cmd} --gpu N JOB=1:N LOGFILE command  (training, GPU dumping/decoding)
#     ${decode_cmd} JOB=1:N LOGFILE command ...    (CPU decoding)
# "JOB" in LOGFILE and in the command is replaced by the job number.
#
# The recipes link to this file: replace a recipe's link with a copy to configure that recipe alone.
# Choose the backend here:
#   local  jobs run on this machine: Kaldi's utils/run.pl inside an ESPnet checkout, otherwise the
#          plugin's own runner (egs2/TEMPLATE/asr1_comflp/scripts/run_local.sh, same interface)
#   slurm  sbatch through utils/slurm.pl, configured by conf/slurm.conf (partitions, --gpu mapping)
#   sge    qsub through utils/queue.pl, configured by conf/queue.conf
#   pbs    qsub (Torque/PBS) through utils/pbs.pl, configured by conf/pbs.conf
# The cluster backends need Kaldi's job scripts, i.e. an ESPnet checkout (utils/ linked).
cmd_backend=${COMFLP_CMD_BACKEND:-local}

if [ "${cmd_backend}" = local ]; then
    if [ -x utils/run.pl ]; then
        export train_cmd="run.pl"
        export cuda_cmd="run.pl"
        export decode_cmd="run.pl"
    else
        # Beside this file when recipes link to it; from the recipe directory when it was copied there.
        _runner="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)/scripts/run_local.sh"
        [ -x "${_runner}" ] || _runner="${PWD}/../../TEMPLATE/asr1_comflp/scripts/run_local.sh"
        export train_cmd="${_runner}"
        export cuda_cmd="${_runner}"
        export decode_cmd="${_runner}"
        unset _runner
    fi
elif [ "${cmd_backend}" = slurm ] || [ "${cmd_backend}" = sge ] || [ "${cmd_backend}" = pbs ]; then
    case "${cmd_backend}" in
        slurm) _scheduler=slurm.pl ;;
        sge) _scheduler=queue.pl ;;
        pbs) _scheduler=pbs.pl ;;
    esac
    if [ ! -e "utils/${_scheduler}" ]; then
        echo "$0: cmd_backend=${cmd_backend} needs utils/${_scheduler} (link utils/ to an ESPnet checkout's egs2/TEMPLATE/asr1/utils)" 1>&2
        return 1
    fi
    export train_cmd="${_scheduler}"
    export cuda_cmd="${_scheduler}"
    export decode_cmd="${_scheduler}"
    unset _scheduler
else
    echo "$0: Error: unknown cmd_backend=${cmd_backend} (local, slurm, sge or pbs)" 1>&2
    return 1
fi
