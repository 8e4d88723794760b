#!/usr/bin/env bash
# Build kube-apiserver from Debian's `kubernetes` source package (1.20, vendored Go sources: builds offline),
# for the opt-in test of the Kubernetes backend against a real API server (tests/integration/test_kube_apiserver.py).
#   bash scripts/build-kube-apiserver.sh [OUT]     # default OUT: /var/cache/nearmetal/kube-apiserver
# Needs root (apt-get) and about 10 minutes on 2 cores. CI does not run it (time budget); the test finds the
# binary at OUT or at $NEARMETAL_TEST_KUBE_APISERVER, and etcd from Debian's etcd-server package.
set -euo pipefail
out="${1:-/var/cache/nearmetal/kube-apiserver}"
work="${NEARMETAL_KBUILD_DIR:-/var/cache/nearmetal/kbuild}"
mkdir -p "$work/lists/partial" "$(dirname "$out")"
# a private deb-src list: the machine's apt configuration is left as it is
cat >"$work/src.sources" <<SOURCES
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
apt_opts=(-o "Dir::Etc::SourceList=$work/src.sources" -o "Dir::Etc::SourceParts=/nonexistent"
  -o "Dir::State::Lists=$work/lists")
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends golang-go rsync jq etcd-server >/dev/null
apt-get "${apt_opts[@]}" update -qq
cd "$work"
if [[ ! -d src ]]; then
  apt-get "${apt_opts[@]}" source --download-only kubernetes
  dpkg-source -x kubernetes_*.dsc src
fi
cd src
# the layout debian/rules builds in (GOPATH mode, vendored modules)
mkdir -p .go/src/k8s.io
[[ -L .go/src/k8s.io/kubernetes ]] || ln -s ../../.. .go/src/k8s.io/kubernetes
export GOPATH="$PWD/.go" GOCACHE="$work/gocache" CGO_ENABLED=0 HOME="$work/home" PATH="/usr/lib/go/bin:$PATH"
mkdir -p "$HOME"
make WHAT=cmd/kube-apiserver
install -m 0755 _output/bin/kube-apiserver "$out"
"$out" --version
