#!/usr/bin/env bash
# Build a single-node Kubernetes (kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kubectl) from
# Debian bookworm's `kubernetes` source package (1.20, vendored Go sources: builds offline, no registry needed),
# plus the pause image from the same sources (build/pause), for scripts/services/kubernetes.sh.
#   bash scripts/build-kubernetes.sh            # builds once into $NEARMETAL_KUBE_CACHE (default /var/cache/nearmetal/kubernetes)
#   bash scripts/build-kubernetes.sh --check    # exit 0 when everything is built, 1 (and what is missing) otherwise
# Cached: a second call returns at once. The source tree, its Go build cache (src/_output/local/go/cache, where
# the Kubernetes build scripts put it) and the build log (build.log) stay under $NEARMETAL_KBUILD_DIR (default
# /var/cache/nearmetal/kbuild). Needs root (apt-get) and, measured on 2 shared cores, 673 s the first time
# (golang-go installed and the source fetched included; see the README's Kubernetes section). The compilers
# run under `nice -n 15`.
set -euo pipefail
cache="${NEARMETAL_KUBE_CACHE:-/var/cache/nearmetal/kubernetes}"
work="${NEARMETAL_KBUILD_DIR:-/var/cache/nearmetal/kbuild}"
components=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)

log() { echo "build-kubernetes.sh: $*" >&2; }

built() {
  local c missing=()
  for c in "${components[@]}"; do [[ -x "$cache/bin/$c" ]] || missing+=("bin/$c"); done
  [[ -s "$cache/images/pause.tar" ]] || missing+=("images/pause.tar")
  if [[ ${#missing[@]} -gt 0 ]]; then
    [[ "${1:-}" == quiet ]] || log "not built in $cache: ${missing[*]}"
    return 1
  fi
}

if [[ "${1:-}" == --check ]]; then
  built
  exit $?
fi
if built quiet; then
  log "already built in $cache"
  exit 0
fi
if [[ "$(id -u)" != 0 ]]; then
  log "needs root (apt-get install of the build dependencies)"
  exit 1
fi
start_s=$(date +%s)
mkdir -p "$work/lists/partial" "$cache/bin" "$cache/images"
exec > >(tee -a "$work/build.log") 2>&1
log "start $(date -u +%FT%TZ), $(nproc) CPUs, load: $(cut -d' ' -f1-3 /proc/loadavg)"
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
# the build's own dependencies (the running cluster's are in scripts/debian-packages-test.txt)
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  golang-go rsync jq make gcc libc6-dev dpkg-dev >/dev/null
cd "$work"
if [[ ! -d src ]]; then
  apt-get "${apt_opts[@]}" update -qq
  apt-get "${apt_opts[@]}" source --download-only kubernetes
  dpkg-source -x kubernetes_*.dsc src.tmp
  mv src.tmp src
fi
cd src
# the layout debian/rules builds in (GOPATH mode, vendored modules)
mkdir -p .go/src/k8s.io
[[ -L .go/src/k8s.io/kubernetes ]] || ln -s ../../.. .go/src/k8s.io/kubernetes
# (hack/lib/golang.sh sets GOPATH and GOCACHE under _output itself; CGO off: static binaries, no C toolchain)
export GOPATH="$PWD/.go" CGO_ENABLED=0 HOME="$work/home" PATH="/usr/lib/go/bin:$PATH"
mkdir -p "$HOME"
# the pause image: build/pause/linux/pause.c, static, in an image of its own (no registry: k8s.gcr.io/pause is
# what the kubelet and containerd would pull otherwise)
pause_src=build/pause/linux/pause.c
[[ -f $pause_src ]] || pause_src=build/pause/pause.c
pause_ver=$(sed -n 's/^TAG[ ?:]*= *//p' build/pause/Makefile | head -1)
pause_ver=${pause_ver:-3.4.1}
mkdir -p "$work/pause"
if [[ ! -s "$cache/images/pause.tar" ]]; then
  nice -n 15 gcc -Os -Wall -Werror -static -DVERSION="v$pause_ver-nearmetal" -o "$work/pause/pause" "$pause_src"
  strip "$work/pause/pause"
  # a `docker save` archive of one layer holding /pause (what `ctr images import` reads), written here: no
  # image builder, no container storage touched
  ref="localhost/nearmetal/pause:$pause_ver"
  img="$work/pause/image"
  rm -rf "$img" && mkdir -p "$img/rootfs"
  install -m 0755 "$work/pause/pause" "$img/rootfs/pause"
  tar --numeric-owner --owner=0 --group=0 --mtime=@0 -C "$img/rootfs" -cf "$img/layer.tar" pause
  diff_id=$(sha256sum "$img/layer.tar" | cut -d' ' -f1)
  mkdir "$img/$diff_id" && mv "$img/layer.tar" "$img/$diff_id/layer.tar"
  printf '{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/pause"],"User":"65535:65535"},%s}' \
    "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"sha256:$diff_id\"]}" >"$img/config.json"
  config_id=$(sha256sum "$img/config.json" | cut -d' ' -f1)
  mv "$img/config.json" "$img/$config_id.json"
  printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]' "$config_id" "$ref" "$diff_id" \
    >"$img/manifest.json"
  tar -C "$img" -cf "$cache/images/pause.tar.tmp" manifest.json "$config_id.json" "$diff_id"
  mv "$cache/images/pause.tar.tmp" "$cache/images/pause.tar"
  rm -rf "$img"
  echo "$ref" >"$cache/images/pause.ref"
fi

missing=()
for c in "${components[@]}"; do [[ -x "$cache/bin/$c" ]] || missing+=("$c"); done
if [[ ${#missing[@]} -gt 0 ]]; then
  whats=""
  for c in "${components[@]}"; do whats+="cmd/$c "; done
  nice -n 15 make WHAT="${whats% }"
  for c in "${components[@]}"; do install -m 0755 "_output/bin/$c" "$cache/bin/$c"; done
fi
"$cache/bin/kubelet" --version
"$cache/bin/kube-apiserver" --version >"$cache/VERSION"
log "done in $(($(date +%s) - start_s)) s, load: $(cut -d' ' -f1-3 /proc/loadavg)"
