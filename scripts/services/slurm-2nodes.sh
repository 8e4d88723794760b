#!/usr/bin/env bash
# The two-node Slurm cluster (scripts/services/slurm.sh start --nodes 2: node1 and node2, each in network, UTS
# and mount namespaces of its own, joined by a veth wire) beside the single-node one of slurm.sh: its own state
# directory, ports and partition, exported under names of its own so SLURM_CONF stays the single-node cluster's.
#   bash scripts/services/slurm-2nodes.sh start   # prints `export NEARMETAL_TEST_SLURM2_CONF=… …_PARTITION=…`
#   bash scripts/services/slurm-2nodes.sh stop
# NEARMETAL_SLURM2_DIR / _PORT / _PARTITION move it (defaults /var/lib/nearmetal-slurm2, 6837, twonodes).
set -euo pipefail
here="$(dirname "$0")"
export NEARMETAL_SLURM_DIR="${NEARMETAL_SLURM2_DIR:-/var/lib/nearmetal-slurm2}"
export NEARMETAL_SLURM_PORT="${NEARMETAL_SLURM2_PORT:-6837}"
export NEARMETAL_SLURM_PARTITION="${NEARMETAL_SLURM2_PARTITION:-twonodes}"
case "${1:-}" in
  start)
    bash "$here/slurm.sh" start --nodes 2 | sed \
      -e 's/^export SLURM_CONF=/export NEARMETAL_TEST_SLURM2_CONF=/' \
      -e 's/^export NEARMETAL_TEST_SLURM_PARTITION=/export NEARMETAL_TEST_SLURM2_PARTITION=/'
    ;;
  *) exec bash "$here/slurm.sh" "$@" ;;
esac
