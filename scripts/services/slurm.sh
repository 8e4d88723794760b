#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine (controller + one compute node called localhost), for the
# Slurm backend's tests and for users who want to try `nearmetal run --backend slurm` without a cluster.
#   bash scripts/services/slurm.sh start    # prints `export SLURM_CONF=… NEARMETAL_TEST_SLURM_PARTITION=…`
#   bash scripts/services/slurm.sh start --nodes 2   # two compute nodes node1, node2 (see below)
#   bash scripts/services/slurm.sh stop     # stops what start started, removes its state and cgroups
#   bash scripts/services/slurm.sh status
#
# Two nodes on one machine (--nodes 2): each node is a network namespace with its own addresses and a UTS
# namespace with its own host name (node1, node2), running its own `slurmd -N nodeN`; munged and slurmctld are
# shared and stay in the host's namespace. Debian's slurmd is built without --enable-multiple-slurmd (one
# SlurmdPort for every node), which is fine here: each slurmd binds that port in its own network namespace.
# Two networks, like a real cluster's management Ethernet and its fabric:
#   management  a bridge in the host's namespace (198.18.250.254/24, where slurmctld is reached) and one veth
#               into each node (mgmt0, 198.18.250.N): Slurm's own traffic (slurmctld, srun, I/O forwarding)
#   wire        one veth pair straight from node1 to node2 (wire0, 198.18.251.1 and .2/24): the measured path;
#               a job's MPI and benchmark traffic is pointed at it, and its counters prove what crossed it
# Addresses are from 198.18.0.0/15 (RFC 2544's benchmarking range) and never leave this machine. The nodes
# share the host's CPUs, memory and filesystem: each advertises the host's CPUs and half its memory, jobs are
# not confined by cgroups (the two slurmd would share Slurm's cgroup tree: proctrack/linuxproc, task/none).
# Every object is named nearmetal-slurm<port>-… (interfaces: nm<digest><role>, the full name in their alias);
# stop removes the namespaces, links, daemons and files start made. NEARMETAL_SLURM_NODES=2 is --nodes 2.
# Needs root and Debian's slurm-wlm + munge. No systemd: munged (as munge), slurmctld and `slurmd -N localhost`
# are started by hand and their pids kept in the state directory. NEARMETAL_SLURM_DIR moves the state
# directory (default /var/lib/nearmetal-slurm); NEARMETAL_SLURM_PARTITION names the partition (default debug).
set -euo pipefail
state="${NEARMETAL_SLURM_DIR:-/var/lib/nearmetal-slurm}"
partition="${NEARMETAL_SLURM_PARTITION:-debug}"
port="${NEARMETAL_SLURM_PORT:-6817}"   # slurmctld's; slurmd listens on the next one
nodes="${NEARMETAL_SLURM_NODES:-1}"
conf="$state/etc/slurm.conf"
export SLURM_CONF="$conf"
# the two-node form's names and addresses
tag="nearmetal-slurm$port"
mgmt_net=198.18.250
wire_net=198.18.251
ctl_addr="$mgmt_net.254"

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

# the state directory: root's, 0700, never a link or a directory someone else owns (its config names the
# programs slurmd runs as root: a writable one would let another user run anything as root)
make_state_dir() {
  if [[ -L "$state" ]]; then log "$state is a symbolic link; refusing to use it"; exit 1; fi
  if [[ -e "$state" ]]; then
    if [[ ! -d "$state" || "$(stat -c %u "$state")" != 0 ]]; then
      log "$state exists and is not a directory owned by root; remove it or set NEARMETAL_SLURM_DIR"
      exit 1
    fi
    chmod 0700 "$state"
  else
    install -d -m 0700 -o root -g root "$state"
  fi
}

ifname() {  # ifname FULL-NAME ROLE: a ≤15-character interface name, as nearmetal.host.hostnet.short_ifname makes
  echo "nm$(printf %s "$1" | sha256sum | cut -c1-10)$2"
}
node_ns() { echo "$tag-node$1"; }

# the namespaces, the management bridge with a veth into each node, the wire between node1 and node2
make_network() {
  local bridge br_alias i ns host_end
  bridge=$(ifname "$tag-mgmt" b); br_alias="$tag-mgmt"
  if ip -o route show "$mgmt_net.0/24" | grep -q . && ! ip link show "$bridge" >/dev/null 2>&1; then
    log "$mgmt_net.0/24 is routed here already (another two-node cluster?); stop it first"
    exit 1
  fi
  if ! ip link show "$bridge" >/dev/null 2>&1; then
    ip link add "$bridge" type bridge
    ip link set "$bridge" alias "$br_alias"
    ip addr add "$ctl_addr/24" dev "$bridge"
    ip link set "$bridge" up
  fi
  for i in $(seq "$nodes"); do
    ns=$(node_ns "$i")
    [[ -e /run/netns/$ns ]] && continue
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    host_end=$(ifname "$tag-node$i-mgmt" h)
    ip link add "$host_end" type veth peer name mgmt0 netns "$ns"
    ip link set "$host_end" alias "$tag-node$i-mgmt"
    ip -n "$ns" link set mgmt0 alias "$tag-node$i-mgmt"
    ip link set "$host_end" master "$bridge" up
    ip -n "$ns" addr add "$mgmt_net.$i/24" dev mgmt0
    ip -n "$ns" link set mgmt0 up
  done
  if ! ip -n "$(node_ns 1)" link show wire0 >/dev/null 2>&1; then
    ip link add wire0 netns "$(node_ns 1)" type veth peer name wire0 netns "$(node_ns 2)"
    for i in 1 2; do
      ns=$(node_ns "$i")
      ip -n "$ns" link set wire0 alias "$tag-wire"
      ip -n "$ns" addr add "$wire_net.$i/24" dev wire0
      ip -n "$ns" link set wire0 up
    done
  fi
}

remove_network() {
  local i ns pid
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$tag-node[0-9]+$" || true); do
    # whatever still runs in a node (a job's leftovers) goes with it
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns delete "$ns" 2>/dev/null || true
  done
  # the host ends of the management veths go with their peers; the bridge is the host's
  ip link delete "$(ifname "$tag-mgmt" b)" 2>/dev/null || true
  for i in 1 2; do ip link delete "$(ifname "$tag-node$i-mgmt" h)" 2>/dev/null || true; done
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
  local ctl_host=localhost proctrack=proctrack/cgroup task=task/cgroup,task/affinity select=CR_Core_Memory
  local slurmd_files="SlurmdSpoolDir=$state/spool/d
SlurmdPidFile=$state/run/slurmd.pid
SlurmdLogFile=$state/log/slurmd.log"
  local node_lines="NodeName=localhost CPUs=$cpus Sockets=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads RealMemory=$mem_mb State=UNKNOWN"
  local part_nodes=localhost
  if ((nodes > 1)); then
    # every node names the host's CPUs (they are shared); memory is split between them
    ctl_host="localhost($ctl_addr)"
    proctrack=proctrack/linuxproc; task=task/none; select=CR_Core
    slurmd_files="SlurmdSpoolDir=$state/spool/d-%n
SlurmdPidFile=$state/run/slurmd-%n.pid
SlurmdLogFile=$state/log/slurmd-%n.log"
    node_lines=""
    for i in $(seq "$nodes"); do
      node_lines+="NodeName=node$i NodeAddr=$mgmt_net.$i NodeHostname=node$i CPUs=$cpus Sockets=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads RealMemory=$((mem_mb / nodes)) State=UNKNOWN
"
    done
    part_nodes="node[1-$nodes]"
  fi
  cat >"$conf" <<EOF
# written by nearmetal scripts/services/slurm.sh; removed by its stop
ClusterName=nearmetal
SlurmctldHost=$ctl_host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
SlurmctldPort=$port
SlurmdPort=$((port + 1))
StateSaveLocation=$state/spool/ctld
SlurmctldPidFile=$state/run/slurmctld.pid
SlurmctldLogFile=$state/log/slurmctld.log
$slurmd_files
ProctrackType=$proctrack
TaskPlugin=$task
SelectType=select/cons_tres
SelectTypeParameters=$select
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
$node_lines
PartitionName=$partition Nodes=$part_nodes Default=YES MaxTime=60 State=UP
EOF
  if ((nodes > 1)); then
    echo "PMIxCliTmpDirBase=$state/nodetmp" >"$state/etc/mpi.conf"
  fi
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
  if ((nodes > 2)); then log "--nodes takes 1 or 2 (one wire joins two nodes)"; exit 2; fi
  ((nodes > 1)) && need ip nsenter unshare
  make_state_dir
  mkdir -p "$state/run"
  echo "$nodes" >"$state/nodes"
  if ! munge_works; then
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 0755 /run/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
      if command -v mungekey >/dev/null; then mungekey --create --keyfile /etc/munge/munge.key
      else (umask 077 && dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none); fi
    fi
    # the key is munge's alone, whoever made it
    chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
    # --force: a munged killed earlier (a CI machine reused) leaves its socket and lock behind
    runuser -u munge -- /usr/sbin/munged --force --pid-file=/run/munge/munged.pid
    cp /run/munge/munged.pid "$state/run/munged.pid"   # ours to stop
    for _ in $(seq 50); do munge_works && break; sleep 0.1; done
    munge_works || { log "munged did not start"; exit 1; }
  fi
  if ((nodes > 1)); then
    make_network
    # the mount point each node covers with its own directory (private: the host keeps the empty one)
    mkdir -p "$state/nodetmp"
    mountpoint -q "$state/nodetmp" || { mount --bind "$state/nodetmp" "$state/nodetmp"; mount --make-private "$state/nodetmp"; }
  fi
  if ! pid_alive "$state/run/slurmctld.pid"; then
    write_config
    slurmctld -c -f "$conf"   # -c: a clean state (no jobs from an earlier start)
  fi
  if ((nodes == 1)); then
    if ! pid_alive "$state/run/slurmd.pid"; then
      slurmd -N localhost -f "$conf"
    fi
  else
    for i in $(seq "$nodes"); do
      pid_alive "$state/run/slurmd-node$i.pid" && continue
      # the node's network namespace, a UTS namespace of its own with the node's host name, then slurmd
      # namespace with the node's host name, and a mount namespace whose only change is the node's own PMIx
      # client directory (both nodes' slurmstepd make the same directory name for a step: on one filesystem
      # they would collide); every other mount is the host's, so trial directories are shared as on a cluster
      # they would collide) and a /sys of the node's network namespace (programs that list interfaces in
      # /sys/class/net, UCX among them, see the node's), with the host's cgroup hierarchies under it
      mkdir -p "$state/spool/d-node$i" "$state/tmp-node$i" "$state/sys-node$i"
      nsenter --net="/run/netns/$(node_ns "$i")" -- unshare --uts --mount --propagation unchanged -- \
        /bin/sh -c 'hostname "$1" && mount --bind "$2" "$3" && mount -t sysfs sysfs "$4" \
          && mount --rbind /sys/fs/cgroup "$4/fs/cgroup" && mount --move "$4" /sys && shift 4 && exec "$@"' \
        sh "node$i" "$state/tmp-node$i" "$state/nodetmp" "$state/sys-node$i" slurmd -N "node$i" -f "$conf"
    done
  fi
  # ready when every node is up and a partition answers
  local ok=""
  for _ in $(seq 150); do
    if [[ $(sinfo -h -N -o "%N %T" 2>/dev/null | grep -Ec ' (idle|mixed|allocated)') -ge $nodes ]]; then
      ok=1; break
    fi
    sleep 0.2
  done
  if [[ -z "$ok" ]]; then
    log "the node(s) did not come up; see $state/log/slurmctld.log and $state/log/slurmd*.log"
    sinfo -N -l >&2 || true
    exit 1
  fi
  echo "export SLURM_CONF=$conf"
  echo "export NEARMETAL_TEST_SLURM_PARTITION=$partition"
}

stop() {
  [[ -s "$state/nodes" ]] && nodes=$(cat "$state/nodes")
  # jobs first, so their processes and cgroups go with slurmd's help
  if pid_alive "$state/run/slurmctld.pid"; then
    scancel --partition "$partition" --full 2>/dev/null || true
    for _ in $(seq 50); do
      [[ -z "$(squeue -h -p "$partition" 2>/dev/null)" ]] && break
      sleep 0.2
    done
  fi
  local pidfile
  for pidfile in "$state"/run/slurmd*.pid "$state/run/slurmctld.pid" "$state/run/munged.pid"; do
    if pid_alive "$pidfile"; then
      local pid
      pid=$(cat "$pidfile")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
  done
  # slurm's cgroups (v1: one per controller hierarchy; v2: under the root), deepest first; the two-node
  # form makes none (and must not remove those of a single-node cluster beside it)
  if ((nodes == 1)); then
    find /sys/fs/cgroup -mindepth 1 -maxdepth 2 -type d -name 'slurm*' 2>/dev/null | while read -r dir; do
      find "$dir" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    done
  fi
  remove_network
  mountpoint -q "$state/nodetmp" 2>/dev/null && umount -l "$state/nodetmp"
  rm -rf "$state"
}

command="${1:-}"
shift || true
while [[ $# -gt 0 ]]; do
  case "$1" in
    --nodes) nodes="${2:-}"; shift 2 || true ;;
    --nodes=*) nodes="${1#--nodes=}"; shift ;;
    *) echo "usage: $0 start|stop|status [--nodes 1|2]" >&2; exit 2 ;;
  esac
done
if ! [[ "$nodes" =~ ^[12]$ ]]; then echo "slurm.sh: --nodes takes 1 or 2, not '$nodes'" >&2; exit 2; fi

case "$command" in
  start) start ;;
  stop) stop ;;
  status)
    if pid_alive "$state/run/slurmctld.pid"; then sinfo -N -l; else echo "not running"; exit 3; fi
    ;;
  *)
    echo "usage: $0 start|stop|status [--nodes 1|2]" >&2
    exit 2
    ;;
esac
