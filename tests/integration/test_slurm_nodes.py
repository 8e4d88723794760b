"""Two Slurm nodes on one machine (scripts/services/slurm.sh start --nodes 2, started by scripts/test.sh as
scripts/services/slurm-2nodes.sh): the cluster itself, a 2-node job through ``nearmetal run --backend slurm``
on the wire and the VXLAN overlay (placement lists both nodes, MPI ranks ran on both, the path's counters
moved), the user-mode path (each end behind slirp4netns on its node: both TAPs' counters moved, nothing left),
LAMMPS with a rank on each node, doctor naming a node that is down, and cleanup of links a killed
job left inside the nodes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import nearmetal_argv
from helpers import write_plan
from paths import REPO

import nearmetal

SCRIPT = REPO / "scripts/services/slurm.sh"
PY = sys.executable


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(SLURM_CONF, partition) of the two-node cluster scripts/test.sh started, else one started here."""
    conf = os.environ.get("NEARMETAL_TEST_SLURM2_CONF")
    if conf and Path(conf).exists():
        yield conf, os.environ.get("NEARMETAL_TEST_SLURM2_PARTITION", "twonodes")
        return
    if os.geteuid() != 0:
        pytest.skip("starting a two-node Slurm cluster needs root")
    if shutil.which("slurmctld") is None:
        pytest.skip("slurm-wlm is not installed (apt-get install -y slurm-wlm munge)")
    state = tmp_path_factory.mktemp("slurm2") / "state"
    env = {
        **os.environ,
        "NEARMETAL_SLURM_DIR": str(state),
        "NEARMETAL_SLURM_PORT": "7847",
        "NEARMETAL_SLURM_PARTITION": "nmtwo",
    }
    started = subprocess.run(
        ["bash", str(SCRIPT), "start", "--nodes", "2"], env=env, capture_output=True, text=True, timeout=300
    )
    try:
        if started.returncode != 0 and "routed here already" in started.stderr:
            pytest.skip(f"another two-node cluster runs here: {started.stderr.strip()}")
        assert started.returncode == 0, started.stderr
        yield str(state / "etc/slurm.conf"), "nmtwo"
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, text=True, timeout=300)
        assert not state.exists()


def slurm(conf: str, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv), env={**os.environ, "SLURM_CONF": conf}, capture_output=True, text=True, timeout=timeout
    )


def test_two_idle_nodes_with_their_own_names_and_addresses(cluster: tuple[str, str]) -> None:
    conf, partition = cluster
    nodes = slurm(conf, "sinfo", "-h", "-N", "-p", partition, "-o", "%N %T").stdout.split("\n")
    assert sorted(line.split()[0] for line in nodes if line) == ["node1", "node2"]
    names = slurm(conf, "srun", "-p", partition, "-N2", "hostname").stdout.split()
    assert sorted(names) == ["node1", "node2"]
    shown = slurm(conf, "scontrol", "show", "node", "-o").stdout
    addresses = sorted(line.split("NodeAddr=")[1].split()[0] for line in shown.splitlines())
    assert len(set(addresses)) == 2
    # each node sees its own links (the wire to the other node), not the host's
    links = slurm(
        conf, "srun", "-p", partition, "-N2", "--label", "ip", "-br", "addr", "show", "wire0"
    ).stdout
    assert "198.18.251.1/24" in links and "198.18.251.2/24" in links


PLAN = """
name: two-nodes
workloads:
  osu:
    kind: mpi
    params: {{benchmarks: [latency, bw], sizes: [8, 65536], iterations: 200, skip: 20, large_iterations: 20,
              python: "{py}"}}
    resources: {{nodes: 2, tasks_per_node: 1}}
  lammps:
    kind: lammps
    params: {{ranks: 2, atoms: 500, steps: 20}}
    resources: {{nodes: 2, tasks_per_node: 1}}
variants:
  wire: [{{layer: wire}}]
  vxlan:
    layers: [{{layer: vxlan}}]
    only: [osu]
baseline: wire
slurm: {{mpi: srun-pmix, poll_s: 0.5}}
repeats: 1
"""


@pytest.mark.skipif(shutil.which("lmp") is None, reason="lammps is not installed")
def test_a_two_node_job_through_nearmetal_run(cluster: tuple[str, str], tmp_path: Path) -> None:
    conf, partition = cluster
    plan = write_plan(tmp_path, PLAN.format(py=PY))
    db = f"sqlite:///{tmp_path / 'r.db'}"
    proc = subprocess.run(
        [*nearmetal_argv(), "run", str(plan), "--backend", "slurm", "--partition", partition,
         "--db", db, "--workdir", str(tmp_path / "runs"), "--run-id", "twonodes"],
        env={**os.environ, "SLURM_CONF": conf}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = nearmetal.load_results("twonodes", db=db)
    trials = {(t.workload, t.variant): t for t in results.trials}
    assert set(trials) == {("osu", "wire"), ("osu", "vxlan"), ("lammps", "wire")}
    for (workload, variant), trial in trials.items():
        assert trial.status == "ok", (workload, variant, trial.error)
        placement = trial.placement
        assert placement["nodes"] == ["node1", "node2"] and placement["tasks_per_node"] == [1, 1]
        network = placement["network"]["nodes"]
        assert {network[n]["address"] for n in ("node1", "node2")} == {"198.18.250.1", "198.18.250.2"}
        path = placement["path"]
        assert path["layer"] == variant and path["nodes"] == ["node1", "node2"]
        counters = path["counters"]
        for node in ("node1", "node2"):
            wire = counters[node]["wire0"]
            assert wire["tx_bytes"] > 0 and wire["rx_bytes"] > 0, (workload, variant, counters)
    # the MPI output: one rank on each node
    for variant in ("wire", "vxlan"):
        ranks = trials[("osu", variant)].placement["mpi_ranks"]["ranks"]
        assert sorted(r["host"] for r in ranks) == ["node1", "node2"]
    # the bytes crossed the path's device: the wire itself, or the overlay (MTU 50 below the wire's) on it
    wire_trial = trials[("osu", "wire")].placement
    assert wire_trial["network"]["carried_by"] == {"node1": "wire0", "node2": "wire0"}
    assert wire_trial["path"]["counters"]["node1"]["wire0"]["tx_bytes"] > 65536 * 20
    vxlan = trials[("osu", "vxlan")].placement["path"]
    assert vxlan["mtu"] == vxlan["underlay_mtu"] - 50
    overlay = vxlan["counters"]["node1"][vxlan["iface"]]
    assert overlay["kind"] == "vxlan" and overlay["tx_bytes"] > 65536 * 20
    assert vxlan["counters"]["node1"]["wire0"]["tx_bytes"] > overlay["tx_bytes"]  # encapsulated on the wire
    (steps_per_s,) = results.values("timesteps_per_s").values()
    (procs,) = results.values("procs").values()
    assert list(procs) == [2] and steps_per_s[0] > 0


def test_doctor_names_the_node_that_is_down(cluster: tuple[str, str]) -> None:
    conf, _ = cluster
    down = slurm(conf, "scontrol", "update", "nodename=node2", "state=down", "reason=nearmetal-test")
    assert down.returncode == 0, down.stderr
    try:
        proc = subprocess.run(
            [*nearmetal_argv(), "doctor", "--json", "--check", "slurm-nodes"],
            env={**os.environ, "SLURM_CONF": conf}, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        findings = [f for f in json.loads(proc.stdout) if f["check_id"] == "slurm-nodes"]
        assert findings and findings[0]["severity"] == "warning", proc.stdout
        assert "node2" in findings[0]["title"] and "nearmetal-test" in findings[0]["title"]
        assert "node1" not in findings[0]["title"]
    finally:
        slurm(conf, "scontrol", "update", "nodename=node2", "state=resume")


def test_cleanup_removes_links_a_killed_job_left_in_the_nodes(cluster: tuple[str, str]) -> None:
    """What a vxlan trial leaves when its job is killed before teardown: a device in each node's namespace."""
    conf, _ = cluster
    namespaces = [line.split()[0] for line in subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, timeout=20).stdout.splitlines()
        if line.split()[0].endswith(("-node1", "-node2")) and line.startswith("nearmetal-slurm")]  # fmt: skip
    assert len(namespaces) >= 2
    alias = "nearmetal-deadmulti-0123456789-r0-vxlan"
    for ns in namespaces:
        subprocess.run(
            ["ip", "-n", ns, "link", "add", "nmdeadmultix", "type", "veth", "peer", "name", "nmdeadmultiy"],
            check=True,
            timeout=20,
        )
        subprocess.run(
            ["ip", "-n", ns, "link", "set", "nmdeadmultix", "alias", alias], check=True, timeout=20
        )
    proc = subprocess.run(
        [*nearmetal_argv(), "cleanup", "deadmulti"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    for ns in namespaces:
        links = subprocess.run(["ip", "-n", ns, "-br", "link"], capture_output=True, text=True, timeout=20)
        assert "nmdeadmultix" not in links.stdout and "nmdeadmultiy" not in links.stdout
        assert "wire0" in links.stdout and "mgmt0" in links.stdout  # the cluster's own links stay
    # and the cluster still runs jobs
    assert sorted(slurm(conf, "srun", "-N2", "hostname").stdout.split()) == ["node1", "node2"]


USERNET_PLAN = """
name: usernet-nodes
workloads:
  tcp-rr:
    kind: tcp-rr
    params: {{size: 1, transactions: 1000, warmup: 50, python: "{py}"}}
    resources: {{nodes: 2, tasks_per_node: 1}}
variants:
  usernet: [{{layer: usernet}}]
slurm: {{poll_s: 0.5}}
repeats: 1
"""


def test_the_user_mode_path_between_nodes_carries_the_traffic_through_both_taps(
    cluster: tuple[str, str], tmp_path: Path
) -> None:
    """Client behind slirp4netns on node1, server behind slirp4netns on node2 with a forwarded port: every
    transaction crossed both TAP devices and the wire, and no namespace or stack of the run is left."""
    conf, partition = cluster
    plan = write_plan(tmp_path, USERNET_PLAN.format(py=PY))
    db = f"sqlite:///{tmp_path / 'r.db'}"
    proc = subprocess.run(
        [*nearmetal_argv(), "run", str(plan), "--backend", "slurm", "--partition", partition,
         "--db", db, "--workdir", str(tmp_path / "runs"), "--run-id", "usernetnodes"],
        env={**os.environ, "SLURM_CONF": conf}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (trial,) = nearmetal.load_results("usernetnodes", db=db).trials
    assert trial.status == "ok", trial.error
    path = trial.placement["path"]
    assert path["layer"] == "usernet" and path["stack"] == "slirp4netns" and path["server_node"] == "node2"
    tap, counters = path["iface"], path["counters"]
    client_tap, server_tap = counters["node1"][tap], counters["node2"][tap]
    assert client_tap["kind"] == "tap" and client_tap["node"] == "node1" and server_tap["node"] == "node2"
    # each transaction is a request out of the client's namespace and one into the server's (and back)
    assert client_tap["tx_packets"] >= 1000 and client_tap["rx_packets"] >= 1000, counters
    assert server_tap["rx_packets"] >= 1000 and server_tap["tx_packets"] >= 1000, counters
    # and between the stacks the segments crossed the nodes' link
    assert (
        counters["node1"]["wire0"]["tx_packets"] >= 1000 and counters["node2"]["wire0"]["rx_packets"] >= 1000
    )
    # nothing of the run is left: namespaces (the nodes share the host's /run/netns), stacks, sockets
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=20).stdout
    assert "usernetnodes" not in netns
    stacks = subprocess.run(
        ["pgrep", "-af", "slirp4netns"], capture_output=True, text=True, timeout=20
    ).stdout
    assert "usernetnodes" not in stacks
    from nearmetal.host import hostnet

    for ns in path["netns"].values():
        assert not hostnet.api_socket_path(ns).exists()
