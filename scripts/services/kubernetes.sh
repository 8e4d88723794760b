#!/usr/bin/env bash
# A real single-node Kubernetes cluster on this machine, for the Kubernetes backend's end-to-end test and for
# users who want to try `nearmetal study cpu-quota --backend kubernetes` without a cluster.
#   bash scripts/services/kubernetes.sh start    # prints `export KUBECONFIG=… CONTAINERD_ADDRESS=… NEARMETAL_KUBE_IMAGE=…`
#   bash scripts/services/kubernetes.sh stop     # stops what start started and removes everything it made
#   bash scripts/services/kubernetes.sh status
# Needs root, the binaries of scripts/build-kubernetes.sh (Debian's kubernetes 1.20 source; cached in
# /var/cache/nearmetal/kubernetes) and Debian's etcd-server, containerd, runc, crun and
# containernetworking-plugins. No systemd: every daemon is started by hand, its pid kept in the state
# directory, the kubelet with the cgroupfs driver. etcd and the control plane listen on 127.0.0.1; the node is called
# $NEARMETAL_KUBE_NODE (default nearmetal-node); its address is 10.245.0.1 on the pods' bridge (nmk8s0,
# 10.245.0.0/24, no masquerading: no iptables rules), where the kubelet listens. Two RuntimeClasses: runc
# and crun. Images come from
# no registry: start imports the pause image built from the Kubernetes sources and every image archive of
# $cache/images (`nearmetal image build` writes the workload image there) into containerd's k8s.io namespace.
# The kubelet sets vm.overcommit_memory=1, kernel.panic=10 and kernel.panic_on_oops=1 (it refuses to run
# otherwise); stop puts the machine's values back.
set -euo pipefail
state="${NEARMETAL_KUBE_DIR:-/var/lib/nearmetal-kubernetes}"
cache="${NEARMETAL_KUBE_CACHE:-/var/cache/nearmetal/kubernetes}"
node="${NEARMETAL_KUBE_NODE:-nearmetal-node}"
api_port="${NEARMETAL_KUBE_API_PORT:-16443}"
etcd_port="${NEARMETAL_KUBE_ETCD_PORT:-12379}"   # etcd's peer port is the next one
bridge=nmk8s0
net_name=nearmetal-k8s
subnet=10.245.0.0/24
node_ip=10.245.0.1   # the bridge's address: the kubelet refuses a loopback node IP
bin="$cache/bin"
sock="$state/containerd/containerd.sock"
here="$(cd "$(dirname "$0")/../.." && pwd)"
build_cmd="bash scripts/build-kubernetes.sh"
sysctls=(vm.overcommit_memory kernel.panic kernel.panic_on_oops)
daemons=(etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet)

log() { echo "kubernetes.sh: $*" >&2; }
# the state directory holds the cluster's keys, tokens and pid files that stop signals: it and its parent
# must be root's and writable by nobody else (NEARMETAL_KUBE_DIR in /tmp would let a user plant them)
check_state_dir() {
  local dir
  for dir in "$(dirname "$state")" "$state"; do
    [[ -e "$dir" || "$dir" == "$state" ]] || { log "$dir does not exist"; exit 1; }
    [[ -e "$dir" || -L "$dir" ]] || continue
    if [[ -L "$dir" || ! -d "$dir" || "$(stat -c %u "$dir")" != 0 || $((8#$(stat -c %a "$dir") & 8#022)) != 0 ]]; then
      log "$dir must be a directory owned by root and writable by nobody else (not a link); refusing to use $state"
      exit 1
    fi
  done
}
pid_alive() { [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
kctl() { "$bin/kubectl" --kubeconfig "$state/admin.kubeconfig" --cache-dir "$state/kubectl-cache" --request-timeout=10s "$@"; }
ctr_() { timeout 60 ctr --address "$sock" --namespace k8s.io "$@"; }

need() {
  if ! bash "$here/scripts/build-kubernetes.sh" --check 2>/dev/null; then
    log "the Kubernetes binaries are not built in $cache; build them once (about 11 minutes on 2 cores) with: $build_cmd"
    exit 1
  fi
  local missing=()
  for tool in etcd containerd containerd-shim-runc-v2 ctr runc crun openssl; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  [[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/loopback ]] \
    || missing+=("/usr/lib/cni/{bridge,host-local,loopback}")
  if [[ ${#missing[@]} -gt 0 ]]; then
    log "${missing[*]} missing; install them as root: apt-get install -y etcd-server containerd runc crun containernetworking-plugins openssl"
    exit 1
  fi
  if [[ "$(id -u)" != 0 ]]; then
    log "needs root (the kubelet and containerd manage cgroups, mounts and network namespaces)"
    exit 1
  fi
}

# --- certificates and credentials ------------------------------------------------------------------------
sign() {  # name CN O SANs: a key and a certificate signed by the cluster's CA
  local name=$1 cn=$2 org=$3 sans=$4
  openssl genrsa -out "$state/pki/$name.key" 2048 2>/dev/null
  openssl req -new -key "$state/pki/$name.key" -subj "/CN=$cn${org:+/O=$org}" -out "$state/pki/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=serverAuth,clientAuth"
    [[ -n "$sans" ]] && echo "subjectAltName=$sans"
  } >"$state/pki/$name.ext"
  openssl x509 -req -in "$state/pki/$name.csr" -CA "$state/pki/ca.crt" -CAkey "$state/pki/ca.key" \
    -CAcreateserial -days 30 -sha256 -extfile "$state/pki/$name.ext" -out "$state/pki/$name.crt" 2>/dev/null
}

kubeconfig() {  # file user token
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: nearmetal
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority: $state/pki/ca.crt
users:
- name: $2
  user:
    token: $3
contexts:
- name: nearmetal
  context: {cluster: nearmetal, user: $2}
current-context: nearmetal
EOF
  chmod 0600 "$1"
}

write_config() {
  check_state_dir
  mkdir -m 0700 -p "$state"
  chmod 0700 "$state"
  mkdir -p "$state"/{pki,etc,log,run,etcd,kubelet,cni/net.d,cni/ipam,containerd/root,containerd/state}
  openssl genrsa -out "$state/pki/ca.key" 2048 2>/dev/null
  openssl req -x509 -new -key "$state/pki/ca.key" -subj "/CN=nearmetal-kubernetes-ca" -days 30 \
    -out "$state/pki/ca.crt" 2>/dev/null
  sign apiserver kube-apiserver "" \
    "IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
  sign apiserver-kubelet-client kube-apiserver-kubelet-client system:masters ""
  sign kubelet "system:node:$node" system:nodes "IP:$node_ip,IP:127.0.0.1,DNS:$node,DNS:localhost"
  # etcd holds every secret and token of the cluster: TLS with client certificates on both its ports, so
  # a local user cannot read it or write a privileged pod into it (it listened on plain http before)
  sign etcd-server etcd "" "IP:127.0.0.1,DNS:localhost"
  sign etcd-client kube-apiserver-etcd-client "" ""
  openssl genrsa -out "$state/pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$state/pki/sa.key" -pubout -out "$state/pki/sa.pub" 2>/dev/null
  # one random token per user (kube-apiserver --token-auth-file: token,user,uid,"groups")
  local admin kubelet cm sched
  admin=$(openssl rand -hex 16); kubelet=$(openssl rand -hex 16); cm=$(openssl rand -hex 16); sched=$(openssl rand -hex 16)
  cat >"$state/pki/tokens.csv" <<EOF
$admin,nearmetal-admin,1,"system:masters"
$kubelet,system:node:$node,2,"system:nodes"
$cm,system:kube-controller-manager,3
$sched,system:kube-scheduler,4
EOF
  chmod 0600 "$state/pki/tokens.csv" "$state/pki/"*.key
  kubeconfig "$state/admin.kubeconfig" nearmetal-admin "$admin"
  kubeconfig "$state/etc/kubelet.kubeconfig" "system:node:$node" "$kubelet"
  kubeconfig "$state/etc/controller-manager.kubeconfig" system:kube-controller-manager "$cm"
  kubeconfig "$state/etc/scheduler.kubeconfig" system:kube-scheduler "$sched"

  local pause_ref restrict_oom=false
  pause_ref=$(cat "$cache/images/pause.ref")
  # CAP_SYS_RESOURCE is bit 24 of the effective capabilities
  (( (0x$(awk '/^CapEff/ {print $2}' /proc/self/status) >> 24) & 1 )) || restrict_oom=true
  cat >"$state/etc/containerd.toml" <<EOF
# written by nearmetal scripts/services/kubernetes.sh; removed by its stop
version = 2
root = "$state/containerd/root"
state = "$state/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$pause_ref"
  disable_apparmor = true
  # the sandbox's oom_score_adj (-998) needs CAP_SYS_RESOURCE, which root lacks on some machines (this one's
  # runc: "failed to update /proc/self/oom_score_adj: Permission denied"): containerd's own value is the floor
  restrict_oom_score_adj = $restrict_oom
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        Root = "$state/runtime/runc"
        SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crun]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crun.options]
        BinaryName = "$(command -v crun)"
        Root = "$state/runtime/crun"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$state/cni/net.d"
EOF
  cat >"$state/cni/net.d/10-$net_name.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "$net_name",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$bridge",
      "isGateway": true,
      "ipMasq": false,
      "ipam": {"type": "host-local", "dataDir": "$state/cni/ipam", "ranges": [[{"subnet": "$subnet"}]]}
    }
  ]
}
EOF
  cat >"$state/etc/kubelet.yaml" <<EOF
# written by nearmetal scripts/services/kubernetes.sh; removed by its stop
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $node_ip
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
cgroupDriver: cgroupfs
failSwapOn: false
makeIPTablesUtilChains: false
tlsCertFile: $state/pki/kubelet.crt
tlsPrivateKeyFile: $state/pki/kubelet.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $state/pki/ca.crt}
authorization: {mode: Webhook}
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
# images come from no registry: never collect them (they could not be pulled back)
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 2%, imagefs.available: 2%}
serializeImagePulls: false
EOF
}

# --- start -----------------------------------------------------------------------------------------------
launch() {  # name argv...: start a daemon in the background, its log and pid in the state directory
  local name=$1; shift
  setsid "$@" >"$state/log/$name.log" 2>&1 </dev/null &
  echo $! >"$state/run/$name.pid"
}

wait_for() {  # what seconds command...
  local what=$1 seconds=$2; shift 2
  local deadline=$((SECONDS + seconds))
  while ((SECONDS < deadline)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  log "$what did not come up within ${seconds}s"
  return 1
}

fail_start() {
  log "$1; logs in $state/log (kept in $state.failed-log); stopping what was started"
  rm -rf "$state.failed-log"; cp -r "$state/log" "$state.failed-log" 2>/dev/null || true
  tail -n 15 "$state/log/"*.log >&2 2>/dev/null || true
  stop
  exit 1
}

start() {
  need
  if pid_alive "$state/run/kube-apiserver.pid"; then
    log "already running"
    exports
    return
  fi
  stop >/dev/null 2>&1 || true   # what a killed earlier start left
  local t0=$SECONDS
  write_config
  # what the kubelet will change and stop puts back
  for s in "${sysctls[@]}"; do echo "$s=$(sysctl -n "$s")"; done >"$state/run/sysctl.saved"
  # directories outside the state directory the kubelet and containerd write into: what they held before
  for d in /var/log/pods /var/log/containers /var/lib/cni /var/lib/cni/results /var/lib/kubelet /run/containerd /run/containerd/s; do
    if [[ -d $d ]]; then ls -A "$d" | sed "s|^|$d/|"; else echo "$d"; fi
  done >"$state/run/outside.before"

  # crun refuses a cgroup v1/v2 hybrid host whose v2 hierarchy has controllers (this machine: hugetlb on v2,
  # "cgroups in hybrid mode not supported, drop all controllers from cgroupv2"); such controllers get v1
  # hierarchies of their own while the cluster runs (stop unmounts them: they go back to v2)
  local ctrl v2_ctrls
  v2_ctrls=$(cat /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null || true)
  if [[ -n $v2_ctrls && -d /sys/fs/cgroup/cpu ]]; then
    for ctrl in $v2_ctrls; do
      if [[ ! -e /sys/fs/cgroup/$ctrl ]] && mkdir "/sys/fs/cgroup/$ctrl" \
        && mount -t cgroup -o "$ctrl" cgroup "/sys/fs/cgroup/$ctrl"; then
        echo "$ctrl" >>"$state/run/v1-moved"
      else
        rmdir "/sys/fs/cgroup/$ctrl" 2>/dev/null || true
        log "could not move the $ctrl controller off cgroup v2: the crun RuntimeClass will fail here"
      fi
    done
  fi

  launch etcd etcd --name nearmetal --data-dir "$state/etcd" \
    --listen-client-urls "https://127.0.0.1:$etcd_port" --advertise-client-urls "https://127.0.0.1:$etcd_port" \
    --listen-peer-urls "https://127.0.0.1:$((etcd_port + 1))" \
    --initial-advertise-peer-urls "https://127.0.0.1:$((etcd_port + 1))" \
    --initial-cluster "nearmetal=https://127.0.0.1:$((etcd_port + 1))" \
    --cert-file "$state/pki/etcd-server.crt" --key-file "$state/pki/etcd-server.key" \
    --client-cert-auth --trusted-ca-file "$state/pki/ca.crt" \
    --peer-cert-file "$state/pki/etcd-server.crt" --peer-key-file "$state/pki/etcd-server.key" \
    --peer-client-cert-auth --peer-trusted-ca-file "$state/pki/ca.crt"
  launch kube-apiserver "$bin/kube-apiserver" --etcd-servers "https://127.0.0.1:$etcd_port" \
    --etcd-cafile "$state/pki/ca.crt" --etcd-certfile "$state/pki/etcd-client.crt" \
    --etcd-keyfile "$state/pki/etcd-client.key" \
    --bind-address 127.0.0.1 --secure-port "$api_port" --insecure-port 0 \
    --tls-cert-file "$state/pki/apiserver.crt" --tls-private-key-file "$state/pki/apiserver.key" \
    --client-ca-file "$state/pki/ca.crt" --token-auth-file "$state/pki/tokens.csv" \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction --allow-privileged=true \
    --service-account-key-file "$state/pki/sa.pub" --service-account-signing-key-file "$state/pki/sa.key" \
    --service-account-issuer https://kubernetes.default.svc --service-cluster-ip-range 10.96.0.0/24 \
    --kubelet-client-certificate "$state/pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$state/pki/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority "$state/pki/ca.crt" --kubelet-preferred-address-types InternalIP \
    --enable-priority-and-fairness=false
  wait_for "kube-apiserver" 120 kctl get --raw /readyz || fail_start "kube-apiserver did not become ready"
  launch kube-controller-manager "$bin/kube-controller-manager" \
    --kubeconfig "$state/etc/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$state/etc/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$state/etc/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --port 0 --leader-elect=false --use-service-account-credentials=true \
    --service-account-private-key-file "$state/pki/sa.key" --root-ca-file "$state/pki/ca.crt" \
    --controllers '*,-nodeipam,-service,-route,-cloud-node-lifecycle'
  launch kube-scheduler "$bin/kube-scheduler" --kubeconfig "$state/etc/scheduler.kubeconfig" \
    --authentication-kubeconfig "$state/etc/scheduler.kubeconfig" \
    --authorization-kubeconfig "$state/etc/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --port 0 --leader-elect=false
  launch containerd containerd --config "$state/etc/containerd.toml"
  wait_for containerd 60 ctr_ version || fail_start "containerd did not start"
  # images: no registry, so the pause image and the workload images come from archives
  local archive
  for archive in "$cache/images/"*.tar; do
    ctr_ images import "$archive" >"$state/log/import-$(basename "$archive" .tar).log" 2>&1 \
      || fail_start "ctr images import $archive failed"
  done
  # the node's address: the pods' bridge, made here with the gateway address the bridge plugin would give it
  # (the kubelet refuses a loopback node IP; the API server reaches the kubelet there for logs)
  ip link add "$bridge" type bridge && ip addr add "$node_ip/24" dev "$bridge" && ip link set "$bridge" up \
    || fail_start "could not create the bridge $bridge"
  launch kubelet "$bin/kubelet" --config "$state/etc/kubelet.yaml" \
    --kubeconfig "$state/etc/kubelet.kubeconfig" --root-dir "$state/kubelet" --cert-dir "$state/pki" \
    --container-runtime remote --container-runtime-endpoint "unix://$sock" \
    --pod-infra-container-image "$(cat "$cache/images/pause.ref")" \
    --hostname-override "$node" --node-ip "$node_ip" --v 1
  wait_for "node $node Ready" 180 bash -c \
    "'$bin/kubectl' --kubeconfig '$state/admin.kubeconfig' --cache-dir '$state/kubectl-cache' get node '$node' \
      -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True" \
    || fail_start "the node did not become Ready"
  wait_for "the default service account" 120 kctl -n default get serviceaccount default \
    || fail_start "the controller-manager did not create the default service account"
  kctl apply -f - >/dev/null <<EOF || fail_start "the RuntimeClasses could not be created"
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata: {name: runc}
handler: runc
---
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata: {name: crun}
handler: crun
EOF
  echo "$((SECONDS - t0))" >"$state/run/start_s"
  log "up in $((SECONDS - t0)) s: node $node, $(kctl version --short 2>/dev/null | tail -1)"
  exports
}

exports() {
  echo "export KUBECONFIG=$state/admin.kubeconfig"
  echo "export CONTAINERD_ADDRESS=$sock"
  local ref
  ref=$(cat "$cache/images/workload.ref" 2>/dev/null || true)
  [[ -n $ref ]] && echo "export NEARMETAL_KUBE_IMAGE=$ref"
  return 0
}

# --- stop ------------------------------------------------------------------------------------------------
stop_pid() {  # pidfile
  local pidfile=$1 pid
  pid_alive "$pidfile" || return 0
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}

shim_pids() {  # containerd's shims for this containerd (they outlive it): by the socket on their command line
  local p
  for p in /proc/[0-9]*; do
    { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -qF -- "-address $sock " && echo "${p#/proc/}"
  done
  return 0
}

stop() {
  # pods first, while the kubelet can still tear them down (volumes, sandboxes, network)
  if pid_alive "$state/run/kube-apiserver.pid" && pid_alive "$state/run/kubelet.pid"; then
    kctl delete jobs --all --all-namespaces --wait=false >/dev/null 2>&1 || true
    kctl delete pods --all --all-namespaces --grace-period=0 --force --wait=false >/dev/null 2>&1 || true
    for _ in $(seq 60); do
      [[ -z "$(kctl get pods --all-namespaces -o name 2>/dev/null)" ]] && break
      sleep 0.5
    done
  fi
  local name
  for name in kubelet kube-scheduler kube-controller-manager; do stop_pid "$state/run/$name.pid"; done
  # whatever containers are left: their tasks killed and deleted through containerd
  if pid_alive "$state/run/containerd.pid"; then
    local id
    for id in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
    sleep 0.5
    for id in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks delete -f "$id" >/dev/null 2>&1 || true; done
    for id in $(ctr_ containers ls -q 2>/dev/null); do ctr_ containers delete "$id" >/dev/null 2>&1 || true; done
  fi
  stop_pid "$state/run/containerd.pid"
  local pid
  for pid in $(shim_pids); do kill -9 "$pid" 2>/dev/null || true; done
  # processes still in the kubelet's cgroups (a container whose shim was gone)
  local procs
  for procs in $(find /sys/fs/cgroup -path '*/kubepods*' -name cgroup.procs 2>/dev/null); do
    while read -r pid; do [[ -n $pid ]] && kill -9 "$pid" 2>/dev/null || true; done <"$procs"
  done
  stop_pid "$state/run/kube-apiserver.pid"
  stop_pid "$state/run/etcd.pid"
  # mounts under the state directory (kubelet volumes and its rshared root, container rootfs, netns), deepest first
  if [[ -d $state ]]; then
    local mnt
    for _ in 1 2 3; do
      mapfile -t mnts < <(awk -v s="$state" '$5 == s || index($5, s "/") == 1 {print $5}' /proc/self/mountinfo | sort -r)
      [[ ${#mnts[@]} -eq 0 ]] && break
      for mnt in "${mnts[@]}"; do umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true; done
    done
  fi
  # the kubelet's cgroups (one tree per v1 hierarchy, or under the v2 root), deepest first
  local dir
  for dir in $(find /sys/fs/cgroup -mindepth 1 -maxdepth 2 -type d -name 'kubepods*' 2>/dev/null); do
    find "$dir" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  # the controllers start moved to v1 hierarchies go back to v2. The kernel frees a v1 hierarchy only when it
  # is unmounted with no child cgroup left (a child still dying keeps it, unmounted and invisible): unmount,
  # wait for the controller to be on v2 again, else mount it once more, remove what is left, and retry
  if [[ -s "$state/run/v1-moved" ]]; then
    local ctrl attempt
    while read -r ctrl; do
      for attempt in 1 2 3; do
        if ! mountpoint -q "/sys/fs/cgroup/$ctrl"; then
          mkdir -p "/sys/fs/cgroup/$ctrl"
          mount -t cgroup -o "$ctrl" cgroup "/sys/fs/cgroup/$ctrl" 2>/dev/null || true
        fi
        find "/sys/fs/cgroup/$ctrl" -mindepth 1 -depth -type d -exec rmdir {} \; 2>/dev/null || true
        umount "/sys/fs/cgroup/$ctrl" 2>/dev/null || true
        rmdir "/sys/fs/cgroup/$ctrl" 2>/dev/null || true
        for _ in $(seq 50); do
          grep -qw "$ctrl" /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null && break 2
          sleep 0.1
        done
      done
      grep -qw "$ctrl" /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null \
        || log "the $ctrl controller did not go back to cgroup v2"
    done <"$state/run/v1-moved"
  fi
  # network: the bridge (veths went with their namespaces) and CNI's cache of results
  if ip link show "$bridge" >/dev/null 2>&1; then ip link del "$bridge" 2>/dev/null || true; fi
  rm -f /var/lib/cni/results/"$net_name"-* 2>/dev/null || true
  # what the kubelet and containerd wrote outside the state directory
  if [[ -s "$state/run/outside.before" ]]; then
    local d entry
    for d in /var/log/pods /var/log/containers /var/lib/cni/results /var/lib/cni /var/lib/kubelet /run/containerd/s /run/containerd; do
      if grep -qxF "$d" "$state/run/outside.before"; then
        rm -rf "$d"   # did not exist before start
      elif [[ -d $d ]]; then
        for entry in "$d"/* "$d"/.[!.]*; do
          [[ -e $entry || -L $entry ]] || continue
          grep -qxF "$entry" "$state/run/outside.before" || rm -rf "$entry"
        done
      fi
    done
  fi
  # the sysctls the kubelet changed
  if [[ -s "$state/run/sysctl.saved" ]]; then
    local line
    while read -r line; do sysctl -q -w "$line" >/dev/null 2>&1 || true; done <"$state/run/sysctl.saved"
  fi
  rm -rf "$state"
}

status() {
  local name up=0
  for name in "${daemons[@]}"; do
    if pid_alive "$state/run/$name.pid"; then echo "$name: running (pid $(cat "$state/run/$name.pid"))"; up=1
    else echo "$name: not running"; fi
  done
  [[ $up == 1 ]] || { echo "not running"; return 3; }
  kctl get nodes -o wide 2>/dev/null || true
  exports
}

case "${1:-}" in
  start) check_state_dir; start ;;
  stop) check_state_dir; stop ;;
  status) check_state_dir; status ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
