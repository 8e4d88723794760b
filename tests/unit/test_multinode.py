"""Multi-node Slurm trials without a cluster: what a node's ``ip -j -s addr show`` says (recorded on
scripts/services/slurm.sh's node1 during a vxlan trial), the counter deltas that name the path, the MPI launch
under srun, a job's task count, the cross-node layers' refusals, and doctor's reading of sinfo."""

from __future__ import annotations

from pathlib import Path

import pytest
from paths import DATA

from nearmetal.backends.options import SlurmOptions
from nearmetal.backends.slurm import SlurmBackend
from nearmetal.doctor.slurm import findings_from_sinfo, node_is_bad, parse_sinfo
from nearmetal.host.leftovers import is_service_object
from nearmetal.host.nodes import carried_by, counter_deltas, parse_interfaces
from nearmetal.layers.base import LAYERS, TrialContext
from nearmetal.layers.crossnode import CrossNodeError
from nearmetal.run.trial import TrialSpec
from nearmetal.workloads.base import WorkloadContext
from nearmetal.workloads.mpi import MpiParams, MpiWorkload

NODE1 = (DATA / "iproute2-6.1-addr-stats-node1.json").read_text()


def test_interfaces_of_a_node_leave_out_loopback_and_keep_addresses_mtu_kind() -> None:
    ifaces = parse_interfaces(NODE1)
    assert set(ifaces) == {"mgmt0", "wire0", "nmef9f1b5872x"}
    assert ifaces["wire0"]["addresses"] == ["198.18.251.1/24"] and ifaces["wire0"]["kind"] == "veth"
    vxlan = ifaces["nmef9f1b5872x"]
    assert vxlan["kind"] == "vxlan" and vxlan["mtu"] == 1450 and vxlan["addresses"] == ["198.19.251.1/24"]
    assert ifaces["wire0"]["tx_bytes"] == 4380338851
    assert parse_interfaces("not json") == {}


def test_the_interface_that_moved_the_most_bytes_is_the_path() -> None:
    before = {"node1": parse_interfaces(NODE1)}
    after = {"node1": {k: dict(v) for k, v in before["node1"].items()}}
    after["node1"]["wire0"]["tx_bytes"] += 10_000_000
    after["node1"]["wire0"]["tx_packets"] += 7000
    after["node1"]["mgmt0"]["rx_bytes"] += 3000
    deltas = counter_deltas(before, after)
    assert deltas["node1"]["wire0"]["tx_bytes"] == 10_000_000
    assert deltas["node1"]["wire0"]["tx_packets"] == 7000
    assert deltas["node1"]["mgmt0"]["rx_bytes"] == 3000
    assert deltas["node1"]["wire0"]["addresses"] == ["198.18.251.1/24"]
    assert carried_by(deltas) == {"node1": "wire0"}
    # nothing moved: no path claimed
    assert carried_by(counter_deltas(before, before)) == {}


def test_mpi_ranks_start_under_srun_with_pmi2_and_no_loopback_device(tmp_path: Path) -> None:
    ctx = WorkloadContext(trial_dir=tmp_path, is_root=True, mpi="srun-pmix")
    (proc,) = MpiWorkload().processes(MpiParams(benchmarks=["latency"]), ctx)
    assert proc.argv[:3] == ["srun", "--mpi=pmi2", "--ntasks=2"] and not proc.ranks
    assert "UCX_NET_DEVICES" not in proc.env  # the ranks may be on two nodes: loopback cannot join them
    ctx.endpoints["iface"] = "wire0"
    (proc,) = MpiWorkload().processes(MpiParams(benchmarks=["latency"]), ctx)
    assert proc.env["UCX_NET_DEVICES"] == "wire0"
    local = WorkloadContext(trial_dir=tmp_path, is_root=True)
    (hydra,) = MpiWorkload().processes(MpiParams(benchmarks=["latency"]), local)
    assert hydra.env["UCX_NET_DEVICES"] == "lo" and len(hydra.ranks) == 2


def _spec(resources: dict) -> TrialSpec:
    return TrialSpec(
        run_id="r", trial_key="0123456789-r0", trial_dir="/", workload="w", kind="command", variant="v",
        point={}, params={}, layers=[], timeout=60, is_baseline=True, index=0, warmup=False, block=0, seed=0,
        resources=resources,
    )  # fmt: skip


def test_a_job_on_two_nodes_gets_a_task_on_each() -> None:
    backend = SlurmBackend(SlurmOptions())
    assert "--ntasks=2" in backend.sbatch_options(_spec({"nodes": 2}))
    assert "--ntasks=4" in backend.sbatch_options(_spec({"nodes": 2, "tasks": 4}))
    assert "--ntasks=1" in backend.sbatch_options(_spec({}))


@pytest.mark.parametrize("kind", ["wire", "vxlan"])
def test_cross_node_layers_refuse_a_single_node(kind: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("SLURM_JOB_NODELIST", raising=False)
    cls = LAYERS[kind]
    assert cls.backends == ("slurm",)
    layer = cls(cls.Config.model_validate({"layer": kind}))
    ctx = TrialContext(run_id="r", trial_key="0123456789-r0", trial_dir=tmp_path)
    with pytest.raises(CrossNodeError, match="two or more nodes"):
        layer.setup(ctx)


def test_the_clusters_own_objects_are_no_runs_leftovers() -> None:
    for name in ("nearmetal-slurm6837-node1", "nearmetal-slurm6837-mgmt", "nearmetal-slurm6837-wire"):
        assert is_service_object(name)
    assert not is_service_object("nearmetal-slurm-0123456789-r0-vxlan")  # a run called "slurm"
    assert not is_service_object("nearmetal-run1-0123456789-r0-vxlan")


SINFO = "node1|idle|none\nnode2|down*|nearmetal-test\nnode2|down*|nearmetal-test\n"


def test_doctor_names_the_node_that_is_down() -> None:
    assert parse_sinfo(SINFO) == [("node1", "idle", "none"), ("node2", "down*", "nearmetal-test")]
    assert node_is_bad("down*") and node_is_bad("drained") and node_is_bad("idle*")
    assert not node_is_bad("idle") and not node_is_bad("mixed") and not node_is_bad("allocated")
    (finding,) = findings_from_sinfo(SINFO)
    assert finding.severity == "warning"
    assert "node2 (down*: nearmetal-test)" in finding.title and "node1" not in finding.title
    assert "nodename=node2 state=resume" in finding.fix
    (ok,) = findings_from_sinfo("node1|idle|none\nnode2|mixed|none\n")
    assert ok.severity == "ok" and "2 Slurm node(s)" in ok.title
    assert findings_from_sinfo("") == []


def _path(variant: str) -> dict:
    iface = "wire0" if variant == "wire" else "nmabcdef0123x"
    moved = {"tx_bytes": 900_000_000, "rx_bytes": 1_000_000, "tx_packets": 20_000, "rx_packets": 1_500}
    counters = {iface: {"kind": "veth" if variant == "wire" else "vxlan", **moved}}
    if variant != "wire":
        counters["wire0"] = {"kind": "veth", **{k: v + 1_000_000 for k, v in moved.items()}}
    return {
        "layer": variant, "iface": iface, "underlay": "wire0", "nodes": ["node1", "node2"],
        "mtu": 1500 if variant == "wire" else 1450, "counters": {"node1": counters},
    }  # fmt: skip


def test_the_cross_node_table_says_per_cell_whether_it_is_the_path_or_the_cpu(tmp_path: Path) -> None:
    from report_data import SyntheticCell, write_run

    import nearmetal
    from nearmetal.metrics import Metric
    from nearmetal.report.studies.crossnode import crossnode_table
    from nearmetal.store import Store

    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    cells = [
        SyntheticCell(kind, variant, kind=kind, baseline=variant == "wire")
        for kind in ("iperf3", "mpi")
        for variant in ("wire", "vxlan")
    ]

    def metrics(cell: SyntheticCell, repeat: int, rng) -> list[Metric]:
        slower = cell.variant == "vxlan"
        noise = rng.normal(1, 0.01)
        if cell.kind == "iperf3":
            return [
                Metric("throughput_Gbps", (3.3 if slower else 4.4) * noise, "Gbit/s", "higher"),
                Metric("client_cpu_pct", 97.0 if slower else 80.0, "%", "lower"),
            ]
        return [Metric("latency_small_p50_us", (7.5 if slower else 6.0) * noise, "µs", "lower")]

    def fields(cell: SyntheticCell) -> dict:
        return {"placement": {"path": _path(cell.variant)}}

    run_id = write_run(store, cells, metrics, repeats=6, trial_fields=fields)
    results = nearmetal.load_results(run_id, store=store)
    table = crossnode_table(results)
    assert table is not None
    rows = {row[0]: dict(zip(table.headers, row, strict=True)) for row in table.rows}
    assert rows["wire"]["device"].startswith("wire0 (wire, MTU 1500)")
    assert rows["vxlan"]["device"].startswith("nmabcdef0123x (vxlan, MTU 1450)")
    assert rows["vxlan"]["packets/trial"] == "21,500" and rows["vxlan"]["MB/trial on link"] == "903.0"
    assert "(baseline)" in rows["wire"]["bandwidth Gbit/s"]
    bandwidth = rows["vxlan"]["bandwidth Gbit/s"]
    assert "+25" in bandwidth and "path (CPU-bound: an end at 97% CPU)" in bandwidth
    latency = rows["vxlan"]["MPI latency p50 µs"]
    assert "+25" in latency and latency.endswith(") path")
    assert any("node1, node2" in note for note in table.notes)
