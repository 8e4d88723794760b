"""The network layers with the real tools: traffic takes the path, and no namespace, veth, slirp4netns or
pasta process is left after success, failure, timeout, SIGINT or SIGKILL (only this test's run id's
objects are compared: other runs create theirs concurrently)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import is_root, nearmetal_argv, needs_tool
from helpers import write_plan

import nearmetal
from nearmetal.host import hostnet
from nearmetal.host.cleanup import find_leftovers
from nearmetal.layers import layer_class, layer_kinds

PY = sys.executable
LAYERS = list(layer_kinds("network"))  # every network layer on one host, from the registry
TOOLS = {"netns": ("ip",), "slirp4netns": ("ip", "slirp4netns"), "pasta": ("ip", "pasta")}

needs_root = pytest.mark.skipif(not is_root(), reason="network namespaces need root")


def skip_without(layer: str) -> None:
    missing = [t for t in TOOLS[layer] if not hostnet_tool(t)]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} installed")


def hostnet_tool(name: str) -> bool:
    import shutil

    return shutil.which(name) is not None


def own_objects(run_id: str) -> list[str]:
    """What this run left: leftovers the cleanup finders see, plus a direct look at /run/netns and /proc."""
    found = [str(x) for x in find_leftovers(run_id)]
    found += [f"netns {n}" for n in hostnet.list_netns(f"nearmetal-{run_id}")]
    found += [
        f"process {p}"
        for p, _ in hostnet.processes_with(f"nearmetal-{run_id}", ("slirp4netns", "pasta", "passt"))
    ]
    return found


def layer_yaml(layer: str) -> str:
    return json.dumps(layer_class(layer).example_config())


@needs_root
@pytest.mark.parametrize("layer", LAYERS)
def test_tcp_rr_crosses_the_layer_and_leaves_nothing(layer: str, tmp_path: Path, db_url: str) -> None:
    skip_without(layer)
    plan = write_plan(
        tmp_path,
        f"""
        name: rr-{layer}
        workloads:
          rr: {{kind: tcp-rr, params: {{transactions: 300, warmup: 20}}}}
        variants:
          path: [{layer_yaml(layer)}]
        repeats: 1
        timeout: 60s
        """,
    )
    result = nearmetal.run_plan(plan, db=db_url, workdir=tmp_path / "runs")
    assert [r.status for r in result.records] == ["ok"], [r.error for r in result.records]
    res = nearmetal.load_results(result.run_id, db=db_url)
    path_trial = next(t for t in res.trials if t.variant == "path")
    placement = path_trial.placement
    info = placement.get("netns") or placement.get("usernet")
    link = info.get("client_link") or info.get("client_tap")
    # 300 round trips of 1-byte requests crossed the path's interface, not loopback
    assert link["tx_packets"] >= 300, link
    cell = next(c for c in res.cells if c.variant == "path")
    assert res.analysis.metric(cell.cell_id, "rtt_p50_us").summary.mean > 0
    assert own_objects(result.run_id) == []


@needs_root
@pytest.mark.parametrize("layer", LAYERS)
def test_failure_and_timeout_leave_nothing(layer: str, tmp_path: Path, db_url: str) -> None:
    skip_without(layer)
    plan = write_plan(
        tmp_path,
        f"""
        name: bad-{layer}
        workloads:
          crash: {{kind: command, params: {{argv: ["{PY}", "-c", "import sys; sys.exit(7)"]}}}}
          hang: {{kind: command, params: {{argv: ["{PY}", "-c", "import time; time.sleep(60)"]}}, timeout: 1s}}
        variants:
          path: [{layer_yaml(layer)}]
        repeats: 1
        """,
    )
    result = nearmetal.run_plan(plan, db=db_url, workdir=tmp_path / "runs")
    statuses = {r.trial.cell.workload: r.status for r in result.records}
    assert statuses == {"crash": "failed", "hang": "timeout"}
    assert own_objects(result.run_id) == []


@needs_root
def test_setup_failure_leaves_nothing(tmp_path: Path) -> None:
    """A layer whose setup fails half-way (the second namespace's name is taken) removes what it made."""
    from nearmetal.layers.base import TrialContext
    from nearmetal.layers.netns import NetnsConfig, NetnsLayer

    ctx = TrialContext(run_id=f"t{os.getpid()}x", trial_key="k0", trial_dir=tmp_path)
    taken = ctx.host_name("netns", "cli")
    hostnet.add_netns(taken)
    try:
        layer = NetnsLayer(NetnsConfig()).bind(ctx)
        with pytest.raises(hostnet.HostNetError), layer:
            pass
        assert hostnet.list_netns(f"nearmetal-{ctx.run_id}") == [taken]
    finally:
        hostnet.delete_netns(taken)
    assert own_objects(ctx.run_id) == []


@needs_root
@pytest.mark.parametrize(
    ("layer", "signum"),
    [
        ("netns", signal.SIGINT),
        ("slirp4netns", signal.SIGINT),
        ("pasta", signal.SIGINT),
        ("pasta", signal.SIGKILL),
    ],
)
def test_interrupted_run_leaves_nothing(layer: str, signum: int, tmp_path: Path, db_url: str) -> None:
    skip_without(layer)
    marker = tmp_path / "started"
    plan = write_plan(
        tmp_path,
        f"""
        name: interrupted
        workloads:
          wait:
            kind: command
            params: {{argv: ["{PY}", "-c", "import pathlib, time; pathlib.Path('{marker}').touch(); time.sleep(60)"]}}
        variants:
          path: [{layer_yaml(layer)}]
        repeats: 1
        """,
    )
    env = {**os.environ, "NEARMETAL_DB": db_url}
    proc = subprocess.Popen(
        [*nearmetal_argv(), "run", str(plan), "--quiet"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert marker.exists(), proc.stderr.read() if proc.poll() is not None else "the trial never started"
    run_id = json.loads(
        subprocess.run(
            [PY, "-c", f"import sqlite3; print(__import__('json').dumps(sqlite3.connect('{db_url[10:]}')"
             ".execute('select id from runs').fetchone()[0]))"],
            capture_output=True, text=True, timeout=30,
        ).stdout
    )  # fmt: skip
    # while the trial runs, its objects exist and carry the run id
    live = own_objects(run_id)
    assert any(x.startswith("netns") for x in live), live
    if layer != "netns":
        assert any(x.startswith("process") for x in live), live
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    if signum == signal.SIGINT:
        assert proc.returncode == 130, stderr
        assert re.search(rf"run {run_id} interrupted", stderr)
    else:
        # SIGKILL cannot clean up: what is left is found by run id and removed by `nearmetal cleanup RUN`
        assert own_objects(run_id)
        subprocess.run([*nearmetal_argv(), "cleanup", run_id], check=True, capture_output=True, timeout=60)
        # the trial's own processes (killed with the runner's group or orphaned) end with their namespace
    time.sleep(0.2)
    assert own_objects(run_id) == []


@needs_root
@needs_tool("mpiexec.hydra", "slirp4netns")
@pytest.mark.parametrize("layer", ["slirp4netns"])
def test_mpi_ranks_in_two_namespaces(layer: str, tmp_path: Path, db_url: str) -> None:
    pytest.importorskip("mpi4py")
    plan = write_plan(
        tmp_path,
        f"""
        name: mpi-{layer}
        workloads:
          mpi:
            kind: mpi
            params: {{min_size: 8, max_size: 16384, iterations: 50, skip: 5, large_iterations: 10, large_skip: 1}}
        variants:
          path: [{{layer: {layer}}}]
        repeats: 1
        timeout: 120s
        """,
    )
    result = nearmetal.run_plan(plan, db=db_url, workdir=tmp_path / "runs")
    record = result.records[0]
    assert record.status == "ok", record.error
    names = {m.name for m in record.metrics}
    assert {"latency_small_us", "bw_large_MBps", "allreduce_large_us", "latency_16KiB_us"} <= names
    res = nearmetal.load_results(result.run_id, db=db_url)
    trial = res.trials[0]
    info = trial.placement.get("netns") or trial.placement.get("usernet")
    if layer == "slirp4netns":
        assert info["topology"] == "two-nodes"  # MPI ranks need both directions
    # the ranks' bytes crossed the path: 50 × 2 × 16 KiB at least went over the client's interface
    link = info.get("client_link") or info.get("client_tap")
    assert link["tx_bytes"] > 50 * 16384, link
    # both ranks ran in different namespaces: the launcher's argv placed them
    argv = Path(trial.output_dir, "mpiexec.stdout").parent
    assert argv.exists()
    assert own_objects(result.run_id) == []


@needs_root
@needs_tool("mpiexec.hydra")
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="pinning one CPU per rank needs two CPUs")
def test_mpi_ranks_pinned_one_cpu_each_and_what_sharing_one_costs(tmp_path: Path, db_url: str) -> None:
    """Pinned ranks get one CPU each; in a 1-CPU cpuset both share it and, busy-polling, take turns by
    scheduler time slices: the median round trip becomes ms instead of µs (issue 17's bimodal trials)."""
    pytest.importorskip("mpi4py")
    plan = write_plan(
        tmp_path,
        """
        name: mpi-pin
        workloads:
          mpi: {kind: mpi, params: {benchmarks: [latency], sizes: [8], iterations: 40, skip: 4}}
        variants:
          pinned: []
          one-cpu: [{layer: cpuset, cpus: 1}]
        baseline: pinned
        repeats: 1
        timeout: 120s
        shield: true  # the pinned ranks' µs round trip must not take turns with the host's other work
        """,
    )
    result = nearmetal.run_plan(plan, db=db_url, workdir=tmp_path / "runs")
    assert [r.status for r in result.records] == ["ok", "ok"], [r.error for r in result.records]
    res = nearmetal.load_results(result.run_id, db=db_url)
    trials = {t.variant: t for t in res.trials}
    cpus = {v: [r["cpus"] for r in t.placement["mpi_ranks"]["ranks"]] for v, t in trials.items()}
    assert all(len(c) == 1 for c in cpus["pinned"]) and cpus["pinned"][0] != cpus["pinned"][1], cpus
    assert cpus["one-cpu"][0] == cpus["one-cpu"][1], cpus
    p50 = {
        v: res.analysis.metric(next(c.cell_id for c in res.cells if c.variant == v), "latency_small_p50_us")
        for v in trials
    }
    assert p50["one-cpu"].summary.mean > 10 * p50["pinned"].summary.mean, {
        v: m.summary.mean for v, m in p50.items()
    }
    assert "load_avg" in trials["pinned"].placement


@needs_root
def test_pasta_caps_the_namespaces_send_buffer_when_asked(tmp_path: Path, db_url: str) -> None:
    """tcp_wmem_max is set inside the stack's namespace (where the client runs), recorded with the stack's
    version, and the namespace is gone afterwards."""
    skip_without("pasta")
    plan = write_plan(
        tmp_path,
        f"""
        name: pasta-wmem
        workloads:
          show: {{kind: command, params: {{argv: ["{PY}", "-c", "print(open('/proc/sys/net/ipv4/tcp_wmem').read())"]}}}}
        variants:
          capped: [{{layer: pasta, tcp_wmem_max: 262144}}]
        repeats: 1
        timeout: 60s
        """,
    )
    result = nearmetal.run_plan(plan, db=db_url, workdir=tmp_path / "runs")
    assert [r.status for r in result.records] == ["ok"], [r.error for r in result.records]
    trial = nearmetal.load_results(result.run_id, db=db_url).trials[0]
    assert Path(trial.output_dir, "main.stdout").read_text().split() == ["4096", "16384", "262144"]
    assert trial.placement["usernet"]["tcp_wmem_max"] == 262144
    assert trial.placement["usernet"]["version"]
    assert own_objects(result.run_id) == []


@needs_root
@pytest.mark.slow
@pytest.mark.timeout(1500)
@needs_tool("iperf3", "slirp4netns", "pasta", "mpiexec.hydra")
def test_quick_net_paths_study_and_its_table(run_cli, tmp_path: Path, db_url: str) -> None:
    """The shipped study at CI size with the real tools: every trial ok, the table per path, the attribution."""
    pytest.importorskip("mpi4py")
    proc = run_cli("study", "net-paths", "--quick", "--json", timeout=1400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    run_id = out["run_id"]
    res = nearmetal.load_results(run_id, db=db_url)
    bad = [(t.cell_key, t.error) for t in res.trials if t.status != "ok"]
    assert not bad, bad
    table = run_cli("net-paths", run_id, "--json", check=True)
    doc = json.loads(table.stdout)
    rows = {r["variant"]: r for r in doc["rows"]}
    assert set(rows) >= {"loopback", "netns", "slirp4netns", "pasta", "quota-1.0", "netns-quota-1.0"}
    # MPI round trips: the median of the iterations leads, the mean stays beside it, each cell's CV is shown
    assert rows["netns"]["MPI latency p50 µs"][0] > 0 and rows["netns"]["MPI latency mean µs"][0] > 0
    assert rows["loopback"]["MPI p50 CV %"] >= 0
    assert all(isinstance(r["caveats"], list) for r in rows.values())
    # bandwidth per path, with the baseline's loss at 0
    assert rows["loopback"]["bandwidth Gbit/s"][0] > 0 and rows["loopback"]["bandwidth Gbit/s"][1] is None
    assert rows["slirp4netns"]["bandwidth Gbit/s"][1] is not None
    # the quota variants carry throttling evidence (how much depends on the host's load: on a busy host the
    # ranks may get less CPU than the quota, which then never binds); the path-only ones carry none
    assert rows["quota-1.0"]["throttled %"] is not None and rows["netns"]["throttled %"] is None
    kinds = {f["title"].split(":")[0] for f in doc["findings"]}
    assert any(k.startswith("mpi/") for k in kinds), doc["findings"]
    text = run_cli("net-paths", run_id, check=True).stdout
    assert "network paths" in text and "slirp4netns" in text
    assert own_objects(run_id) == []


@needs_root
@pytest.mark.parametrize("layer", ["slirp4netns", "pasta"])
def test_inbound_topology_publishes_the_servers_port(layer: str, tmp_path: Path, db_url: str) -> None:
    """The server behind the stack, the client on the host through a forwarded 127.0.0.1 port (podman -p)."""
    skip_without(layer)
    plan = write_plan(
        tmp_path,
        f"""
        name: inbound-{layer}
        workloads:
          rr: {{kind: tcp-rr, params: {{transactions: 200, warmup: 10}}}}
        variants:
          published: [{{layer: {layer}, topology: inbound}}]
        repeats: 1
        timeout: 60s
        """,
    )
    result = nearmetal.run_plan(plan, db=db_url, workdir=tmp_path / "runs")
    record = result.records[0]
    assert record.status == "ok", record.error
    trial = nearmetal.load_results(result.run_id, db=db_url).trials[0]
    info = trial.placement["usernet"]
    assert info["topology"] == "inbound"
    # the server ran inside the namespace and listened on the forwarded port the client connected to
    server_out = Path(trial.output_dir, "tcprr-server.stdout").read_text()
    assert f"listening on 0.0.0.0 {info['forwarded_tcp_port']}" in server_out
    assert own_objects(result.run_id) == []


@needs_root
def test_doctor_sees_the_user_mode_stack_from_inside(tmp_path: Path, db_url: str) -> None:
    """The user-mode-net check, run inside a slirp4netns namespace, finds the TAP device; on the host it does not."""
    skip_without("slirp4netns")
    code = "from nearmetal.doctor.netpath import check_user_mode_net as c; f = c()[0]; print(f.severity, f.evidence)"
    plan = write_plan(
        tmp_path,
        f"""
        name: doctor-inside
        workloads:
          doctor: {{kind: command, params: {{argv: ["{PY}", "-c", "{code}"]}}}}
        variants:
          host: []
          slirp: [{{layer: slirp4netns}}]
        repeats: 1
        timeout: 60s
        """,
    )
    result = nearmetal.run_plan(plan, db=db_url, workdir=tmp_path / "runs")
    assert [r.status for r in result.records] == ["ok", "ok"]
    res = nearmetal.load_results(result.run_id, db=db_url)
    out = {t.variant: Path(t.output_dir, "main.stdout").read_text() for t in res.trials}
    assert out["slirp"].startswith("warning") and "10.0.2.2" in out["slirp"], out
    assert not out["host"].startswith("warning"), out
