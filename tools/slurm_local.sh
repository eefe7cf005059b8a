#!/usr/bin/env bash
# A throw-away single-node SLURM cluster on this machine, loopback only, for tests/test_slurm.py and for trying
# `snakemake --profile profiles/slurm` without a cluster. Run as root (the daemons and jobs run as root).
#
#   tools/slurm_local.sh install        # apt-get the Debian packages (slurm-wlm, slurmdbd, munge, mariadb-server)
#   tools/slurm_local.sh start [DIR]    # start munged, mariadbd, slurmdbd, slurmctld, slurmd; prints `export ...`
#   tools/slurm_local.sh stop [DIR]     # stop every daemon started from DIR (safe to repeat)
#   tools/slurm_local.sh status [DIR]   # which daemons of DIR run
#
# DIR (default $SILENTVAE_SLURM_DIR or /tmp/silentvae-slurm) holds every config, state, log and socket:
# munge key and socket, a MariaDB data dir (127.0.0.1 only), slurmdbd.conf, slurm.conf, gres.conf. The node
# has 2 CPUs and 2 GPUs declared as GRES with AutoDetect=off and placeholder device files (DIR/dev/nvidia*),
# so SLURM schedules and accounts GPUs while jobs run on the CPU. Ports: $SILENTVAE_SLURM_PORT (default 16817)
# for slurmctld, +1 slurmd, +2 slurmdbd, +3 MariaDB. Accounting (slurmdbd + MariaDB) is on because the
# Snakemake SLURM executor reads job states with `sacct`.
#
# Clients find the cluster through SLURM_CONF=DIR/etc/slurm.conf. Inside a job the Snakemake job-step executor
# drops every SLURM_* variable (SLURM_CONF too) before it calls `srun`, so srun falls back to Slurm's
# configless cache path /run/slurm/conf; `start` links that to DIR/etc when nothing else owns it (and /etc/slurm/
# slurm.conf is absent), and `stop` removes the link again. `start` is idempotent (daemons already running from
# DIR are kept); `stop` kills only the pids recorded in DIR.
set -euo pipefail

cmd=${1:-}
DIR=${2:-${SILENTVAE_SLURM_DIR:-/tmp/silentvae-slurm}}
PORT=${SILENTVAE_SLURM_PORT:-16817}
CLUSTER=silentvae
PARTITION=debug
NODE=$(hostname -s)
PKGS="slurm-wlm slurmdbd munge mariadb-server"
RUNCONF=/run/slurm/conf

die() { echo "slurm_local.sh: $*" >&2; exit 1; }

alive() { [[ -f "$DIR/run/$1.pid" ]] && kill -0 "$(cat "$DIR/run/$1.pid")" 2>/dev/null; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local t=$1 what=$2 end=$((SECONDS + $1)); shift 2
    while ((SECONDS < end)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
    die "$what did not come up within ${t}s (logs in $DIR/log/)"
}

write_configs() {
    mkdir -p "$DIR"/{etc,run,log,munge,spool/ctld,spool/d,dev,mysql}
    chmod 700 "$DIR/munge"
    [[ -f "$DIR/munge/munge.key" ]] || { dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none;
                                         chmod 400 "$DIR/munge/munge.key"; }
    for k in 0 1; do  # placeholders: GRES wants character devices; these are /dev/null's (1,3), never opened as GPUs
        [[ -c "$DIR/dev/nvidia$k" ]] || { rm -f "$DIR/dev/nvidia$k"; mknod -m 666 "$DIR/dev/nvidia$k" c 1 3 2>/dev/null ||
                                          ln -s /dev/null "$DIR/dev/nvidia$k"; }  # no CAP_MKNOD: a link does
    done
    local auth="AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket"
    cat > "$DIR/etc/slurm.conf" <<EOF
# written by tools/slurm_local.sh: one node, loopback only
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
$auth
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$DIR/spool/ctld
SlurmdSpoolDir=$DIR/spool/d
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
ReturnToService=2
MinJobAge=300
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$((PORT + 2))
AccountingStoragePass=$DIR/munge/munge.socket
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
JobCompType=jobcomp/none
MpiDefault=none
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=2 RealMemory=4000 Gres=gpu:2 State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    cat > "$DIR/etc/gres.conf" <<EOF
AutoDetect=off
Name=gpu File=$DIR/dev/nvidia0 Flags=nvidia_gpu_env
Name=gpu File=$DIR/dev/nvidia1 Flags=nvidia_gpu_env
EOF
    cat > "$DIR/etc/slurmdbd.conf" <<EOF
$auth
DbdHost=$NODE
DbdAddr=127.0.0.1
DbdPort=$((PORT + 2))
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$((PORT + 3))
StorageUser=slurm
StoragePass=silentvae
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$DIR/etc/slurmdbd.conf"
}

sql() { timeout 20 mariadb --no-defaults -uroot --socket="$DIR/run/mysqld.sock" -e "$1"; }

start() {
    [[ $(id -u) == 0 ]] || die "run as root (the daemons run as root here)"
    for exe in munged mariadbd slurmdbd slurmctld slurmd sbatch sacct; do
        command -v "$exe" >/dev/null || [[ -x /usr/sbin/$exe ]] || die "$exe not found: run '$0 install' first"
    done
    export PATH="$PATH:/usr/sbin"
    write_configs
    export SLURM_CONF="$DIR/etc/slurm.conf"
    if ! alive munged; then
        munged --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
            --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/seed" --force
        wait_for 10 munged timeout 5 munge --socket="$DIR/munge/munge.socket" -n
    fi
    if ! alive mysqld; then
        if [[ ! -d "$DIR/mysql/mysql" ]]; then
            mariadb-install-db --no-defaults --datadir="$DIR/mysql" --user=root --auth-root-authentication-method=socket \
                > "$DIR/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed ($DIR/log/mariadb-install.log)"
        fi
        (setsid mariadbd --no-defaults --datadir="$DIR/mysql" --user=root --bind-address=127.0.0.1 \
            --port=$((PORT + 3)) --socket="$DIR/run/mysqld.sock" --pid-file="$DIR/run/mysqld.pid" \
            --log-error="$DIR/log/mariadb.log" --innodb-buffer-pool-size=128M --innodb-lock-wait-timeout=900 < /dev/null > /dev/null 2>&1 &)
        wait_for 60 mariadbd sql "select 1"
        sql "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
             CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'silentvae';
             CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'silentvae';
             GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
    fi
    if ! alive slurmdbd; then
        SLURM_CONF="$DIR/etc/slurm.conf" slurmdbd
        wait_for 60 slurmdbd timeout 10 sacctmgr -n show cluster
        timeout 30 sacctmgr -i add cluster "$CLUSTER" >/dev/null 2>&1 || true
    fi
    link_runconf
    if ! alive slurmctld; then
        slurmctld -i
        wait_for 60 slurmctld timeout 10 scontrol ping
    fi
    if ! alive slurmd; then
        slurmd -N "$NODE"
        wait_for 60 "slurmd (node $NODE idle)" node_up
    fi
    echo "export SLURM_CONF=$SLURM_CONF"
}

node_up() { timeout 10 sinfo -h -N -o %t | grep -qE '^(idle|mix|alloc)'; }

link_runconf() {
    [[ -e /etc/slurm/slurm.conf ]] && { echo "slurm_local.sh: note: /etc/slurm/slurm.conf exists, so srun inside jobs" \
        "reads it, not $DIR/etc/slurm.conf" >&2; return 0; }
    if [[ -L $RUNCONF ]]; then
        [[ $(readlink "$RUNCONF") == "$DIR/etc" ]] && return 0
        [[ -e $RUNCONF ]] || rm -f "$RUNCONF"
    fi
    [[ -e $RUNCONF ]] && die "$RUNCONF exists and is not ours: another SLURM uses this machine"
    mkdir -p "$(dirname "$RUNCONF")"
    ln -s "$DIR/etc" "$RUNCONF"
}

stop_one() {  # stop_one NAME: TERM the recorded pid, wait, then KILL
    local pidf="$DIR/run/$1.pid" pid
    [[ -f $pidf ]] || return 0
    pid=$(cat "$pidf")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidf"
}

stop() {
    [[ -d $DIR ]] || return 0
    # jobs first (slurmd kills its steps when it stops only if told to): cancel whatever is still queued or running
    if alive slurmctld; then SLURM_CONF="$DIR/etc/slurm.conf" scancel --full --quiet -u root 2>/dev/null || true; sleep 1; fi
    for d in slurmd slurmctld slurmdbd mysqld munged; do stop_one "$d"; done
    # steps whose slurmstepd outlived slurmd (rare): their pids are children of nothing we track; leave them to init
    if [[ -L $RUNCONF && $(readlink "$RUNCONF") == "$DIR/etc" ]]; then rm -f "$RUNCONF"; fi
}

status() {
    for d in munged mysqld slurmdbd slurmctld slurmd; do
        if alive "$d"; then echo "$d running (pid $(cat "$DIR/run/$d.pid"))"; else echo "$d stopped"; fi
    done
}

case $cmd in
    install)
        [[ $(id -u) == 0 ]] || die "install needs root (apt-get)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update
        # shellcheck disable=SC2086
        apt-get install -y --no-install-recommends $PKGS ;;
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) die "usage: $0 install | start [DIR] | stop [DIR] | status [DIR]" ;;
esac
