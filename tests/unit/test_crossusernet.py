"""The user-mode path between Slurm nodes (layer ``usernet``) without a cluster: it refuses MPI before it
makes anything, and places each end behind its own stack (the server on the last node with a forwarded port
on that node's link address, the client in the trial's step), every host object named with the run id."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from nearmetal.layers.base import LAYERS, TrialContext
from nearmetal.layers.crossnode import CrossNodeError
from nearmetal.layers.crossusernet import UsernetNodesLayer
from nearmetal.workloads.base import ProcessSpec, WorkloadContext
from nearmetal.workloads.mpi import MpiParams, MpiWorkload
from nearmetal.workloads.tcprr import TcpRrParams, TcpRrWorkload


def _ctx(tmp_path: Path) -> TrialContext:
    return TrialContext(run_id="unrun", trial_key="0123456789-r0", trial_dir=tmp_path)


def test_usernet_refuses_mpi_before_it_makes_anything(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SLURM_JOB_NODELIST", "node[1-2]")
    layer = LAYERS["usernet"](LAYERS["usernet"].Config.model_validate({"layer": "usernet"}))
    assert layer.backends == ("slurm",)
    ctx = _ctx(tmp_path)
    wctx = WorkloadContext(trial_dir=tmp_path, is_root=True, mpi="srun-pmix")
    ctx.render_processes = lambda _: MpiWorkload().processes(MpiParams(benchmarks=["latency"]), wctx)
    with pytest.raises(CrossNodeError, match="not MPI") as caught:
        layer.setup(ctx)
    assert "only: [iperf3, tcp-rr]" in (caught.value.fix or "")
    assert layer.nodes == [] and not list(tmp_path.iterdir())  # refused before any srun or namespace


def test_each_end_runs_behind_its_own_stack_and_the_server_on_the_last_node(tmp_path: Path) -> None:
    layer = UsernetNodesLayer(UsernetNodesLayer.Config.model_validate({"layer": "usernet", "mtu": 9000}))
    ctx = _ctx(tmp_path)
    # what make_path decides from the nodes' links, without srun
    links = {
        "node1": {"addresses": ["198.18.251.1/24"], "mtu": 1500},
        "node2": {"addresses": ["198.18.251.2/24"], "mtu": 1500},
    }
    layer.nodes = ["node1", "node2"]
    info = layer.make_path(ctx, links)
    assert info["netns"] == {
        "srv": "nearmetal-unrun-0123456789-r0-usernet-srv",
        "cli": "nearmetal-unrun-0123456789-r0-usernet-cli",
    }
    port = ctx.endpoints["server_port"]
    assert info["forwarded_tcp_port"] == port and info["mtu"] == 9000
    assert layer.path_iface.startswith("nm") and len(layer.path_iface) <= 15
    wctx = WorkloadContext(
        trial_dir=tmp_path, is_root=True, endpoints={"server_host": "198.18.251.2", **ctx.endpoints}
    )
    server, client = TcpRrWorkload().processes(TcpRrParams(), wctx)
    server = layer.wrap(server, ctx)
    client = layer.wrap(client, ctx)
    wrapper = [sys.executable, "-m", "nearmetal.layers.crossusernet"]
    assert server.argv[0] == "srun" and "--nodelist=node2" in server.argv
    end = server.argv[server.argv.index(sys.executable) :]
    assert end[:3] == wrapper
    assert end[end.index("--forward") + 1] == f"198.18.251.2:{port}"
    assert end[end.index("--netns") + 1] == info["netns"]["srv"]
    assert end[end.index("--mtu") + 1] == "9000"
    assert end[end.index("--") + 1 :][:3] == [sys.executable, "-m", "nearmetal.tools.tcprr"]
    assert client.argv[:3] == wrapper and "--forward" not in client.argv
    assert client.argv[client.argv.index("--netns") + 1] == info["netns"]["cli"]
    assert "--host" in client.argv and client.argv[client.argv.index("--host") + 1] == "198.18.251.2"
    # MPI under srun in a wrapped process is refused too (a plan that got past setup's check)
    with pytest.raises(CrossNodeError, match="cannot carry"):
        layer.wrap(ProcessSpec(argv=["srun", "--mpi=pmi2", "osu_latency"]), ctx)
