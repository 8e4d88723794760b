#!/usr/bin/env bash
# Install nearmetal (in ./.venv) and the Debian programs its workloads and layers run.
#   bash scripts/install.sh          # what a user needs
#   bash scripts/install.sh --test   # plus what the test suite needs
set -euo pipefail
cd "$(dirname "$0")/.."

lists=(scripts/debian-packages.txt)
extras="all"
if [[ "${1:-}" == "--test" ]]; then
  lists+=(scripts/debian-packages-test.txt)
  extras="all,test"
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
# machines' disk, and PyPI gives the CUDA build of the same release on GPU hosts. NEARMETAL_TORCH=none
# skips it (those workloads are then refused with the reason); any other value is a pip requirement.
torch_spec="${NEARMETAL_TORCH:-torch==2.13.0}"
if [[ "$torch_spec" != none ]]; then
  echo "== $torch_spec"
  .venv/bin/python -m pip install -q "$torch_spec"
  extras="${extras},torch"
fi
.venv/bin/python -m pip install -q -e ".[${extras}]"
echo "== installed: $(.venv/bin/nearmetal --version 2>/dev/null || .venv/bin/python -c 'import nearmetal; print(nearmetal.__version__)')"
