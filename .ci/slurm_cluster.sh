#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, for testing
# tools/slurm_train.sh (tests/test_tools/test_slurm.py): munged, slurmctld
# (the controller) and slurmd (the one compute node) all on localhost, CPU
# only, no cgroups, no systemd.
#
# Usage: .ci/slurm_cluster.sh {start|stop|status|env}
#   start   install slurm-wlm + munge if missing (root + apt-get), write the
#           config, start the three daemons, wait until the node is idle.
#           Does nothing if this cluster is already up.
#   stop    cancel this cluster's jobs and stop its daemons.
#   status  print the daemons and `sinfo`; exit 0 if all are up, else 3.
#   env     print `export SLURM_CONF=...`: srun/sinfo need it to find
#           this cluster (eval "$(.ci/slurm_cluster.sh env)").
#
# Everything lives in $SLURM_CI_DIR (default /tmp/dmcp-slurm): slurm.conf,
# the munge key and socket, state, spool, logs and pid files. Besides the
# packages nothing in /etc is written, and a system munged/slurm, if any, is
# left alone (only the ports are shared: SLURM_CI_CTLD_PORT,
# SLURM_CI_SLURMD_PORT).
# Other settings: SLURM_CI_PARTITION (debug), SLURM_CI_CPUS (nproc, at
# least 2: the node may claim more CPUs than it has, so 2 tasks fit on a
# 1-CPU runner).
# Exit codes: 0 ok, 2 not root, or slurm/munge missing and not installable,
# 1 other.
set -euo pipefail

DIR=${SLURM_CI_DIR:-/tmp/dmcp-slurm}
PARTITION=${SLURM_CI_PARTITION:-debug}
CTLD_PORT=${SLURM_CI_CTLD_PORT:-6817}
SLURMD_PORT=${SLURM_CI_SLURMD_PORT:-6818}
NODE=$(hostname -s)
CPUS=${SLURM_CI_CPUS:-$(nproc)}
[ "$CPUS" -ge 2 ] || CPUS=2
export SLURM_CONF=$DIR/slurm.conf
export PATH=$PATH:/usr/sbin:/sbin
MUNGE_SOCKET=$DIR/munge/munge.socket
DAEMONS="munged slurmctld slurmd"

log() { echo "slurm_cluster: $*" >&2; }

pid_of() { # daemon -> its pid if it is running, else nothing
    local f=$DIR/run/$1.pid pid
    [ -s "$f" ] || return 0
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then echo "$pid"; fi
}

ensure_installed() {
    local missing=()
    for cmd in munged slurmctld slurmd srun sinfo scontrol; do
        command -v "$cmd" >/dev/null || missing+=("$cmd")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        log "missing: ${missing[*]}; as root on Debian/Ubuntu run:"
        log "  apt-get update && apt-get install --no-install-recommends" \
            "slurm-wlm munge"
        exit 2
    fi
    log "installing slurm-wlm munge (missing: ${missing[*]})"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends slurm-wlm munge >/dev/null
}

write_config() {
    mkdir -p "$DIR"/{munge,state,spool,log,run}
    chmod 755 "$DIR"
    chmod 700 "$DIR"/munge "$DIR"/state "$DIR"/spool
    if [ ! -s "$DIR/munge/munge.key" ]; then
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile="$DIR/munge/munge.key"
        else # munge < 0.5.14
            dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 \
                status=none
        fi
        chmod 400 "$DIR/munge/munge.key"
    fi
    # SlurmdParameters=config_overrides: use the CPUs and RealMemory written
    # here instead of refusing the node when they differ from the hardware.
    # select/cons_tres with CR_CPU: CPUs are the only consumable, so a task
    # needs --cpus-per-task CPUs and no memory (no DefMemPerCPU/MaxMemPerCPU).
    cat >"$SLURM_CONF.tmp" <<EOF
# Written by .ci/slurm_cluster.sh: one node, CPU only, no cgroups.
ClusterName=dmcp-ci
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=60
KillWait=5
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=1024 State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$SLURM_CONF.tmp" "$SLURM_CONF"
}

node_state() {
    sinfo -h -N -n "$NODE" -p "$PARTITION" -o %T 2>/dev/null | head -n1
}

start() {
    if [ "$(id -u)" -ne 0 ]; then
        log "start needs root (slurmd launches the job steps and this" \
            "cluster runs its daemons as SlurmUser=root)"
        exit 2
    fi
    ensure_installed
    if ! getent hosts "$NODE" >/dev/null; then
        # mmengine's slurm launcher makes the node name MASTER_ADDR
        log "warning: '$NODE' does not resolve; add it to /etc/hosts"
    fi
    if [ -n "$(pid_of munged)" ] && [ -n "$(pid_of slurmctld)" ] &&
        [ -n "$(pid_of slurmd)" ] && [ "$(node_state)" = idle ]; then
        log "already up ($SLURM_CONF)"
        return 0
    fi
    stop_daemons # a half-started cluster: start again from scratch
    write_config
    munged --force --socket="$MUNGE_SOCKET" \
        --key-file="$DIR/munge/munge.key" \
        --pid-file="$DIR/run/munged.pid" \
        --log-file="$DIR/log/munged.log" \
        --seed-file="$DIR/munge/munged.seed"
    # -c: a cold start, forgetting jobs of an earlier run of this cluster
    slurmctld -c -f "$SLURM_CONF"
    slurmd -f "$SLURM_CONF"
    local state=''
    for _ in $(seq 120); do
        state=$(node_state)
        [ "$state" = idle ] && break
        sleep 0.5
    done
    if [ "$state" != idle ]; then
        log "node $NODE is '${state:-unknown}', not idle, after 60 s; logs:"
        tail -n 20 "$DIR"/log/*.log >&2 || true
        exit 1
    fi
    log "up: node $NODE ($CPUS CPUs), partition $PARTITION;" \
        "export SLURM_CONF=$SLURM_CONF"
}

stop_daemons() { # slurmd and slurmctld together, then munged
    local pid pids
    for group in "slurmd slurmctld" munged; do
        pids=()
        for daemon in $group; do
            pid=$(pid_of "$daemon")
            [ -n "$pid" ] || continue
            kill "$pid"
            pids+=("$daemon:$pid")
        done
        for entry in "${pids[@]}"; do
            pid=${entry#*:}
            for _ in $(seq 100); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            if kill -0 "$pid" 2>/dev/null; then
                log "${entry%:*} ($pid) did not stop in 10 s; killing it"
                kill -9 "$pid" 2>/dev/null || true
            fi
            rm -f "$DIR/run/${entry%:*}.pid"
        done
    done
}

stop() {
    if [ -n "$(pid_of slurmctld)" ]; then
        # cancel running jobs first, so that no task outlives slurmd
        scancel -p "$PARTITION" 2>/dev/null || true
        for _ in $(seq 50); do
            [ -z "$(squeue -h -p "$PARTITION" 2>/dev/null)" ] && break
            sleep 0.2
        done
    fi
    stop_daemons
    log "stopped"
}

status() {
    local up=0 pid
    for daemon in $DAEMONS; do
        pid=$(pid_of "$daemon")
        if [ -n "$pid" ]; then
            echo "$daemon: running ($pid)"
        else
            echo "$daemon: stopped"
            up=3
        fi
    done
    if [ -n "$(pid_of slurmctld)" ]; then
        sinfo || up=3
    fi
    return $up
}

case ${1:-} in
start) start ;;
stop) stop ;;
status) status ;;
env) echo "export SLURM_CONF=$SLURM_CONF" ;;
*)
    echo "usage: $0 {start|stop|status|env}" >&2
    exit 1
    ;;
esac
