#!/usr/bin/env bash
# The JOB=1:N argument of Kaldi's run.pl convention, shared by run_local.sh and run_slurm.sh
# (sourced, not run).  Both expect ${me} (the runner's name, for messages).

jobvar=
jobstart=1
jobend=1

# parse_job_range ARG: when ARG is "VAR=START:END" or "VAR=N", sets jobvar, jobstart and jobend
# and returns 0; returns 1 for any other argument; exits 1 for a range that is empty or starts at 0.
parse_job_range() {
    if [[ "$1" =~ ^([A-Za-z_][A-Za-z0-9_]*)=([0-9]+):([0-9]+)$ ]]; then
        jobvar=${BASH_REMATCH[1]}; jobstart=${BASH_REMATCH[2]}; jobend=${BASH_REMATCH[3]}
    elif [[ "$1" =~ ^([A-Za-z_][A-Za-z0-9_]*)=([0-9]+)$ ]]; then
        jobvar=${BASH_REMATCH[1]}; jobstart=${BASH_REMATCH[2]}; jobend=${BASH_REMATCH[2]}
    else
        return 1
    fi
    if [ "${jobstart}" -le 0 ] || [ "${jobstart}" -gt "${jobend}" ]; then
        echo "${me}: invalid job range ${jobvar}=${jobstart}:${jobend} (must be 1 <= start <= end)" >&2
        exit 1
    fi
}

# check_job_log LOGFILE: several jobs need a log file name with the job variable in it, else they
# would all write one file.
check_job_log() {
    if [ -n "${jobvar}" ] && [ "${jobend}" -gt "${jobstart}" ] && [[ "$1" != *"${jobvar}"* ]]; then
        echo "${me}: ${jobvar}=${jobstart}:${jobend} runs several jobs, but the log file '$1' does not contain ${jobvar}" >&2
        exit 1
    fi
}
