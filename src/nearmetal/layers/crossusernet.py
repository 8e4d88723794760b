"""The user-mode path between the nodes of a multi-node Slurm job, as Usernetes Gen 1 ran it: each end of a
server/client workload (iperf3, tcp-rr) inside its own network namespace behind slirp4netns on its node, so
every byte crosses the client's TAP device and user-mode stack on the first node, the nodes' link, and the
server's stack and TAP on the last node.

``usernet``
    the server's node forwards a TCP port on its address on the link to the server's namespace
    (slirp4netns ``add_hostfwd``, the path of a published port); the client, behind its own stack, connects
    to that address and port. ``endpoints["server_host"]`` is the server node's address on the link,
    ``endpoints["server_port"]`` the forwarded port.

A stack started by a Slurm step ends with the step, so each stack lives exactly as long as the process it
serves: both ends are started by ``python -m nearmetal.layers.crossusernet`` (the server under
``srun --overlap -w LAST_NODE``, the client in the trial's own step on the first node), which makes the
namespace, starts slirp4netns for it, runs the program inside, and on every exit (the program's end,
SIGTERM/SIGINT/SIGHUP from srun or the runner) writes the TAP's packet counters over the program's life to
the trial directory, stops the stack and deletes the namespace. Namespaces are named with the run id (the
host's ``nearmetal cleanup`` finds what a SIGKILL left: the nodes share the host's ``/run/netns``), and the
layer's teardown removes them too.

MPI is not carried: every rank publishes the address it listens on, and behind slirp4netns that is the
stack's private 10.0.2.100 on every node, which no other rank can reach (Usernetes put a VXLAN overlay over
the stacks for that, the single-host ``slirp4netns`` layer's ``two-nodes`` topology). The layer refuses
workloads whose processes run MPI ranks or are launched by ``srun``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any, Literal

from pydantic import Field

from nearmetal.host import hostcmd, hostnet
from nearmetal.host.ports import free_tcp_port
from nearmetal.layers.base import TrialContext, register_layer
from nearmetal.layers.crossnode import CrossNodeConfig, CrossNodeError, CrossNodeLayer, run_on_nodes
from nearmetal.layers.usernet import stack_version, start_slirp4netns
from nearmetal.metrics import Metric
from nearmetal.workloads.base import ProcessSpec, Requirement

COUNTERS_WAIT_S = 5.0


class UsernetNodesConfig(CrossNodeConfig):
    layer: Literal["usernet"] = "usernet"
    mtu: int = Field(65520, ge=1280, le=65521, description="slirp4netns --mtu of each end's TAP (max 65521)")


def counters_file(trial_dir: Path, role: str) -> Path:
    return trial_dir / f"usernet-tap-{role}.json"


@register_layer
class UsernetNodesLayer(CrossNodeLayer[UsernetNodesConfig]):
    kind = "usernet"
    Config = UsernetNodesConfig
    description = (
        "each end of a server/client workload behind slirp4netns on its own Slurm node, a forwarded port "
        "between them (Usernetes Gen 1's path between nodes); not MPI"
    )

    def __init__(self, config: UsernetNodesConfig) -> None:
        super().__init__(config)
        self.netns: dict[str, str] = {}  # role (srv, cli) → namespace
        self.port = 0

    def requires(self) -> list[Requirement]:
        return [
            *super().requires(),
            Requirement("slirp4netns", "slirp4netns", purpose="the user-mode stacks"),
        ]

    def setup(self, ctx: TrialContext) -> None:
        if ctx.render_processes is not None:
            processes: list[ProcessSpec] = []
            with contextlib.suppress(Exception):
                processes = ctx.render_processes({})
            if any(p.ranks or (p.argv and p.argv[0] == "srun") for p in processes):
                raise CrossNodeError(
                    "the usernet path carries a server and its client (iperf3, tcp-rr), not MPI: each rank "
                    "would publish the stack's private address 10.0.2.100, which no other node reaches",
                    fix="limit the variant to TCP workloads (only: [iperf3, tcp-rr])",
                )
        super().setup(ctx)

    def make_path(self, ctx: TrialContext, links: dict[str, dict[str, Any]]) -> dict[str, Any]:
        self.path_iface = hostnet.short_ifname(ctx.host_name(self.kind, "tap"), "t")
        self.addresses = {node: link["addresses"][0].split("/")[0] for node, link in links.items()}
        self.netns = {role: ctx.host_name(self.kind, role) for role in ("srv", "cli")}
        self.port = free_tcp_port()
        ctx.endpoints["server_port"] = self.port
        netem = self.netem_commands(self.config.iface)
        if netem:
            # the emulated link is the nodes' link under the stacks
            self.teardown_commands = [
                [["tc", "qdisc", "del", "dev", self.config.iface, "root"]] for _ in self.nodes
            ]
            run_on_nodes(self.nodes, [netem for _ in self.nodes], ctx.trial_dir, "up")
        return {
            "stack": "slirp4netns",
            "version": stack_version("slirp4netns"),
            "mtu": self.config.mtu,
            "underlay_mtu": links[self.nodes[0]].get("mtu"),
            "netns": dict(self.netns),
            "forwarded_tcp_port": self.port,
            "taps": {
                "client": f"{self.nodes[0]}:{self.path_iface}",
                "server": f"{self.nodes[-1]}:{self.path_iface}",
            },
        }

    def netem_commands(self, device: str) -> list[list[str]]:
        # netem goes on the link, never on the TAP (it lives in the stacks' namespaces)
        return super().netem_commands(self.config.iface) if device == self.config.iface else []

    def end_argv(self, role: str, ctx: TrialContext, forward: str | None) -> list[str]:
        argv = [
            sys.executable, "-m", "nearmetal.layers.crossusernet", "--netns", self.netns[role],
            "--tap", self.path_iface, "--mtu", str(self.config.mtu),
            "--counters", str(counters_file(ctx.trial_dir, role)),
        ]  # fmt: skip
        if forward:
            argv += ["--forward", forward]
        return [*argv, "--"]

    def wrap(self, process: ProcessSpec, ctx: TrialContext) -> ProcessSpec:
        if process.ranks or (process.argv and process.argv[0] == "srun"):
            raise CrossNodeError(
                f"the usernet path cannot carry {process.name or process.argv[0]} (MPI or a Slurm step)",
                fix="limit the variant to TCP workloads (only: [iperf3, tcp-rr])",
            )
        if process.role == "server":
            forward = f"{self.addresses[self.nodes[-1]]}:{self.port}"
            prefix = [
                "srun", "--overlap", "--quiet", "--unbuffered", f"--nodelist={self.nodes[-1]}", "--nodes=1",
                "--ntasks=1", "--cpus-per-task=1", "--mem=0",
            ]  # fmt: skip
            process.argv = [*prefix, *self.end_argv("srv", ctx, forward), *process.argv]
        else:
            process.argv = [*self.end_argv("cli", ctx, None), *process.argv]
        return process

    def collect(self, ctx: TrialContext) -> list[Metric]:
        super().collect(ctx)
        path = ctx.placement.get("path")
        if not isinstance(path, dict):
            return []
        counters = path.setdefault("counters", {})
        # the server's end writes its file when srun's SIGTERM has ended it: wait a moment for it
        deadline = time.monotonic() + COUNTERS_WAIT_S
        for role, node in (("cli", self.nodes[0]), ("srv", self.nodes[-1])):
            file = counters_file(ctx.trial_dir, role)
            while not file.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            with contextlib.suppress(OSError, ValueError):
                counters.setdefault(node, {})[self.path_iface] = json.loads(file.read_text())
        return []

    def teardown(self, ctx: TrialContext) -> None:
        super().teardown(ctx)
        # each end removes its own namespace and stack; what a SIGKILLed end left is removed here (the
        # nodes share the host's /run/netns and process table)
        for ns in self.netns.values():
            remove_end(ns)


def remove_end(netns: str) -> None:
    """Stop the stack serving ``netns`` and the processes inside, delete it and its API socket."""
    for pid, _ in hostnet.processes_with(str(hostnet.NETNS_DIR / netns), ("slirp4netns",)):
        hostnet.stop_pid(pid, grace_s=1.0)
    if hostnet.netns_exists(netns):
        for pid in hostnet.netns_pids(netns):
            hostnet.stop_pid(pid, grace_s=1.0)
        with contextlib.suppress(hostnet.HostNetError):
            hostnet.delete_netns(netns)
    with contextlib.suppress(OSError):
        hostnet.api_socket_path(netns).unlink()


class _Stop(Exception):
    pass


def _main(argv: list[str]) -> int:
    """One end: namespace + slirp4netns (+ forwarded port), the program inside, its TAP counters, removal."""
    parser = argparse.ArgumentParser(prog="python -m nearmetal.layers.crossusernet")
    parser.add_argument("--netns", required=True)
    parser.add_argument("--tap", required=True)
    parser.add_argument("--mtu", type=int, default=65520)
    parser.add_argument("--counters", type=Path, required=True)
    parser.add_argument("--forward", help="HOST_ADDRESS:PORT forwarded to the same port inside")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    child: hostcmd.Process[bytes] | None = None
    got: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        got.append(signum)
        if child is None:
            raise _Stop
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    pids: list[int] = []
    api_socket = hostnet.api_socket_path(args.netns)
    before: dict[str, int] = {}
    rc = 1
    try:
        hostnet.add_netns(args.netns)
        forwards = []
        if args.forward:
            address, port = args.forward.rsplit(":", 1)
            forwards.append(("tcp", address, int(port), int(port)))
        log = args.counters.with_suffix(".log")
        start_slirp4netns(args.netns, args.tap, args.mtu, api_socket, log, forwards, pids)
        before = hostnet.link_stats(args.netns, args.tap)
        child = hostcmd.start([*hostnet.netns_exec_argv(args.netns), *command], stdin=None, error=None)
        while True:
            try:
                rc = child.wait()
                break
            except _Stop:
                continue
    except _Stop:
        rc = 128 + (got[0] if got else signal.SIGTERM)
    except hostnet.HostNetError as exc:
        print(f"{os.uname().nodename}: {exc}", file=sys.stderr)
        rc = 1
    except OSError as exc:  # the program (or ip, slirp4netns) cannot be started
        print(f"{os.uname().nodename}: {exc}", file=sys.stderr)
        rc = 127
    finally:
        with contextlib.suppress(Exception):
            after = hostnet.link_stats(args.netns, args.tap)
            moved = {k: after[k] - before.get(k, 0) for k in after}
            args.counters.write_text(json.dumps({**moved, "kind": "tap", "node": os.uname().nodename}))
        for pid in pids:
            hostnet.stop_pid(pid, grace_s=1.0)
        remove_end(args.netns)
    # a program ended by a signal exits as a shell reports it (128 + the signal)
    return 128 - rc if rc < 0 else rc


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
