#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine (controller + one compute node called localhost), for the
# Slurm backend's tests and for users who want to try `nearmetal run --backend slurm` without a cluster.
#   bash scripts/services/slurm.sh start    # prints `export SLURM_CONF=… NEARMETAL_TEST_SLURM_PARTITION=…`
#   bash scripts/services/slurm.sh stop     # stops what start started, removes its state and cgroups
#   bash scripts/services/slurm.sh status
# Needs root and Debian's slurm-wlm + munge. No systemd: munged (as munge), slurmctld and `slurmd -N localhost`
# are started by hand and their pids kept in the state directory. NEARMETAL_SLURM_DIR moves the state
# directory (default /var/lib/nearmetal-slurm); NEARMETAL_SLURM_PARTITION names the partition (default debug).
set -euo pipefail
state="${NEARMETAL_SLURM_DIR:-/var/lib/nearmetal-slurm}"
partition="${NEARMETAL_SLURM_PARTITION:-debug}"
port="${NEARMETAL_SLURM_PORT:-6817}"   # slurmctld's; slurmd listens on the next one
conf="$state/etc/slurm.conf"
export SLURM_CONF="$conf"

log() { echo "slurm.sh: $*" >&2; }

# the README's install brings only slurm-client (to submit to a cluster's own Slurm): as root, install the
# daemons here (Debian packages of scripts/debian-packages-test.txt); otherwise say what to install
need() {
  local missing=()
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "${missing[*]} not installed: apt-get install -y slurm-wlm munge"
    DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq --no-install-recommends slurm-wlm munge \
      >/dev/null || { log "apt-get install slurm-wlm munge failed"; exit 1; }
    for tool in "$@"; do
      command -v "$tool" >/dev/null 2>&1 || { log "$tool is still missing after installing slurm-wlm munge"; exit 1; }
    done
  else
    log "${missing[*]} not installed; install them as root: apt-get install -y slurm-wlm munge"
    exit 1
  fi
}

munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

write_config() {
  local cpus sockets cores threads mem_mb
  cpus=$(nproc --all)
  # the node's shape as slurmd itself sees it, so slurmd does not drain the node for a mismatch
  read -r sockets cores threads < <(slurmd -C 2>/dev/null \
    | sed -n 's/.*Boards=[0-9]* SocketsPerBoard=\([0-9]*\) CoresPerSocket=\([0-9]*\) ThreadsPerCore=\([0-9]*\).*/\1 \2 \3/p')
  sockets=${sockets:-1}; cores=${cores:-$cpus}; threads=${threads:-1}
  cpus=$((sockets * cores * threads))
  # leave the OS some memory: Slurm refuses to start jobs asking for more than RealMemory
  mem_mb=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
  mkdir -p "$state"/{etc,spool/ctld,spool/d,log,run}
  cat >"$conf" <<EOF
# written by nearmetal scripts/services/slurm.sh; removed by its stop
ClusterName=nearmetal
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
SlurmctldPort=$port
SlurmdPort=$((port + 1))
StateSaveLocation=$state/spool/ctld
SlurmdSpoolDir=$state/spool/d
SlurmctldPidFile=$state/run/slurmctld.pid
SlurmdPidFile=$state/run/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
ProctrackType=proctrack/cgroup
TaskPlugin=task/cgroup,task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
# accounting without slurmdbd (no database daemon to run): each finished job is a line of the completion
# file, which sacct reads (SLURM_CONF's cluster: \`sacct -c\`); CPU time and memory of the steps gathered by
# jobacct_gather/linux every 5 s
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=5
JobCompType=jobcomp/filetxt
JobCompLoc=$state/log/jobcomp.txt
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
MinJobAge=600
KillWait=5
Waittime=0
NodeName=localhost CPUs=$cpus Sockets=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads RealMemory=$mem_mb State=UNKNOWN
PartitionName=$partition Nodes=localhost Default=YES MaxTime=60 State=UP
EOF
  cat >"$state/etc/cgroup.conf" <<EOF
CgroupAutomount=yes
ConstrainCores=yes
ConstrainRAMSpace=yes
ConstrainSwapSpace=no
EOF
}

pid_alive() { [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

start() {
  need slurmctld slurmd munged munge sinfo
  if [[ "$(id -u)" != 0 ]]; then
    log "needs root (slurmd runs jobs as their users)"
    exit 1
  fi
  mkdir -p "$state/run"
  if ! munge_works; then
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 0755 /run/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
      if command -v mungekey >/dev/null; then mungekey --create --keyfile /etc/munge/munge.key
      else dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none; fi
      chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
    fi
    # --force: a munged killed earlier (a CI machine reused) leaves its socket and lock behind
    runuser -u munge -- /usr/sbin/munged --force --pid-file=/run/munge/munged.pid
    cp /run/munge/munged.pid "$state/run/munged.pid"   # ours to stop
    for _ in $(seq 50); do munge_works && break; sleep 0.1; done
    munge_works || { log "munged did not start"; exit 1; }
  fi
  if ! pid_alive "$state/run/slurmctld.pid"; then
    write_config
    slurmctld -c -f "$conf"   # -c: a clean state (no jobs from an earlier start)
  fi
  if ! pid_alive "$state/run/slurmd.pid"; then
    slurmd -N localhost -f "$conf"
  fi
  # ready when the node is up and a partition answers
  local ok=""
  for _ in $(seq 150); do
    if sinfo -h -N -o "%T" 2>/dev/null | grep -Eq '^(idle|mixed|allocated)'; then ok=1; break; fi
    sleep 0.2
  done
  if [[ -z "$ok" ]]; then
    log "the node did not come up; see $state/log/slurmctld.log and $state/log/slurmd.log"
    sinfo -N -l >&2 || true
    exit 1
  fi
  echo "export SLURM_CONF=$conf"
  echo "export NEARMETAL_TEST_SLURM_PARTITION=$partition"
}

stop() {
  # jobs first, so their processes and cgroups go with slurmd's help
  if pid_alive "$state/run/slurmctld.pid"; then
    scancel --partition "$partition" --full 2>/dev/null || true
    for _ in $(seq 50); do
      [[ -z "$(squeue -h -p "$partition" 2>/dev/null)" ]] && break
      sleep 0.2
    done
  fi
  for daemon in slurmd slurmctld munged; do
    local pidfile="$state/run/$daemon.pid"
    if pid_alive "$pidfile"; then
      local pid
      pid=$(cat "$pidfile")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
  done
  # slurm's cgroups (v1: one per controller hierarchy; v2: under the root), deepest first
  find /sys/fs/cgroup -mindepth 1 -maxdepth 2 -type d -name 'slurm*' 2>/dev/null | while read -r dir; do
    find "$dir" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  rm -rf "$state"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status)
    if pid_alive "$state/run/slurmctld.pid"; then sinfo -N -l; else echo "not running"; exit 3; fi
    ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
