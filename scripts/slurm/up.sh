#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for tests/test_slurm.py (`make test-slurm`):
# the cluster the workflow/profiles/slurm profile is tested against. Idempotent: run it again
# when the cluster is up and it only checks it (and restarts a daemon whose config changed).
#
#   bash scripts/slurm/up.sh          # install (Debian/Ubuntu packages) if missing, start, check
#   bash scripts/slurm/down.sh        # stop the daemons this script started (--purge: forget all)
#   export SLURM_CONF=/var/tmp/kubm-slurm/etc/slurm.conf   # for sinfo/sbatch/sacct (on this
#                                     # machine they also find it through /run/slurm/conf)
#
# Choices, and why:
# - Packages: Debian's slurm-wlm (slurmctld, slurmd, client tools), slurmdbd, munge and
#   mariadb-server, installed with apt-get only when missing. A policy-rc.d that refuses
#   service starts is in place during the install, so the packages' system-wide services
#   (munge, MariaDB, slurm) are not started: this cluster runs its own daemons.
# - A state dir (KUBM_SLURM_STATE, default /var/tmp/kubm-slurm), not /etc/slurm and not the
#   repository: configs in etc/, logs in log/, pid files and MariaDB's socket in run/, spool
#   and controller state in spool/, the MariaDB data in mysql/. Outside it: munge's socket
#   and slurmd's /run/slurm/conf link (both below). /etc/slurm is never written.
# - Accounting: slurmdbd backed by a private MariaDB (mysql/ in the state dir, TCP on
#   127.0.0.1 only). snakemake-executor-plugin-slurm reads job states with
#   `sacct -X --clusters all --name <run uuid>` (job_status_query.py) and checks the
#   account with `sacctmgr -n -s list user <user>` (accounts.py): both need slurmdbd.
#   With AccountingStorageType=accounting_storage/none, sacct does not answer ("Slurm
#   accounting storage is disabled"), and jobcomp/filetxt is not what the plugin's sacct
#   call reads (it could fall back to squeue, which forgets a job MinJobAge after it ends).
#   The account (KUBM_SLURM_ACCOUNT, default kubm) is created with sacctmgr, root and the
#   sudo-calling user are added to it, and AccountingStorageEnforce=associations makes
#   sbatch refuse an unknown account, as a real cluster does. AccountingStoreFlags=
#   job_comment keeps the plugin's --comment (rule_<rule>_wildcards_<...>) for sacct.
# - munge on its default socket, /run/munge/munge.socket.2: slurmd in configless mode (below)
#   must authenticate before it has slurm.conf, so it can only use the default socket. When a
#   munged already answers there (a machine with a system munge), that one is used: on a
#   single node any key works, since the same daemon encodes and decodes. Otherwise up.sh
#   starts munged there with its own key (etc/munge/munge.key) and down.sh stops it.
# - Configless slurmd (SlurmctldParameters=enable_configless, slurmd --conf-server): slurmd
#   caches slurm.conf and links /run/slurm/conf to the cache, where SLURM's clients look
#   when neither SLURM_CONF nor /etc/slurm/slurm.conf exists. The plugin's jobstep removes
#   SLURM_CONF from a job's environment before it runs `srun`; without the link, srun inside
#   a job finds no config ("Could not establish a configuration source").
# - Containers (Docker, gVisor) have no systemd and no usable cgroups: ProctrackType=
#   proctrack/linuxproc, TaskPlugin=task/none, no cgroup.conf; the daemons run as root
#   (SlurmUser=root), a throwaway test cluster with one user. MariaDB without native AIO.
# - One node: this machine under its short hostname (what slurmd calls itself), addressed
#   at 127.0.0.1, with the CPU layout `slurmd -C` reports and RealMemory 98% of what it
#   reports (a node configured with more memory than it finds is drained). One partition
#   (KUBM_SLURM_PARTITION, default kubm), the default, no time limit.
#   SelectTypeParameters=CR_Core_Memory: cores and memory are consumable, so --mem and
#   --cpus-per-task of the profile are really scheduled against.
# - Ports: 16817 slurmctld, 16818 slurmd, 16819 slurmdbd, 16820 MariaDB (KUBM_SLURM_BASE_PORT
#   moves all four), not SLURM's defaults 6817-6819, so a real cluster's daemons on this
#   machine do not collide with these.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "up.sh: needs root (apt-get, daemons), and sudo is missing" >&2; exit 1; }
    exec sudo --preserve-env=KUBM_SLURM_STATE,KUBM_SLURM_ACCOUNT,KUBM_SLURM_PARTITION,KUBM_SLURM_CLUSTER,KUBM_SLURM_BASE_PORT \
        bash "$0" "$@"
fi

STATE=${KUBM_SLURM_STATE:-/var/tmp/kubm-slurm}
CLUSTER=${KUBM_SLURM_CLUSTER:-kubm}
PARTITION=${KUBM_SLURM_PARTITION:-kubm}
ACCOUNT=${KUBM_SLURM_ACCOUNT:-kubm}
BASE_PORT=${KUBM_SLURM_BASE_PORT:-16817}
CTLD_PORT=$BASE_PORT
SLURMD_PORT=$((BASE_PORT + 1))
DBD_PORT=$((BASE_PORT + 2))
DB_PORT=$((BASE_PORT + 3))
NODE=$(hostname -s)
USERS=(root)
if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then USERS+=("$SUDO_USER"); fi

ETC=$STATE/etc RUN=$STATE/run LOG=$STATE/log SPOOL=$STATE/spool
MUNGE_SOCKET=/run/munge/munge.socket.2
DB_SOCKET=$RUN/mysql/mysqld.sock
export SLURM_CONF=$ETC/slurm.conf

say() { echo "[slurm up] $*"; }
die() { echo "[slurm up] ERROR: $*" >&2; exit 1; }

# wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND until it succeeds.
wait_for() {
    local secs=$1 what=$2
    shift 2
    for _ in $(seq $((secs * 2))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.5
    done
    return 1
}

# running PIDFILE NAME: the pid file names a live process whose command is NAME.
running() {
    local pid
    [ -s "$1" ] || return 1
    pid=$(cat "$1")
    [ -d "/proc/$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]
}

stop_pid() {  # stop_pid PIDFILE NAME
    if running "$1" "$2"; then
        local pid
        pid=$(cat "$1")
        kill "$pid"
        for _ in $(seq 60); do [ -d "/proc/$pid" ] || break; sleep 0.5; done
        [ -d "/proc/$pid" ] && kill -9 "$pid"
    fi
    rm -f "$1"
}

# write_config FILE MODE OWNER < content: replace FILE when the content differs. Exit status 0
# when it changed (the daemon reading it must restart), 1 when it was already up to date.
write_config() {
    local file=$1 mode=$2 owner=$3 tmp
    tmp=$(mktemp)
    cat > "$tmp"
    if [ -f "$file" ] && cmp -s "$tmp" "$file"; then
        rm -f "$tmp"
        return 1
    fi
    install -m "$mode" -o "$owner" "$tmp" "$file"
    rm -f "$tmp"
    say "wrote $file"
    return 0
}

# --- packages ---------------------------------------------------------------------------
PKGS=(slurm-wlm slurmdbd munge mariadb-server)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get (Debian/Ubuntu only)"
    say "installing ${missing[*]} (apt-get)"
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT   # also when apt-get fails
    fi
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
else
    say "packages present: ${PKGS[*]} ($(dpkg-query -W -f='${Version}' slurm-wlm))"
fi
for bin in munged mariadbd mariadb-install-db slurmdbd slurmctld slurmd sbatch sacct sacctmgr sinfo; do
    command -v "$bin" >/dev/null || [ -x "/usr/sbin/$bin" ] || die "$bin not found after installing ${PKGS[*]}"
done
export PATH=$PATH:/usr/sbin

# --- state dir ----------------------------------------------------------------------------
install -d -m 755 "$STATE" "$ETC" "$RUN" "$LOG" "$SPOOL" "$SPOOL/ctld" "$SPOOL/slurmd"
install -d -m 700 -o munge -g munge "$ETC/munge" "$STATE/munge-lib"
install -d -m 755 -o munge -g munge "$RUN/munge"
install -d -m 755 -o mysql -g mysql "$STATE/mysql" "$RUN/mysql"
# munged and mariadbd write their logs after dropping root
for f in munged:munge mariadb:mysql; do
    [ -e "$LOG/${f%%:*}.log" ] || install -m 640 -o "${f#*:}" -g "${f#*:}" /dev/null "$LOG/${f%%:*}.log"
done

# --- munge ----------------------------------------------------------------------------------
if [ ! -s "$ETC/munge/munge.key" ]; then
    runuser -u munge -- mungekey --create --keyfile="$ETC/munge/munge.key"
    say "created munge key $ETC/munge/munge.key"
fi
munge_ok() { munge -S "$MUNGE_SOCKET" -n | unmunge -S "$MUNGE_SOCKET"; }
if running "$RUN/munge/munged.pid" munged; then
    say "munged: running (pid $(cat "$RUN/munge/munged.pid"))"
elif munge_ok >/dev/null 2>&1; then
    say "munged: using the one already answering on $MUNGE_SOCKET (not started by up.sh)"
else
    # the socket's directory: owned by munge, and searchable by every client
    install -d -m 755 -o munge -g munge "$(dirname "$MUNGE_SOCKET")"
    runuser -u munge -- munged --socket="$MUNGE_SOCKET" --key-file="$ETC/munge/munge.key" \
        --pid-file="$RUN/munge/munged.pid" --num-threads=10 --log-file="$LOG/munged.log" --seed-file="$STATE/munge-lib/munged.seed"
    wait_for 10 munged munge_ok \
        || die "munged did not answer; see $LOG/munged.log"
    say "munged: started (socket $MUNGE_SOCKET)"
fi

# --- MariaDB (slurmdbd's storage) -------------------------------------------------------------
[ -s "$ETC/db.pass" ] || (umask 077; head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' > "$ETC/db.pass")
DB_PASS=$(cat "$ETC/db.pass")
if [ ! -d "$STATE/mysql/mysql" ]; then
    mariadb-install-db --no-defaults --user=mysql --datadir="$STATE/mysql" --auth-root-authentication-method=socket \
        --skip-test-db > "$LOG/mariadb-install.log" 2>&1 || die "mariadb-install-db failed; see $LOG/mariadb-install.log"
    say "initialised MariaDB data dir $STATE/mysql"
fi
db() { mariadb --no-defaults -S "$DB_SOCKET" -u root "$@"; }
if running "$RUN/mysql/mysqld.pid" mariadbd; then
    say "mariadbd: running (pid $(cat "$RUN/mysql/mysqld.pid"))"
else
    # innodb settings: slurmdbd logs an error below half its recommendations (1024M, 900 s); no native AIO in containers.
    setsid mariadbd --no-defaults --user=mysql --datadir="$STATE/mysql" --socket="$DB_SOCKET" \
        --pid-file="$RUN/mysql/mysqld.pid" --port="$DB_PORT" --bind-address=127.0.0.1 --skip-name-resolve \
        --innodb-use-native-aio=0 --innodb-lock-wait-timeout=900 --innodb-buffer-pool-size=512M --log-error="$LOG/mariadb.log" \
        </dev/null >/dev/null 2>&1 &
    wait_for 60 mariadbd db -e "select 1" || die "MariaDB did not start; see $LOG/mariadb.log"
    say "mariadbd: started (127.0.0.1:$DB_PORT)"
fi
db -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"

# --- configs ------------------------------------------------------------------------------------
dbd_changed=0 conf_changed=0
write_config "$ETC/slurmdbd.conf" 600 root <<EOF && dbd_changed=1 || true
# Written by scripts/slurm/up.sh (kubm's local test cluster); edits are overwritten.
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF

# The node as slurmd sees it (CPUs, sockets, cores, threads), RealMemory 98% of what it finds.
read -r -a hw <<< "$(slurmd -C | head -1)"
layout=() mem=0
for kv in "${hw[@]}"; do
    case $kv in
        NodeName=*) ;;
        RealMemory=*) mem=${kv#RealMemory=} ;;
        *) layout+=("$kv") ;;
    esac
done
[ "$mem" -gt 0 ] || die "slurmd -C reported no RealMemory: $(slurmd -C)"
mem=$((mem * 98 / 100))

write_config "$ETC/slurm.conf" 644 root <<EOF && conf_changed=1 || true
# Written by scripts/slurm/up.sh (kubm's local test cluster); edits are overwritten.
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$SPOOL/ctld
SlurmdSpoolDir=$SPOOL/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
# containers: no cgroups
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
AccountingStorageEnforce=associations
# sacct's Comment column: the plugin writes rule_<rule>_wildcards_<...> there
AccountingStoreFlags=job_comment
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# slurmd takes its config from slurmctld (see the slurmd start below)
SlurmctldParameters=enable_configless
NodeName=$NODE NodeAddr=127.0.0.1 ${layout[*]} RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

# --- slurmdbd, then the cluster, account and users in it --------------------------------------------
if running "$RUN/slurmdbd.pid" slurmdbd && [ $dbd_changed = 0 ]; then
    say "slurmdbd: running (pid $(cat "$RUN/slurmdbd.pid"))"
else
    stop_pid "$RUN/slurmdbd.pid" slurmdbd
    slurmdbd
    wait_for 60 slurmdbd sacctmgr -n show cluster || die "slurmdbd did not answer; see $LOG/slurmdbd.log"
    say "slurmdbd: started (127.0.0.1:$DBD_PORT)"
fi
if ! sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER"; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
    say "accounting: added cluster $CLUSTER"
fi
if ! sacctmgr -n -P show account format=account | grep -qx "$ACCOUNT"; then
    sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" description="kubm test cluster" organization=kubm >/dev/null
    say "accounting: added account $ACCOUNT"
fi
for u in "${USERS[@]}"; do
    if ! sacctmgr -n -P show assoc where user="$u" account="$ACCOUNT" cluster="$CLUSTER" format=user | grep -qx "$u"; then
        sacctmgr -i add user "$u" account="$ACCOUNT" cluster="$CLUSTER" >/dev/null
        say "accounting: added user $u to account $ACCOUNT"
    fi
done

# --- slurmctld, slurmd --------------------------------------------------------------------------------
if running "$RUN/slurmctld.pid" slurmctld && [ $conf_changed = 0 ]; then
    say "slurmctld: running (pid $(cat "$RUN/slurmctld.pid"))"
else
    stop_pid "$RUN/slurmctld.pid" slurmctld
    slurmctld
    wait_for 60 slurmctld scontrol ping || die "slurmctld did not answer; see $LOG/slurmctld.log"
    say "slurmctld: started ($NODE:$CTLD_PORT)"
fi
if running "$RUN/slurmd.pid" slurmd && [ $conf_changed = 0 ]; then
    say "slurmd: running (pid $(cat "$RUN/slurmd.pid"))"
else
    stop_pid "$RUN/slurmd.pid" slurmd
    # Configless: slurmd fetches slurm.conf from slurmctld and links /run/slurm/conf to its
    # cache, where srun inside a job finds it (the plugin's jobstep drops SLURM_CONF from the
    # job's environment before it calls srun).
    env -u SLURM_CONF slurmd --conf-server "127.0.0.1:$CTLD_PORT" || die "slurmd did not start; see $LOG/slurmd.log"
    say "slurmd: started (node $NODE, port $SLURMD_PORT, configless from 127.0.0.1:$CTLD_PORT)"
fi

node_state() { sinfo -h -n "$NODE" -o %T 2>/dev/null | head -1; }
for _ in $(seq 60); do
    case $(node_state) in idle*|mixed*|allocated*|completing*) break ;; esac
    sleep 1
done
state=$(node_state)
case $state in
    idle*|mixed*|allocated*|completing*) ;;
    *)
        reason=$(sinfo -h -n "$NODE" -o %E 2>/dev/null)
        say "node $NODE is '$state' ($reason): resuming it"
        scontrol update nodename="$NODE" state=resume || true
        sleep 2
        state=$(node_state)
        case $state in idle*|mixed*|allocated*|completing*) ;; *) die "node $NODE is '$state'; see $LOG/slurmd.log and $LOG/slurmctld.log" ;; esac
        ;;
esac

sacct -n -X -S now-1hours >/dev/null || die "sacct does not answer; see $LOG/slurmdbd.log"
say "up: cluster $CLUSTER, partition $PARTITION, node $NODE ($state, ${layout[*]} RealMemory=$mem), account $ACCOUNT"
say "clients need: export SLURM_CONF=$SLURM_CONF"
