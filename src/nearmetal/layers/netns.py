"""Network namespaces joined by a veth pair: the path a pod's traffic takes through a CNI bridge.

The trial's server (role ``server``, or MPI rank 0) runs in one namespace and everything else (the measured
client, rank 1) in another; the two are joined by a veth pair with addresses from the benchmarking range
198.18.0.0/15 (RFC 2544), so the traffic crosses two network stacks and a virtual link instead of loopback.
``mtu`` and ``tc netem`` delay/jitter/loss on both ends make what-if studies ("what does 0.5 ms more round
trip cost MPI?"). Both namespaces are removed on every exit path, and their veths with them.
"""

from __future__ import annotations

import contextlib
from typing import Any, Literal

from pydantic import Field

from nearmetal.host import hostnet
from nearmetal.layers.base import Layer, LayerConfig, TrialContext, register_layer
from nearmetal.metrics import Metric
from nearmetal.workloads.base import ProcessSpec, Requirement

SERVER_ADDRESS = "198.18.0.1"
CLIENT_ADDRESS = "198.18.0.2"
PREFIX_LEN = 30


class NetnsConfig(LayerConfig):
    layer: Literal["netns"] = "netns"
    mtu: int | None = Field(None, ge=68, le=65535, description="MTU of the veth pair (default: 1500)")
    delay_ms: float = Field(
        0.0, ge=0, le=10_000, description="netem delay on packets leaving each end (round trip: twice this)"
    )
    jitter_ms: float = Field(0.0, ge=0, le=10_000, description="netem delay jitter")
    loss_pct: float = Field(0.0, ge=0, le=100, description="netem loss on packets leaving each end, in %")


def place(
    process: ProcessSpec, where: dict[str, list[str]], env: dict[str, str] | None = None
) -> ProcessSpec:
    """Prefix a process (or each MPI rank of a launcher) with the argv that enters its role's place;
    ``where`` maps a role to a prefix, ``"*"`` to the prefix of every other role."""
    if process.ranks:
        for rank in process.ranks:
            place(rank, where, env)
        return process
    prefix = where.get(process.role, where.get("*", []))
    process.argv = [*prefix, *process.argv]
    if env:
        process.env.update(env)
    return process


@register_layer
class NetnsLayer(Layer[NetnsConfig]):
    kind = "netns"
    family = "network"
    Config = NetnsConfig
    description = "server and client in two network namespaces joined by a veth pair (optional MTU, netem)"
    needs_root = True
    root_because = "it creates named network namespaces and veth pairs"
    rootless_alternative = (
        "a rootless platform has no veth into the host's network; its paths are the user-mode stacks: "
        "variants [{layer: rootless}, {layer: slirp4netns}] or [{layer: rootless}, {layer: pasta}]"
    )

    def __init__(self, config: NetnsConfig) -> None:
        super().__init__(config)
        self.namespaces: list[str] = []
        self.ifname = ""

    @classmethod
    def example_config(cls) -> dict[str, Any]:
        return {"layer": "netns", "mtu": 9000}

    def requires(self) -> list[Requirement]:
        reqs = [Requirement("ip", "iproute2", purpose="network namespaces and veth pairs")]
        if self.config.delay_ms or self.config.jitter_ms or self.config.loss_pct:
            reqs.append(Requirement("tc", "iproute2", purpose="netem delay and loss"))
        return reqs

    def setup(self, ctx: TrialContext) -> None:
        server_ns, client_ns = ctx.host_name(self.kind, "srv"), ctx.host_name(self.kind, "cli")
        for name in (server_ns, client_ns):
            hostnet.add_netns(name)
            self.namespaces.append(name)
        alias = ctx.host_name(self.kind, "veth")
        # the same short name at both ends (each lives in its own namespace), so a workload can name
        # "the path's interface" (UCX_NET_DEVICES) once for every rank
        self.ifname = hostnet.short_ifname(alias, "v")
        hostnet.add_veth_pair(self.ifname, server_ns, self.ifname, client_ns, alias, self.config.mtu)
        for ns, address in ((server_ns, SERVER_ADDRESS), (client_ns, CLIENT_ADDRESS)):
            hostnet.add_address(ns, self.ifname, f"{address}/{PREFIX_LEN}")
            hostnet.link_up(ns, self.ifname)
            if self.config.delay_ms or self.config.jitter_ms or self.config.loss_pct:
                hostnet.add_netem(
                    ns, self.ifname, self.config.delay_ms, self.config.jitter_ms, self.config.loss_pct
                )
        for ns in (server_ns, client_ns):
            hostnet.wait_until_up(ns, self.ifname)
        ctx.endpoints["server_host"] = SERVER_ADDRESS
        ctx.endpoints["iface"] = self.ifname
        ctx.placement["netns"] = {
            "server_netns": server_ns,
            "client_netns": client_ns,
            "veth": self.ifname,
            "server_address": SERVER_ADDRESS,
            "client_address": CLIENT_ADDRESS,
            **self.config.model_dump(exclude={"layer"}, exclude_defaults=True),
        }

    def wrap(self, process: ProcessSpec, ctx: TrialContext) -> ProcessSpec:
        server_ns, client_ns = self.namespaces
        return place(
            process,
            {"server": hostnet.netns_exec_argv(server_ns), "*": hostnet.netns_exec_argv(client_ns)},
        )

    def collect(self, ctx: TrialContext) -> list[Metric]:
        # evidence that the traffic took the path (and how much of it): the client end's counters
        with contextlib.suppress(hostnet.HostNetError, IndexError, KeyError, ValueError):
            ctx.placement["netns"]["client_link"] = hostnet.link_stats(self.namespaces[1], self.ifname)
        return []

    def teardown(self, ctx: TrialContext) -> None:
        for name in reversed(self.namespaces):
            hostnet.delete_netns(name)
        self.namespaces = [n for n in self.namespaces if hostnet.netns_exists(n)]
