#!/usr/bin/env bash
# Stop the single-node SLURM cluster scripts/slurm/up.sh started: slurmd, slurmctld, slurmdbd,
# MariaDB and munged, each by the pid in its pid file under the state dir (nothing else is
# signalled). The state (configs, accounting database, job history) stays for the next up.sh;
# --purge deletes the state dir as well. The installed packages stay.
#
#   bash scripts/slurm/down.sh [--purge]
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "down.sh: needs root, and sudo is missing" >&2; exit 1; }
    exec sudo --preserve-env=KUBM_SLURM_STATE bash "$0" "$@"
fi

STATE=${KUBM_SLURM_STATE:-/var/tmp/kubm-slurm}
RUN=$STATE/run
purge=0
case "${1:-}" in
    "") ;;
    --purge) purge=1 ;;
    *) echo "usage: $0 [--purge]" >&2; exit 2 ;;
esac

say() { echo "[slurm down] $*"; }

# stop PIDFILE NAME: TERM the process the pid file names if it is NAME, wait up to 30 s, then KILL.
stop() {
    local pidfile=$1 name=$2 pid
    if [ ! -s "$pidfile" ]; then
        say "$name: not running (no $pidfile)"
        return
    fi
    pid=$(cat "$pidfile")
    if [ ! -d "/proc/$pid" ] || [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != "$name" ]; then
        say "$name: not running (stale pid file)"
        rm -f "$pidfile"
        return
    fi
    kill "$pid"
    for _ in $(seq 60); do [ -d "/proc/$pid" ] || break; sleep 0.5; done
    if [ -d "/proc/$pid" ]; then
        kill -9 "$pid"
        say "$name: killed (pid $pid did not stop on TERM within 30 s)"
    else
        say "$name: stopped (pid $pid)"
    fi
    rm -f "$pidfile"
}

# The reverse of up.sh's order: the node and controller before accounting, accounting before
# its database, munge last (the others authenticate through it while shutting down).
stop "$RUN/slurmd.pid" slurmd
stop "$RUN/slurmctld.pid" slurmctld
stop "$RUN/slurmdbd.pid" slurmdbd
stop "$RUN/mysql/mysqld.pid" mariadbd
stop "$RUN/munge/munged.pid" munged

# slurmd's configless link (up.sh): remove it when it points into this state dir.
if [ -L /run/slurm/conf ] && [[ "$(readlink /run/slurm/conf)" == "$STATE"/* ]]; then
    rm -f /run/slurm/conf
    say "removed /run/slurm/conf (slurmd's config cache link)"
fi

if [ $purge = 1 ] && [ -d "$STATE" ]; then
    rm -rf "$STATE"
    say "removed $STATE"
fi
