"""User-mode networking: a namespace that reaches the world only through slirp4netns or pasta.

This is the path of rootless containers and Usernetes Gen 1 (seed 000's "slirpy"): the namespace has a TAP
device whose frames a user-space TCP/IP stack turns back into host sockets. Two topologies:

``outbound`` (TCP workloads; the default unless the trial runs MPI ranks)
    the server listens on the host's loopback; the client runs in a namespace behind the user-mode stack
    and reaches it at the stack's gateway address (10.0.2.2), which the stack maps to the host's
    127.0.0.1. Every byte the client sends crosses the user-mode stack once.

``inbound`` (TCP workloads; a published port)
    the server runs in the namespace; the stack forwards a port on the host's 127.0.0.1 to it (slirp4netns's
    ``add_hostfwd``, ``pasta -t``), and the client on the host connects there (``endpoints["server_port"]``):
    the path of ``podman run -p`` / a rootless container's published port. pasta splices loopback-to-loopback
    forwarded connections at the socket level (no TAP), slirp4netns carries them through its stack.

``two-nodes`` (MPI; what Usernetes does between nodes)
    server and client each get their own namespace behind their own user-mode stack, and a VXLAN overlay
    (addresses 198.19.0.1/.2) joins them: each VXLAN device sends its UDP to the gateway at a host port
    the *other* stack forwards (``add_hostfwd`` / ``pasta -u``) into its namespace — flannel's VXLAN over
    slirp4netns/pasta in Usernetes. Both directions work with symmetric addresses, which MPI needs
    (every rank publishes an address the other connects to; a NAT'd one-way path cannot carry that).

Nothing listens on any address but 127.0.0.1 on the host; the stacks, their sockets and the namespaces are
removed on every exit path.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import Field

from nearmetal.errors import NearmetalError
from nearmetal.host import hostcmd, hostnet
from nearmetal.host.ports import free_tcp_port, free_udp_port
from nearmetal.layers.base import Layer, LayerConfig, TrialContext, register_layer
from nearmetal.layers.netns import place
from nearmetal.metrics import Metric
from nearmetal.workloads.base import ProcessSpec, Requirement

GUEST_ADDRESS = "10.0.2.100"
GATEWAY_ADDRESS = "10.0.2.2"  # the user-mode stack's own address; it maps connections to host loopback
OVERLAY_SERVER = "198.19.0.1"
OVERLAY_CLIENT = "198.19.0.2"
VXLAN_PORT = 4789
VXLAN_VNI = 4242
VXLAN_OVERHEAD = 50
START_TIMEOUT_S = 15.0

Topology = Literal["auto", "outbound", "inbound", "two-nodes"]


def stack_version(package: str) -> str | None:
    """The installed package's version (``pasta --version`` of Debian's passt says "unknown version")."""
    try:
        proc = hostcmd.run(["dpkg-query", "-W", "-f=${Version}", package], 10)
    except NearmetalError:
        return None
    return (proc.stdout.strip() or None) if proc.returncode == 0 else None


def slirp4netns_api(path: Path, request: dict[str, Any]) -> dict[str, Any]:
    """One request to a slirp4netns API socket (``add_hostfwd`` …); its reply, or HostNetError."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(json.dumps(request).encode())
        s.shutdown(socket.SHUT_WR)
        reply: dict[str, Any] = json.loads(s.recv(65536) or b"{}")
    if "error" in reply or "return" not in reply:
        raise hostnet.HostNetError(f"slirp4netns API {request['execute']} failed: {reply}")
    return reply


def start_slirp4netns(
    netns: str,
    ifname: str,
    mtu: int,
    api_socket: Path,
    log: Path,
    forwards: list[tuple[str, str, int, int]],
    pids: list[int],
) -> None:
    """Start slirp4netns for the named namespace (its TAP ``ifname`` configured 10.0.2.100/24) in this
    process's network namespace, and forward each (proto, host address, host port, guest port) into it.
    The stack's pid is appended to ``pids`` as soon as it exists, so a caller stops it on every exit path."""
    argv = [
        "slirp4netns", "--configure", f"--mtu={mtu}", "--api-socket", str(api_socket),
        "--netns-type=path", str(hostnet.NETNS_DIR / netns), ifname,
    ]  # fmt: skip
    with open(log, "wb") as out:
        # a missing slirp4netns: the OSError itself (python -m nearmetal.layers.crossusernet exits 127)
        proc = hostcmd.start(argv, stdout=out, stderr=out, new_session=True, error=None)
    pids.append(proc.pid)
    try:
        hostnet.wait_for_address(netns, ifname, START_TIMEOUT_S)
    except hostnet.HostNetError as exc:
        raise hostnet.HostNetError(f"slirp4netns did not configure {ifname}: {exc}; see {log}") from None
    deadline = time.monotonic() + START_TIMEOUT_S
    while not api_socket.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    for proto, host_addr, host_port, guest_port in forwards:
        slirp4netns_api(
            api_socket,
            {
                "execute": "add_hostfwd",
                "arguments": {
                    "proto": proto,
                    "host_addr": host_addr,
                    "host_port": host_port,
                    "guest_port": guest_port,
                },
            },
        )


class UserNetConfig(LayerConfig):
    mtu: int = Field(65520, ge=1280, le=65520, description="MTU of the namespace's TAP device")
    topology: Topology = Field(
        "auto",
        description="outbound: server on host loopback, client behind the stack; inbound: server behind the "
        "stack on a forwarded port, client on the host; two-nodes: each end behind its own stack, joined by "
        "VXLAN over forwarded UDP (MPI); auto: two-nodes for MPI ranks, else outbound",
    )
    tcp_wmem_max: int | None = Field(
        None,
        ge=16384,
        le=1 << 30,
        description="cap the namespace's TCP send buffer (net.ipv4.tcp_wmem max, bytes; the kernel's default is "
        "4 MiB): bounds the data a sender inside has in flight through the stack. pasta 2023-03 loses segments "
        "of multi-MB bursts from the namespace and stalls on retransmission timeouts; 262144 avoids that",
    )


class Slirp4netnsConfig(UserNetConfig):
    layer: Literal["slirp4netns"] = "slirp4netns"
    mtu: int = Field(65520, ge=1280, le=65521, description="slirp4netns --mtu (its maximum is 65521)")


class PastaConfig(UserNetConfig):
    layer: Literal["pasta"] = "pasta"


UserNetConfigT = TypeVar("UserNetConfigT", bound=UserNetConfig)


class UserNetLayer(Layer[UserNetConfigT]):
    """What slirp4netns and pasta share: namespaces, topology, VXLAN overlay, placement, teardown."""

    family = "network"

    needs_root = True
    root_because = "it creates named network namespaces (ip netns add) for the stack to serve"
    rootless_form = True
    rootless_alternative = (
        "the namespaces are made in your user namespace and the stack runs as you, as rootless Podman and "
        "Usernetes do"
    )
    program: ClassVar[str]
    package: ClassVar[str]

    def __init__(self, config: UserNetConfigT) -> None:
        super().__init__(config)
        self.namespaces: list[str] = []
        self.pids: list[int] = []
        self.files: list[Path] = []
        self.topology: str = ""
        self.client_ifname = ""
        self.client_ns = ""

    @classmethod
    def example_config(cls) -> dict[str, Any]:
        return {"layer": cls.kind, "mtu": 65520}

    def requires(self) -> list[Requirement]:
        return [
            Requirement(self.program, self.package, purpose=f"{self.kind} user-mode networking"),
            Requirement("ip", "iproute2", purpose="network namespaces"),
            Requirement("bridge", "iproute2", purpose="VXLAN forwarding entries (two-nodes topology)"),
        ]

    # one stack: start it for a namespace, forwarding host UDP port → namespace port when asked
    def start_stack(
        self,
        ctx: TrialContext,
        netns: str,
        ifname: str,
        udp_forward: tuple[int, int] | None,
        tcp_forward: tuple[int, int] | None = None,
    ) -> None:
        raise NotImplementedError

    def _resolve_topology(self, ctx: TrialContext) -> str:
        has_ranks = False
        if ctx.render_processes is not None:
            with contextlib.suppress(Exception):
                has_ranks = any(p.ranks for p in ctx.render_processes({}))
        if self.config.topology in ("outbound", "inbound") and has_ranks:
            raise NearmetalError(
                f"{self.kind} topology {self.config.topology!r} cannot carry MPI: a rank on the host publishes "
                "a loopback address the other rank cannot reach through the user-mode stack",
                fix="use topology: two-nodes (or auto)",
            )
        if self.config.topology != "auto":
            return self.config.topology
        return "two-nodes" if has_ranks else "outbound"

    def _add_namespace(self, name: str) -> None:
        hostnet.add_netns(name)
        self.namespaces.append(name)
        if self.config.tcp_wmem_max:
            hostnet.set_sysctl(name, "net.ipv4.tcp_wmem", f"4096 16384 {self.config.tcp_wmem_max}")

    def setup(self, ctx: TrialContext) -> None:
        self.topology = self._resolve_topology(ctx)
        info: dict[str, Any] = {"stack": self.kind, "topology": self.topology, "mtu": self.config.mtu}
        info["version"] = stack_version(self.package)
        if self.config.tcp_wmem_max:
            info["tcp_wmem_max"] = self.config.tcp_wmem_max
        ctx.placement["usernet"] = info
        if self.topology == "outbound":
            self.client_ns = ctx.host_name(self.kind, "cli")
            self._add_namespace(self.client_ns)
            self.client_ifname = hostnet.short_ifname(ctx.host_name(self.kind, "tap-cli"), "t")
            self.start_stack(ctx, self.client_ns, self.client_ifname, None)
            ctx.endpoints["server_host"] = GATEWAY_ADDRESS
            ctx.endpoints["iface"] = self.client_ifname
            info.update(client_netns=self.client_ns, tap=self.client_ifname, server_host=GATEWAY_ADDRESS)
            return
        if self.topology == "inbound":
            self.client_ns = ctx.host_name(self.kind, "srv")
            self._add_namespace(self.client_ns)
            self.client_ifname = hostnet.short_ifname(ctx.host_name(self.kind, "tap-srv"), "t")
            port = free_tcp_port()
            self.start_stack(ctx, self.client_ns, self.client_ifname, None, (port, port))
            ctx.endpoints["server_host"] = "127.0.0.1"
            ctx.endpoints["server_port"] = port
            info.update(server_netns=self.client_ns, tap=self.client_ifname, forwarded_tcp_port=port)
            return
        # two nodes: each end behind its own stack, VXLAN between them over forwarded UDP ports
        server_ns, self.client_ns = ctx.host_name(self.kind, "srv"), ctx.host_name(self.kind, "cli")
        ports = {server_ns: free_udp_port(), self.client_ns: free_udp_port()}
        taps = {}
        for ns, role in ((server_ns, "srv"), (self.client_ns, "cli")):
            self._add_namespace(ns)
            taps[ns] = hostnet.short_ifname(ctx.host_name(self.kind, f"tap-{role}"), "t")
            self.start_stack(ctx, ns, taps[ns], (ports[ns], VXLAN_PORT))
        alias = ctx.host_name(self.kind, "vxlan")
        vxlan = hostnet.short_ifname(alias, "x")
        for ns, peer, address in (
            (server_ns, self.client_ns, OVERLAY_SERVER),
            (self.client_ns, server_ns, OVERLAY_CLIENT),
        ):
            hostnet.add_vxlan(
                ns, vxlan, VXLAN_VNI, taps[ns], VXLAN_PORT, GATEWAY_ADDRESS, ports[peer], alias,
                mtu=self.config.mtu - VXLAN_OVERHEAD,
            )  # fmt: skip
            hostnet.add_address(ns, vxlan, f"{address}/24")
            hostnet.link_up(ns, vxlan)
            hostnet.wait_until_up(ns, vxlan)
        self.client_ifname = taps[self.client_ns]
        ctx.endpoints["server_host"] = OVERLAY_SERVER
        ctx.endpoints["iface"] = vxlan
        info.update(
            server_netns=server_ns,
            client_netns=self.client_ns,
            vxlan=vxlan,
            taps=list(taps.values()),
            forwarded_udp_ports=list(ports.values()),
            server_host=OVERLAY_SERVER,
        )

    def wrap(self, process: ProcessSpec, ctx: TrialContext) -> ProcessSpec:
        if self.topology == "inbound":
            # the server is behind the stack; the client stays on the host and uses the forwarded port
            return place(process, {"server": hostnet.netns_exec_argv(self.client_ns), "*": []})
        if self.topology == "outbound":
            # the server stays on the host: its loopback is what the gateway address reaches
            return place(process, {"server": [], "*": hostnet.netns_exec_argv(self.client_ns)})
        server_ns = self.namespaces[0]
        return place(
            process,
            {"server": hostnet.netns_exec_argv(server_ns), "*": hostnet.netns_exec_argv(self.client_ns)},
        )

    def collect(self, ctx: TrialContext) -> list[Metric]:
        with contextlib.suppress(hostnet.HostNetError, KeyError, IndexError, ValueError):
            ctx.placement["usernet"]["client_tap"] = hostnet.link_stats(self.client_ns, self.client_ifname)
        return []

    def teardown(self, ctx: TrialContext) -> None:
        for pid in self.pids:
            hostnet.stop_pid(pid)
        self.pids = []
        for path in self.files:
            with contextlib.suppress(OSError):
                path.unlink()
        self.files = []
        for name in reversed(self.namespaces):
            hostnet.delete_netns(name)
        self.namespaces = [n for n in self.namespaces if hostnet.netns_exists(n)]


@register_layer
class Slirp4netnsLayer(UserNetLayer[Slirp4netnsConfig]):
    kind = "slirp4netns"
    Config = Slirp4netnsConfig
    description = "client namespace behind slirp4netns (rootless containers, Usernetes Gen 1)"
    program = "slirp4netns"
    package = "slirp4netns"

    def start_stack(
        self,
        ctx: TrialContext,
        netns: str,
        ifname: str,
        udp_forward: tuple[int, int] | None,
        tcp_forward: tuple[int, int] | None = None,
    ) -> None:
        # the API socket path must fit sockaddr_un (108 bytes): a short name under /run
        api_socket = hostnet.api_socket_path(netns)
        self.files.append(api_socket)
        forwards = [
            (proto, "127.0.0.1", *forward)
            for proto, forward in (("udp", udp_forward), ("tcp", tcp_forward))
            if forward
        ]
        start_slirp4netns(
            netns, ifname, self.config.mtu, api_socket, ctx.trial_dir / f"slirp4netns-{ifname}.log",
            forwards, self.pids,
        )  # fmt: skip


@register_layer
class PastaLayer(UserNetLayer[PastaConfig]):
    kind = "pasta"
    Config = PastaConfig
    description = "client namespace behind pasta (passt), the newer user-mode path of rootless Podman"
    program = "pasta"
    package = "passt"

    def start_stack(
        self,
        ctx: TrialContext,
        netns: str,
        ifname: str,
        udp_forward: tuple[int, int] | None,
        tcp_forward: tuple[int, int] | None = None,
    ) -> None:
        pid_file = ctx.trial_dir / f"pasta-{ifname}.pid"
        log = ctx.trial_dir / f"pasta-{ifname}.log"
        udp = f"127.0.0.1/{udp_forward[0]}:{udp_forward[1]}" if udp_forward else "none"
        tcp = f"127.0.0.1/{tcp_forward[0]}:{tcp_forward[1]}" if tcp_forward else "none"
        # addresses like slirp4netns's, so both stacks are reached the same way; the gateway address is
        # mapped to the host's loopback (pasta's default); no automatic port forwarding ("none")
        argv = [
            "pasta", "--runas", "0:0", "--config-net", "--ipv4-only", "-a", GUEST_ADDRESS, "-n", "24",
            "-g", GATEWAY_ADDRESS, "-I", ifname, "-m", str(self.config.mtu),
            "-t", tcp, "-T", "none", "-U", "none", "-u", udp,
            "-P", str(pid_file), "--log-file", str(log), "--netns", str(hostnet.NETNS_DIR / netns),
        ]  # fmt: skip
        # pasta daemonises once the namespace is configured; its pid comes from the pid file
        proc = hostcmd.run(argv, START_TIMEOUT_S, error=hostnet.HostNetError)
        with contextlib.suppress(OSError, ValueError):
            self.pids.append(int(pid_file.read_text().strip()))
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            raise hostnet.HostNetError(f"pasta failed ({proc.returncode}): {' '.join(detail[-3:])}")
        hostnet.wait_for_address(netns, ifname, START_TIMEOUT_S)
