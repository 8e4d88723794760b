#!/usr/bin/env bash
# Install nearmetal (in ./.venv) and the Debian programs its workloads and layers run.
#   bash scripts/install.sh                # what a user needs: every local workload but the PyTorch ones
#   bash scripts/install.sh --with-torch   # plus PyTorch (train/ddp workloads, GPU paths of flops/particles)
#   bash scripts/install.sh --with kubernetes,parquet,pandas   # plus these extras of pyproject.toml
#                                          # (kubernetes: --backend kubernetes; parquet: export -f parquet;
#                                          #  pandas: Results.to_pandas; all: every extra)
#   bash scripts/install.sh --test         # everything the test suite needs (scripts/test.sh adds --with-torch)
# NEARMETAL_TORCH=SPEC installs that pip requirement as PyTorch (e.g. "torch==2.13.0" or a local wheel) and
# implies --with-torch; NEARMETAL_TORCH=none never installs it. A plan that needs torch without it is refused
# with the command that installs it.
set -euo pipefail
cd "$(dirname "$0")/.."

lists=(scripts/debian-packages.txt)
extras="default"
with_torch=0
usage="usage: bash scripts/install.sh [--test] [--with-torch] [--with EXTRA[,EXTRA…]]"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --test)
      lists+=(scripts/debian-packages-test.txt)
      extras="${extras},all,test"
      ;;
    --with-torch) with_torch=1 ;;
    --with)
      if [[ $# -lt 2 || ! "$2" =~ ^[a-z,]+$ ]]; then
        echo "$usage" >&2
        exit 2
      fi
      extras="${extras},$2"
      shift
      ;;
    *)
      echo "$usage" >&2
      exit 2
      ;;
  esac
  shift
done
if [[ -n "${NEARMETAL_TORCH:-}" ]]; then
  if [[ "$NEARMETAL_TORCH" == none ]]; then with_torch=0; else with_torch=1; fi
fi
mapfile -t packages < <(sed -e 's/#.*//' "${lists[@]}" | tr -s ' \t' '\n' | sed '/^$/d' | sort -u)

if [[ ${#packages[@]} -gt 0 ]]; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    echo "== apt-get install ${#packages[@]} packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
  else
    echo "note: not root (or no apt-get); install these Debian packages yourself: ${packages[*]}" >&2
  fi
fi

echo "== python environment in .venv"
if [[ ! -x .venv/bin/python ]]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# PyTorch for the train/ddp workloads and the GPU paths, pinned: its CPU build lies on the development
# machines' disk, and PyPI gives the CUDA build of the same release on GPU hosts. Not by default: it is
# most of the install's size and the main studies (cpu-quota, fs-layers, net-paths …) do not use it.
if [[ "$with_torch" == 1 ]]; then
  torch_spec="${NEARMETAL_TORCH:-torch==2.13.0}"
  echo "== $torch_spec"
  .venv/bin/python -m pip install -q "$torch_spec"
  extras="${extras},torch"
fi
.venv/bin/python -m pip install -q -e ".[${extras}]"
echo "== installed: $(.venv/bin/nearmetal --version 2>/dev/null || .venv/bin/python -c 'import nearmetal; print(nearmetal.__version__)')"
if [[ "$with_torch" == 0 ]]; then
  echo "   without PyTorch (the train/ddp workloads need it): bash scripts/install.sh --with-torch"
fi
