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
#          plugin's own runner (scripts/run_local.sh beside this file, same interface; it runs as
#          many jobs at once as the machine has cores)
#   slurm  sbatch, configured by conf/slurm.conf in Kaldi's slurm.pl format (command line with
#          partition/account, --gpu/--mem/--num_threads mapping): Kaldi's utils/slurm.pl inside an
#          ESPnet checkout, otherwise the plugin's scripts/run_slurm.sh (sbatch --wait --array)
#   sge    qsub through utils/queue.pl, configured by conf/queue.conf
#   pbs    qsub (Torque/PBS) through utils/pbs.pl, configured by conf/pbs.conf
# sge and pbs need Kaldi's job scripts, i.e. an ESPnet checkout (utils/ linked).
cmd_backend=${COMFLP_CMD_BACKEND:-local}

# The plugin's runners: beside this file when recipes link to it; from the recipe directory when it
# was copied there.
_comflp_scripts="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)/scripts"
[ -x "${_comflp_scripts}/run_local.sh" ] || _comflp_scripts="${PWD}/../../TEMPLATE/asr1_comflp/scripts"

if [ "${cmd_backend}" = local ]; then
    if [ -x utils/run.pl ]; then
        export train_cmd="run.pl"
        export cuda_cmd="run.pl"
        export decode_cmd="run.pl"
    else
        export train_cmd="${_comflp_scripts}/run_local.sh"
        export cuda_cmd="${_comflp_scripts}/run_local.sh"
        export decode_cmd="${_comflp_scripts}/run_local.sh"
    fi
elif [ "${cmd_backend}" = slurm ]; then
    if [ -x utils/slurm.pl ]; then
        export train_cmd="slurm.pl"
        export cuda_cmd="slurm.pl"
        export decode_cmd="slurm.pl"
    else
        export train_cmd="${_comflp_scripts}/run_slurm.sh"
        export cuda_cmd="${_comflp_scripts}/run_slurm.sh"
        export decode_cmd="${_comflp_scripts}/run_slurm.sh"
    fi
elif [ "${cmd_backend}" = sge ] || [ "${cmd_backend}" = pbs ]; then
    case "${cmd_backend}" in
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
unset _comflp_scripts
