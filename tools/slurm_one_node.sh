#!/usr/bin/env bash
# A private one-node Slurm cluster on this machine, for trying cmd_backend=slurm and for the tests.
#
#   tools/slurm_one_node.sh [--install] start DIR   # prints "export SLURM_CONF=DIR/slurm/slurm.conf"
#   tools/slurm_one_node.sh stop DIR
#
# Everything lives in DIR (config, munge key and socket, state, spool, logs) and talks over
# 127.0.0.1 on two free ports, so it does not touch a Slurm or munge already set up on the
# machine: munged (started as the munge user, with its own socket), slurmctld and slurmd (as root),
# one node named after this host with its CPUs and memory ("slurmd -C"), one partition "cpu" (the
# CPU partition of the recipes' conf/slurm.conf).  Jobs are recorded in DIR/slurm/log/jobcomp.txt
# (JobId, ArrayJobId, ArrayTaskId, JobState, ExitCode, ...).  Clients find the cluster through
# SLURM_CONF.  "stop" cancels the cluster's jobs, stops the daemons and waits until they are gone.
# Needs root and Debian's packages slurmctld, slurmd, slurm-client and munge (--install runs
# apt-get for the missing ones).
set -euo pipefail

me=${0##*/}
usage() {
    echo "usage: ${me} [--install] start DIR | ${me} stop DIR" >&2
    exit 2
}
die() {
    echo "${me}: $*" >&2
    exit 1
}

install=false
[ "${1:-}" = --install ] && { install=true; shift; }
[ $# -eq 2 ] || usage
action=$1
top=$2
case "${action}" in start|stop) ;; *) usage ;; esac

[ "$(id -u)" = 0 ] || die "needs root (slurmd runs jobs as their users; munged must be started as the munge user)"

conf="${top}/slurm/slurm.conf"
mdir="${top}/munge"
sdir="${top}/slurm"

# pids DIR: the pids of the cluster's daemons that are still alive.
daemon_pids() {
    local f pid
    for f in "${sdir}/slurmctld.pid" "${sdir}/slurmd.pid" "${mdir}/run/munged.pid"; do
        [ -f "${f}" ] || continue
        pid=$(cat "${f}" 2>/dev/null || true)
        [ -n "${pid}" ] && kill -0 "${pid}" 2>/dev/null && echo "${pid}"
    done
    return 0
}

if [ "${action}" = stop ]; then
    [ -f "${conf}" ] || die "${conf} not found: no cluster was started in ${top}"
    export SLURM_CONF="${conf}"
    if [ -n "$(daemon_pids)" ]; then
        scancel --full --user="$(id -un)" 2>/dev/null || true
        for _ in $(seq 50); do
            [ -z "$(squeue -h -o %i 2>/dev/null || true)" ] && break
            sleep 0.2
        done
        scontrol shutdown 2>/dev/null || true
        if [ -f "${mdir}/run/munged.pid" ]; then
            # munged after the Slurm daemons, which need it to shut down.
            for _ in $(seq 50); do
                [ -n "$(daemon_pids | grep -vx "$(cat "${mdir}/run/munged.pid")" || true)" ] || break
                sleep 0.2
            done
            runuser -u munge -- munged --stop --socket="${mdir}/run/munge.socket" >/dev/null 2>&1 || true
        fi
        for _ in $(seq 50); do
            [ -n "$(daemon_pids)" ] || break
            sleep 0.2
        done
        for pid in $(daemon_pids); do
            echo "${me}: daemon ${pid} did not stop; killing it" >&2
            kill -9 "${pid}" 2>/dev/null || true
        done
    fi
    # Job steps of this cluster left behind (none after a clean shutdown): they run in its log dir.
    logdir_abs=$(cd "${sdir}/log" && pwd)
    for pid in $(pgrep -f "^slurmstepd: " 2>/dev/null || true); do
        if [ "$(readlink "/proc/${pid}/cwd" 2>/dev/null)" = "${logdir_abs}" ]; then
            echo "${me}: job step ${pid} was left behind; killing it" >&2
            kill -9 "${pid}" 2>/dev/null || true
        fi
    done
    [ -z "$(daemon_pids)" ] || die "the daemons of ${top} are still running: $(daemon_pids | tr '\n' ' ')"
    echo "${me}: stopped the cluster in ${top}" >&2
    exit 0
fi

# ------------------------------------------------------------------ start
missing=()
for tool in munged:munge slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client; do
    command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
if [ "${#missing[@]}" -gt 0 ]; then
    "${install}" || die "missing Debian packages: ${missing[*]} (apt-get install ${missing[*]}, or pass --install)"
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
    echo "${me}: installing ${missing[*]} (apt-get)" >&2
    # No daemon of the packages is started at installation.
    policy=/usr/sbin/policy-rc.d
    created_policy=false
    if [ ! -e "${policy}" ]; then
        printf '#!/bin/sh\nexit 101\n' > "${policy}" && chmod +x "${policy}" && created_policy=true
    fi
    { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" \
        || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"; }; } \
        >/dev/null || { "${created_policy}" && rm -f "${policy}"; die "apt-get install ${missing[*]} failed"; }
    "${created_policy}" && rm -f "${policy}"
fi
id munge >/dev/null 2>&1 || die "no 'munge' user (it comes with the munge package)"
[ -z "$(daemon_pids 2>/dev/null)" ] || die "a cluster is already running in ${top}; stop it first"

mkdir -p "${top}"
top=$(cd "${top}" && pwd)
conf="${top}/slurm/slurm.conf"
mdir="${top}/munge"
sdir="${top}/slurm"
rm -rf "${mdir}" "${sdir}"
# munged checks ownership and modes: its key and log directories private to it, the socket's
# directory readable by everyone.
chmod 755 "${top}"
runuser -u munge -- test -x "${top}" \
    || die "the munge user cannot reach ${top}: choose a directory whose parents all others may enter (e.g. under /tmp)"
mkdir -p "${mdir}/run" "${mdir}/key" "${mdir}/log"
chmod 755 "${mdir}" "${mdir}/run"
chmod 700 "${mdir}/key" "${mdir}/log"
chown munge:munge "${mdir}/run" "${mdir}/key" "${mdir}/log"
runuser -u munge -- sh -c "umask 077 && head -c 1024 /dev/urandom > '${mdir}/key/munge.key' && chmod 400 '${mdir}/key/munge.key'"
runuser -u munge -- munged --socket="${mdir}/run/munge.socket" --key-file="${mdir}/key/munge.key" \
    --log-file="${mdir}/log/munged.log" --pid-file="${mdir}/run/munged.pid" --seed-file="${mdir}/key/munged.seed" \
    || die "munged did not start; see ${mdir}/log/munged.log"

mkdir -p "${sdir}/state" "${sdir}/spool" "${sdir}/log"
# Two ports no socket of this machine uses (local or remote end), in /proc/net/tcp's hex notation.
free_port() {
    local port hex _
    for _ in $(seq 200); do
        port=$((20000 + RANDOM % 40000))
        hex=$(printf '%04X' "${port}")
        if ! grep -qs ":${hex} " /proc/net/tcp /proc/net/tcp6 && [ "${port}" != "${1:-}" ]; then
            echo "${port}"
            return 0
        fi
    done
    die "found no free TCP port"
}
ctld_port=$(free_port)
slurmd_port=$(free_port "${ctld_port}")
node=$(slurmd -C | head -n 1)
[[ "${node}" == NodeName=* ]] || die "slurmd -C did not describe this node: ${node}"
host=${node%% *}
host=${host#NodeName=}
cat > "${conf}" <<EOF
# One-node cluster made by ${me}; everything under ${top}.
ClusterName=onenode
SlurmctldHost=${host}(127.0.0.1)
SlurmctldPort=${ctld_port}
SlurmdPort=${slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=${mdir}/run/munge.socket
CredType=cred/munge
StateSaveLocation=${sdir}/state
SlurmdSpoolDir=${sdir}/spool
SlurmctldPidFile=${sdir}/slurmctld.pid
SlurmdPidFile=${sdir}/slurmd.pid
SlurmctldLogFile=${sdir}/log/slurmctld.log
SlurmdLogFile=${sdir}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=${sdir}/log/jobcomp.txt
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SlurmctldDebug=info
SlurmdDebug=info
${node} NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=cpu Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

export SLURM_CONF="${conf}"
slurmctld -f "${conf}" || die "slurmctld did not start; see ${sdir}/log/slurmctld.log"
slurmd -f "${conf}" || die "slurmd did not start; see ${sdir}/log/slurmd.log"
for _ in $(seq 100); do
    state=$(sinfo -h -o %T 2>/dev/null || true)
    [ "${state}" = idle ] && break
    sleep 0.2
done
[ "${state:-}" = idle ] || die "the node did not become idle (state '${state:-}'); see ${sdir}/log/"
echo "${me}: one-node cluster up: ${node%% *} with $(sinfo -h -o %c) CPUs, partition cpu, ports ${ctld_port}/${slurmd_port}" >&2
echo "export SLURM_CONF=${conf}"
