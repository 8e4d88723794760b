"""Slurm's client commands (sbatch, squeue, scontrol, scancel, sacct) as the Slurm backend runs them, and
what they print, parsed: per-node counts, host lists, ``scontrol -o`` records, times and time limits; where
a job runs, from the variables Slurm gives it."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from typing import Any

from nearmetal.errors import NearmetalError
from nearmetal.host import hostcmd
from nearmetal.host.slurmnodes import hostnames

COMMAND_TIMEOUT_S = 60.0


class SlurmError(NearmetalError):
    """Slurm refused or lost something; the message carries its words."""


def _run(argv: Sequence[str], timeout: float = COMMAND_TIMEOUT_S) -> hostcmd.Completed[str]:
    """A Slurm client command (its exit status is the caller's to read)."""
    return hostcmd.run(
        argv,
        timeout,
        error=SlurmError,
        install_fix="install the Slurm client (apt-get install -y slurm-client)",
        timeout_fix="check that slurmctld is up (scontrol ping)",
    )


def expand_counts(value: str) -> list[int]:
    """Slurm's compressed per-node counts, ``2(x3),1`` → ``[2, 2, 2, 1]``."""
    out: list[int] = []
    for part in filter(None, (value or "").split(",")):
        match = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
        if not match:
            continue
        out += [int(match.group(1))] * int(match.group(2) or 1)
    return out


def placement_from_env(env: dict[str, str] | None = None) -> dict[str, Any]:
    """Where a job runs, from the variables Slurm gives it (read inside the job, on the node)."""
    env = dict(os.environ if env is None else env)
    if "SLURM_JOB_ID" not in env:
        return {}
    nodes = hostnames(env.get("SLURM_JOB_NODELIST", ""))
    cpus = expand_counts(env.get("SLURM_JOB_CPUS_PER_NODE", ""))
    tasks = expand_counts(env.get("SLURM_TASKS_PER_NODE", ""))
    placement: dict[str, Any] = {
        "backend": "slurm",
        "host": env.get("SLURMD_NODENAME") or (nodes[0] if nodes else ""),
        "nodes": nodes,
        "cpus_per_node": cpus,
        "tasks_per_node": tasks,
    }
    gpus = env.get("SLURM_GPUS_ON_NODE")
    if gpus is not None:
        placement["gpus_per_node"] = [int(gpus)] * max(1, len(nodes)) if gpus.isdigit() else gpus
    for var, key in (("SLURM_JOB_GPUS", "gpu_ids"), ("CUDA_VISIBLE_DEVICES", "cuda_visible_devices")):
        if env.get(var):
            placement[key] = env[var]
    placement["slurm"] = {
        "job_id": env.get("SLURM_JOB_ID"),
        "array_job_id": env.get("SLURM_ARRAY_JOB_ID"),
        "array_task_id": env.get("SLURM_ARRAY_TASK_ID"),
        "partition": env.get("SLURM_JOB_PARTITION"),
        "nodelist": env.get("SLURM_JOB_NODELIST"),
        "cluster": env.get("SLURM_CLUSTER_NAME"),
    }
    placement["slurm"] = {k: v for k, v in placement["slurm"].items() if v is not None}
    return placement


def parse_scontrol(text: str) -> dict[str, str]:
    """``scontrol show job -o`` → its Key=Value pairs (values may hold spaces only in known keys)."""
    out: dict[str, str] = {}
    for match in re.finditer(r"(\S+?)=(.*?)(?=\s+\S+?=|\s*$)", text.strip()):
        out.setdefault(match.group(1), match.group(2))
    return out


def _timestamp(value: str | None) -> float | None:
    if not value or value in ("Unknown", "None", "N/A"):
        return None
    try:
        return time.mktime(time.strptime(value, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


def _minutes_of(limit: str) -> float | None:
    """Slurm time (``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``, ``UNLIMITED``) → minutes."""
    if not limit or limit.upper() in ("UNLIMITED", "INFINITE", "NONE"):
        return None
    days = 0
    if "-" in limit:
        d, _, limit = limit.partition("-")
        days = int(d)
        parts = [int(p) for p in limit.split(":")]
        parts += [0] * (3 - len(parts))
        h, m, s = parts
    else:
        parts = [int(p) for p in limit.split(":")]
        if len(parts) == 1:
            h, m, s = 0, parts[0], 0
        elif len(parts) == 2:
            h, m, s = 0, parts[0], parts[1]
        else:
            h, m, s = parts
    return days * 1440 + h * 60 + m + s / 60
