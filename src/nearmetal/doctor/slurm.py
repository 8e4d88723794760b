"""The Slurm cluster trials go to (``SLURM_CONF``'s): a node that is down, drained or not responding takes a
multi-node job with it (it waits for ever, or ends NODE_FAIL), so doctor names it with Slurm's reason."""

from __future__ import annotations

import os
import shutil

from nearmetal.doctor.base import Finding, check
from nearmetal.errors import NearmetalError
from nearmetal.host import hostcmd

# sinfo's node states (%T, long form) that mean the node cannot run jobs; a "*" suffix: not responding
BAD_STATES = ("down", "drain", "fail", "unknown", "not_responding", "inval", "future", "reboot", "power")
SINFO_ARGV = ["sinfo", "-h", "-N", "-o", "%N|%T|%E"]
LESSON = (
    "seed 000: the job that ran on 1 and 2 nodes is only as good as its worst node; a bad node must be found "
    "before the numbers are read"
)


def parse_sinfo(text: str) -> list[tuple[str, str, str]]:
    """``sinfo -h -N -o '%N|%T|%E'`` → (node, state, reason), one per node (a node in two partitions once)."""
    seen: dict[str, tuple[str, str, str]] = {}
    for line in text.splitlines():
        parts = line.strip().split("|", 2)
        if len(parts) == 3 and parts[0]:
            seen.setdefault(parts[0], (parts[0], parts[1], parts[2]))
    return list(seen.values())


def node_is_bad(state: str) -> bool:
    state = state.lower()
    return state.endswith("*") or any(state.startswith(bad) for bad in BAD_STATES)


def findings_from_sinfo(text: str) -> list[Finding]:
    nodes = parse_sinfo(text)
    if not nodes:
        return []
    evidence = "; ".join(f"{n} {s}" + (f" ({r})" if r and r != "none" else "") for n, s, r in nodes)
    bad = [(n, s, r) for n, s, r in nodes if node_is_bad(s)]
    if not bad:
        return [
            Finding("slurm-nodes", "ok", f"all {len(nodes)} Slurm node(s) can run jobs", evidence=evidence)
        ]
    names = ", ".join(f"{n} ({s}{': ' + r if r and r != 'none' else ''})" for n, s, r in bad)
    return [
        Finding(
            "slurm-nodes",
            "warning",
            f"{len(bad)} of {len(nodes)} Slurm node(s) cannot run jobs: {names}",
            evidence=evidence,
            fix="see slurmd's log on the node; once it is healthy: scontrol update nodename="
            + ",".join(n for n, _, _ in bad)
            + " state=resume (scripts/services/slurm.sh: stop and start the cluster)",
            lesson=LESSON,
        )
    ]


@check(
    "slurm-nodes",
    inspects="sinfo -h -N -o '%N|%T|%E' (the cluster SLURM_CONF names)",
    explains=("failure", "variance"),
)
def check_slurm_nodes() -> list[Finding]:
    # only where a cluster is configured: without SLURM_CONF sinfo would look for one in DNS
    if shutil.which("sinfo") is None or not os.environ.get("SLURM_CONF"):
        return []
    try:
        proc = hostcmd.run(SINFO_ARGV, 15)
    except NearmetalError:
        return [Finding("slurm-nodes", "warning", "sinfo did not answer within 15 s (is slurmctld up?)")]
    if proc.returncode != 0:
        said = (proc.stderr or proc.stdout).strip().splitlines()
        return [
            Finding(
                "slurm-nodes",
                "warning",
                "Slurm's controller does not answer: " + (said[-1] if said else f"exit {proc.returncode}"),
                fix="start Slurm (bash scripts/services/slurm.sh start) or point SLURM_CONF at your cluster",
            )
        ]
    return findings_from_sinfo(proc.stdout)
