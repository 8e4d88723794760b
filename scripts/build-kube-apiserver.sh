#!/usr/bin/env bash
# kube-apiserver alone, where an earlier set-up expects it: scripts/build-kubernetes.sh builds it with the rest
# of the node (Debian's kubernetes 1.20 source, cached in /var/cache/nearmetal/kubernetes); this copies it to OUT.
#   bash scripts/build-kube-apiserver.sh [OUT]     # default OUT: /var/cache/nearmetal/kube-apiserver
set -euo pipefail
out="${1:-/var/cache/nearmetal/kube-apiserver}"
cache="${NEARMETAL_KUBE_CACHE:-/var/cache/nearmetal/kubernetes}"
bash "$(dirname "$0")/build-kubernetes.sh"
mkdir -p "$(dirname "$out")"
install -m 0755 "$cache/bin/kube-apiserver" "$out"
"$out" --version
