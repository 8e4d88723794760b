"""The nodes of a multi-node Slurm job as the job sees them: each node's address (``scontrol show node``)
and the byte and packet counters of every interface on every node (one ``srun --overlap`` task per node,
``ip -j -s addr show``), read before and after the trial, so the trial records where its ranks ran and which
path their traffic took (the interface whose counters moved).

Read inside the job, on its first node (``exec_trial``); every failure is recorded as text, never raised:
the measurement itself does not depend on it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any

from nearmetal.errors import NearmetalError
from nearmetal.host import hostcmd

TIMEOUT_S = 30.0
COUNTERS = ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets")
LABEL_RE = re.compile(r"^\s*(\d+):\s?(.*)$")


class NodeInfoError(NearmetalError):
    """scontrol or srun could not say what the nodes are or what their interfaces carried."""


def hostnames(nodelist: str) -> list[str]:
    """``node[01-03],gpu7`` → its host names, as Slurm itself expands them (``scontrol show hostnames``);
    the list as given when ``scontrol`` cannot say."""
    if not nodelist or nodelist in ("(null)", "None"):
        return []
    try:
        proc = hostcmd.run(
            ["scontrol", "show", "hostnames", nodelist],
            20,
            error=NodeInfoError,
            install_fix="install the Slurm client (apt-get install -y slurm-client)",
        )
    except NodeInfoError:
        return [nodelist]
    names = proc.stdout.split()
    return names or [nodelist]


def job_nodes(env: Mapping[str, str] | None = None) -> list[str]:
    """The nodes of the Slurm job this runs in (its first node runs the trial)."""
    env = os.environ if env is None else env
    return hostnames(env.get("SLURM_JOB_NODELIST", ""))


def node_addresses(nodes: list[str]) -> dict[str, dict[str, str]]:
    """node → its ``NodeAddr``, ``NodeHostName`` and state as slurmctld knows them."""
    if not nodes:
        return {}
    proc = hostcmd.run(
        ["scontrol", "show", "node", "-o", ",".join(nodes)], TIMEOUT_S, check=True, error=NodeInfoError
    )
    out: dict[str, dict[str, str]] = {}
    for line in proc.stdout.splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        name = fields.get("NodeName")
        if name:
            out[name] = {
                "address": fields.get("NodeAddr", ""),
                "hostname": fields.get("NodeHostName", ""),
                "state": fields.get("State", ""),
            }
    return out


def parse_interfaces(text: str) -> dict[str, dict[str, Any]]:
    """``ip -j -s addr show`` → interface → its IPv4 addresses, MTU and counters (loopback left out)."""
    try:
        rows = json.loads(text or "[]")
    except json.JSONDecodeError:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        name = row.get("ifname", "")
        if not name or "LOOPBACK" in row.get("flags", []):
            continue
        stats = row.get("stats64") or row.get("stats") or {}
        rx, tx = stats.get("rx", {}), stats.get("tx", {})
        out[name] = {
            "addresses": [
                f"{a['local']}/{a.get('prefixlen', 32)}"
                for a in row.get("addr_info", [])
                if a.get("family") == "inet" and "local" in a
            ],
            "mtu": row.get("mtu"),
            "kind": (row.get("linkinfo") or {}).get("info_kind", ""),
            "rx_bytes": int(rx.get("bytes", 0)),
            "tx_bytes": int(tx.get("bytes", 0)),
            "rx_packets": int(rx.get("packets", 0)),
            "tx_packets": int(tx.get("packets", 0)),
        }
    return out


def interface_counters(nodes: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """node → interface → addresses and counters, read on every node at once by one ``srun --overlap`` step
    (task i runs on the i-th node of the list)."""
    if not nodes:
        return {}
    n = str(len(nodes))
    argv = [
        "srun", "--overlap", "--quiet", "--label", f"--nodelist={','.join(nodes)}", f"--nodes={n}",
        f"--ntasks={n}", "--ntasks-per-node=1", "--cpus-per-task=1", "--mem=0",
        "ip", "-d", "-j", "-s", "addr", "show",
    ]  # fmt: skip
    proc = hostcmd.run(argv, TIMEOUT_S, check=True, error=NodeInfoError)
    by_task: dict[int, str] = {}
    for line in proc.stdout.splitlines():
        match = LABEL_RE.match(line)
        if match:
            task = int(match.group(1))
            by_task[task] = by_task.get(task, "") + match.group(2)
    return {node: parse_interfaces(by_task.get(i, "")) for i, node in enumerate(nodes)}


def counter_deltas(
    before: Mapping[str, Mapping[str, Mapping[str, Any]]],
    after: Mapping[str, Mapping[str, Mapping[str, Any]]],
) -> dict[str, dict[str, dict[str, Any]]]:
    """node → interface → what the trial moved (after − before), with the interface's addresses and MTU."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for node, ifaces in after.items():
        for name, now in ifaces.items():
            then = before.get(node, {}).get(name)
            if then is None:
                continue
            delta = {key: int(now[key]) - int(then[key]) for key in COUNTERS}
            out.setdefault(node, {})[name] = {
                "addresses": now.get("addresses", []),
                "mtu": now.get("mtu"),
                "kind": now.get("kind", ""),
                **delta,
            }
    return out


def carried_by(deltas: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, str]:
    """node → the interface that moved the most bytes during the trial (the path its traffic took)."""
    out = {}
    for node, ifaces in deltas.items():
        if ifaces:
            name, moved = max(ifaces.items(), key=lambda kv: kv[1]["rx_bytes"] + kv[1]["tx_bytes"])
            if moved["rx_bytes"] + moved["tx_bytes"] > 0:
                out[node] = name
    return out


class NodeNetwork:
    """Before/after evidence of a multi-node job's network: ``start()`` before the trial, ``finish()``
    after it (a dict for ``placement["network"]``)."""

    def __init__(self, nodes: list[str]) -> None:
        self.nodes = nodes
        self.info: dict[str, Any] = {"nodes": {}}
        self.before: dict[str, dict[str, dict[str, Any]]] = {}

    @classmethod
    def of_job(cls, env: Mapping[str, str] | None = None) -> NodeNetwork | None:
        """For a job on more than one node (read inside it), else None."""
        env = os.environ if env is None else env
        if int(env.get("SLURM_JOB_NUM_NODES", "1") or 1) < 2:
            return None
        nodes = hostnames(env.get("SLURM_JOB_NODELIST", ""))
        return cls(nodes) if len(nodes) > 1 else None

    def start(self) -> None:
        try:
            for node, detail in node_addresses(self.nodes).items():
                self.info["nodes"][node] = dict(detail)
        except NearmetalError as exc:
            self.info["error"] = str(exc)
        try:
            self.before = interface_counters(self.nodes)
        except NearmetalError as exc:
            self.info["error"] = str(exc)

    def finish(self) -> dict[str, Any]:
        if self.before:
            try:
                after = interface_counters(self.nodes)
            except NearmetalError as exc:
                self.info["error"] = str(exc)
            else:
                deltas = counter_deltas(self.before, after)
                for node, ifaces in deltas.items():
                    self.info["nodes"].setdefault(node, {})["interfaces"] = ifaces
                self.info["carried_by"] = carried_by(deltas)
        return self.info
