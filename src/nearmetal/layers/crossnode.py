"""Paths between the nodes of a multi-node Slurm job: what a trial's ranks (or a server and its client) cross
to reach the other node.

``wire``
    the nodes' own link (``iface``, ``wire0`` on ``scripts/services/slurm.sh start --nodes 2``): the bare-metal
    network of the cluster. MPI is pointed at it (``UCX_NET_DEVICES``, ``OMPI_MCA_btl_tcp_if_include``), so
    Slurm's own traffic on the management network stays apart.
``vxlan``
    a VXLAN device on every node over that link (one static forwarding entry per other node, no learning),
    with overlay addresses 198.19.251.N/24 and an MTU 50 bytes below the link's: the path flannel's VXLAN
    backend gives pods on different nodes (Kubernetes, Usernetes). The MTU is recorded.

Both place a process of role ``server`` on the job's last node (``srun --overlap -w NODE``) and everything
else on the first, where the trial itself runs, and set ``endpoints["server_host"]`` to the last node's
address on the path; MPI launched by ``srun`` spreads its ranks over the nodes by itself. ``delay_ms`` and
``rate_mbit`` add a ``tc netem`` qdisc on the path's device on every node to emulate a real link; a trial
with them carries a caveat saying so.

Host objects on the nodes are made by one ``srun --overlap`` step (a task per node running
``python -m nearmetal.layers.crossnode FILE``: that node's list of ``ip``/``tc`` argvs, written to the trial
directory) and removed the same way; every device is named ``nm<digest><role>`` with the trial's host name
in its alias, so ``nearmetal cleanup`` finds what a killed job left (``find_node_links``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import Field

from nearmetal.errors import NearmetalError
from nearmetal.host import hostcmd, hostnet
from nearmetal.host.leftovers import Leftover, finder, host_prefix, is_service_object
from nearmetal.host.slurmnodes import job_nodes
from nearmetal.layers.base import Layer, LayerConfig, TrialContext, register_layer
from nearmetal.metrics import Metric
from nearmetal.workloads.base import ProcessSpec, Requirement

OVERLAY_NET = "198.19.251"
VXLAN_OVERHEAD = 50
STEP_TIMEOUT_S = 60.0
# the network namespaces of scripts/services/slurm.sh's nodes (nearmetal-slurm<port>-node<N>)
CLUSTER_NETNS_RE = re.compile(r"^nearmetal-slurm\d+-node\d+$")


class CrossNodeError(NearmetalError):
    """A cross-node path could not be made (not a multi-node job, no such link on a node)."""


class CrossNodeConfig(LayerConfig):
    iface: str = Field(
        "wire0",
        pattern=r"^[A-Za-z0-9_.-]{1,15}$",
        description="the link between the nodes (scripts/services/slurm.sh's nodes: wire0)",
    )
    delay_ms: float = Field(0.0, ge=0, le=10_000, description="netem delay on the path on every node")
    rate_mbit: float | None = Field(None, gt=0, le=1_000_000, description="netem rate limit, Mbit/s")


class WireConfig(CrossNodeConfig):
    layer: Literal["wire"] = "wire"


class VxlanConfig(CrossNodeConfig):
    layer: Literal["vxlan"] = "vxlan"
    mtu: int | None = Field(None, ge=576, le=65485, description="overlay MTU (default: the link's − 50)")
    vni: int | None = Field(
        None,
        ge=1,
        le=16_777_215,
        description="VXLAN network identifier (default: one derived from the trial's name, so trials and a "
        "killed trial's leftover devices on the same nodes never share one)",
    )
    port: int = Field(8472, ge=1, le=65535, description="VXLAN UDP port (flannel's default is 8472)")


def run_on_nodes(nodes: list[str], commands: list[list[list[str]]], trial_dir: Path, tag: str) -> None:
    """Run ``commands[i]`` (a list of argvs) on node i, all nodes at once (one srun step)."""
    plan = trial_dir / f"crossnode-{tag}.json"
    plan.write_text(json.dumps(commands))
    argv = [
        "srun", "--overlap", "--quiet", f"--nodelist={','.join(nodes)}", f"--nodes={len(nodes)}",
        f"--ntasks={len(nodes)}", "--ntasks-per-node=1", "--cpus-per-task=1", "--mem=0",
        sys.executable, "-m", "nearmetal.layers.crossnode", str(plan),
    ]  # fmt: skip
    proc = hostcmd.run(argv, STEP_TIMEOUT_S, error=CrossNodeError)
    if proc.returncode != 0:
        said = (proc.stderr or proc.stdout).strip().splitlines()
        if any("qdisc kind is unknown" in line for line in said):
            raise CrossNodeError(
                "the nodes' kernel has no netem qdisc (sch_netem), so delay_ms/rate_mbit cannot be applied",
                fix="modprobe sch_netem on the nodes, or drop delay_ms and rate_mbit from the layer",
            )
        raise CrossNodeError(f"setting up the path on the nodes failed: {' / '.join(said[-3:])}")


CrossNodeConfigT = TypeVar("CrossNodeConfigT", bound=CrossNodeConfig)


class CrossNodeLayer(Layer[CrossNodeConfigT]):
    """What ``wire`` and ``vxlan`` share: the job's nodes, their addresses on the path, placement, netem."""

    family = "node-path"

    needs_root = True
    root_because = "it changes links and qdiscs in the nodes' network namespaces"
    backends: ClassVar[tuple[str, ...] | None] = ("slurm",)

    def __init__(self, config: CrossNodeConfigT) -> None:
        super().__init__(config)
        self.nodes: list[str] = []
        self.path_iface = ""
        self.addresses: dict[str, str] = {}
        self.teardown_commands: list[list[list[str]]] = []
        self.counters_before: dict[str, dict[str, dict[str, Any]]] = {}

    def requires(self) -> list[Requirement]:
        return [
            Requirement("srun", "slurm-client", purpose="steps on every node of the job"),
            Requirement("ip", "iproute2", purpose="the path's links"),
        ]

    def link_addresses(self) -> dict[str, dict[str, Any]]:
        """node → the link ``iface`` as that node sees it (addresses, MTU)."""
        from nearmetal.host.slurmnodes import NodeInfoError, interface_counters

        try:
            seen = interface_counters(self.nodes)
        except NodeInfoError as exc:
            raise CrossNodeError(f"cannot read the nodes' links: {exc}") from None
        out = {}
        for node in self.nodes:
            link = seen.get(node, {}).get(self.config.iface)
            if not link or not link.get("addresses"):
                raise CrossNodeError(
                    f"node {node} has no link {self.config.iface!r} with an IPv4 address",
                    fix="name the nodes' link with `iface:` (scripts/services/slurm.sh start --nodes 2 makes wire0)",
                )
            out[node] = link
        return out

    def make_path(self, ctx: TrialContext, links: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Create the path's devices; returns what the placement records. Sets self.path_iface/addresses."""
        raise NotImplementedError

    def netem_commands(self, device: str) -> list[list[str]]:
        if not (self.config.delay_ms or self.config.rate_mbit):
            return []
        argv = ["tc", "qdisc", "replace", "dev", device, "root", "netem"]
        if self.config.delay_ms:
            argv += ["delay", f"{self.config.delay_ms:g}ms"]
        if self.config.rate_mbit:
            argv += ["rate", f"{self.config.rate_mbit:g}mbit"]
        return [argv]

    def setup(self, ctx: TrialContext) -> None:
        self.nodes = job_nodes()
        if len(self.nodes) < 2:
            raise CrossNodeError(
                f"the {self.kind} layer needs a Slurm job on two or more nodes (this one has "
                f"{len(self.nodes) or 'no'} node{'s' if len(self.nodes) != 1 else ''})",
                fix="give the workload `resources: {nodes: 2}` and run with --backend slurm",
            )
        links = self.link_addresses()
        info = self.make_path(ctx, links)
        server_node = self.nodes[-1]
        ctx.endpoints["iface"] = self.path_iface
        ctx.endpoints["server_host"] = self.addresses[server_node]
        netem = {}
        if self.config.delay_ms or self.config.rate_mbit:
            netem = {"delay_ms": self.config.delay_ms, "rate_mbit": self.config.rate_mbit}
            ctx.caveats.append(
                f"{self.kind}: tc netem on the path ({self.describe()}) emulates a slower link; the numbers "
                "are those of the emulation, not of a real network"
            )
        ctx.placement["path"] = {
            "layer": self.kind,
            "iface": self.path_iface,
            "underlay": self.config.iface,
            "nodes": self.nodes,
            "addresses": dict(self.addresses),
            "server_node": server_node,
            **info,
            **({"netem": netem} if netem else {}),
        }

        self.counters_before = self.read_counters()

    def read_counters(self) -> dict[str, dict[str, dict[str, Any]]]:
        """node → {path device, link} → counters (an empty dict when they cannot be read)."""
        from nearmetal.host.slurmnodes import NodeInfoError, interface_counters

        try:
            seen = interface_counters(self.nodes)
        except NodeInfoError:
            return {}
        keep = {self.path_iface, self.config.iface}
        return {node: {k: v for k, v in ifaces.items() if k in keep} for node, ifaces in seen.items()}

    def collect(self, ctx: TrialContext) -> list[Metric]:
        # what crossed the path's device (and the link under it) on every node during the trial: the
        # evidence that the traffic took this path; read before teardown removes an overlay's device
        from nearmetal.host.slurmnodes import counter_deltas

        if self.counters_before and "path" in ctx.placement:
            after = self.read_counters()
            if after:
                ctx.placement["path"]["counters"] = counter_deltas(self.counters_before, after)
        return []

    def wrap(self, process: ProcessSpec, ctx: TrialContext) -> ProcessSpec:
        # MPI over the path only (Open MPI's TCP BTL, UCX under MPICH); Slurm's traffic stays on its network
        process.env.setdefault("UCX_NET_DEVICES", self.path_iface)
        process.env["OMPI_MCA_btl_tcp_if_include"] = self.path_iface
        if process.role == "server" and not process.ranks:
            prefix = [
                "srun", "--overlap", "--quiet", "--unbuffered", f"--nodelist={self.nodes[-1]}", "--nodes=1",
                "--ntasks=1", "--cpus-per-task=1", "--mem=0",
            ]  # fmt: skip
            process.argv = [*prefix, *process.argv]
        return process

    def teardown(self, ctx: TrialContext) -> None:
        if self.teardown_commands and self.nodes:
            try:
                run_on_nodes(self.nodes, self.teardown_commands, ctx.trial_dir, "down")
            except NearmetalError:
                # a cancelled job starts no more steps (scancel, the time limit): undo this node's part here;
                # the other nodes' devices carry the trial's name for `nearmetal cleanup RUN`
                here = os.uname().nodename
                index = self.nodes.index(here) if here in self.nodes else 0
                for argv in self.teardown_commands[index]:
                    with contextlib.suppress(NearmetalError):
                        hostcmd.run(argv, 20)
            self.teardown_commands = []


@register_layer
class WireLayer(CrossNodeLayer[WireConfig]):
    kind = "wire"
    Config = WireConfig
    description = "the link between a multi-node Slurm job's nodes (bare-metal network), optional netem"

    def make_path(self, ctx: TrialContext, links: dict[str, dict[str, Any]]) -> dict[str, Any]:
        self.path_iface = self.config.iface
        self.addresses = {node: link["addresses"][0].split("/")[0] for node, link in links.items()}
        netem = self.netem_commands(self.path_iface)
        if netem:
            self.teardown_commands = [
                [["tc", "qdisc", "del", "dev", self.path_iface, "root"]] for _ in self.nodes
            ]
            run_on_nodes(self.nodes, [netem for _ in self.nodes], ctx.trial_dir, "up")
        return {"mtu": links[self.nodes[0]].get("mtu")}


@register_layer
class VxlanLayer(CrossNodeLayer[VxlanConfig]):
    kind = "vxlan"
    Config = VxlanConfig
    description = "a VXLAN overlay between a multi-node Slurm job's nodes over their link (flannel's backend)"

    def requires(self) -> list[Requirement]:
        return [*super().requires(), Requirement("bridge", "iproute2", purpose="VXLAN forwarding entries")]

    def make_path(self, ctx: TrialContext, links: dict[str, dict[str, Any]]) -> dict[str, Any]:
        config = self.config
        alias = ctx.host_name(self.kind)
        self.path_iface = hostnet.short_ifname(alias, "x")
        vni = config.vni or int(hashlib.sha256(alias.encode()).hexdigest()[:6], 16) % 16_777_215 + 1
        underlay = {node: link["addresses"][0].split("/")[0] for node, link in links.items()}
        link_mtu = min(int(link.get("mtu") or 1500) for link in links.values())
        mtu = config.mtu or link_mtu - VXLAN_OVERHEAD
        self.addresses = {node: f"{OVERLAY_NET}.{i + 1}" for i, node in enumerate(self.nodes)}
        commands: list[list[list[str]]] = []
        for node in self.nodes:
            dev = self.path_iface
            argvs = [
                ["ip", "link", "add", dev, "type", "vxlan", "id", str(vni), "dstport", str(config.port),
                 "local", underlay[node], "dev", config.iface, "nolearning"],
                ["ip", "link", "set", dev, "alias", alias, "mtu", str(mtu)],
            ]  # fmt: skip
            for other in self.nodes:
                if other != node:
                    argvs.append(
                        ["bridge", "fdb", "append", "00:00:00:00:00:00", "dev", dev, "dst", underlay[other]]
                    )
            argvs += [
                ["ip", "addr", "add", f"{self.addresses[node]}/24", "dev", dev],
                ["ip", "link", "set", dev, "up"],
                *self.netem_commands(dev),
            ]
            commands.append(argvs)
        # recorded before the devices exist: a set-up that fails half-way still removes what it made
        self.teardown_commands = [[["ip", "link", "delete", self.path_iface]] for _ in self.nodes]
        run_on_nodes(self.nodes, commands, ctx.trial_dir, "up")
        return {"mtu": mtu, "underlay_mtu": link_mtu, "vni": vni, "udp_port": config.port,
                "underlay_addresses": underlay}  # fmt: skip


@finder
def find_node_links(run_id: str | None = None) -> list[Leftover]:
    """``cleanup`` finder: links a cross-node layer made inside the nodes of scripts/services/slurm.sh's
    cluster (network namespaces ``nearmetal-slurm<port>-node<N>``) whose alias names a run."""
    prefix = host_prefix(run_id)
    found = []
    for ns in hostnet.list_netns("nearmetal-slurm"):
        if not CLUSTER_NETNS_RE.match(ns):
            continue
        for link in hostnet.list_links(ns):
            if link.alias.startswith(prefix) and not is_service_object(link.alias):

                def remove(ns: str = ns, ifname: str = link.ifname) -> None:
                    hostnet.delete_link(ns, ifname)

                found.append(Leftover("link", f"{link.ifname} ({link.alias}) in {ns}", remove, priority=60))
    return found


def _main(argv: list[str]) -> int:
    """A task of the set-up step: run this node's argvs (``SLURM_NODEID`` picks the list)."""
    commands = json.loads(Path(argv[0]).read_text())
    index = int(os.environ.get("SLURM_NODEID", "0"))
    failed = 0
    for command in commands[index]:
        try:
            proc = hostcmd.run(command, 30)
        except NearmetalError as exc:  # missing, or it hung
            failed += 1
            print(f"{os.uname().nodename}: {' '.join(command)}: {exc}", file=sys.stderr)
            continue
        if proc.returncode != 0:
            failed += 1
            print(f"{os.uname().nodename}: {' '.join(command)}: {proc.stderr.strip()}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
