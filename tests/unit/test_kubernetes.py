"""The Kubernetes backend up to its boundary, without the Kubernetes client (the unit tier runs without the
kubernetes extra): the container's entry point really runs here under /bin/sh, its evidence is read back, layers
without a pod form are refused, the node's outside CPU is split. The manifests (built with the client's models:
layers → pod settings, validation against the API's schemas) and ``wait``'s watch are in
tests/integration/test_kubernetes_manifests.py; submission, watch, logs and cleanup against a real kube-apiserver
+ etcd in test_kube_apiserver.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import write_plan
from kube_plans import IMAGE

from nearmetal.backends.kubernetes import (
    DONE_MARK,
    END_MARK,
    ENTRYPOINT,
    LAYER_MAPPINGS,
    KubernetesBackend,
    KubernetesError,
    KubernetesOptions,
    split_log,
)
from nearmetal.errors import NearmetalError
from nearmetal.layers import LAYERS
from nearmetal.plan import load_plan
from nearmetal.run.runner import preflight
from nearmetal.workloads import get_workload
from nearmetal.workloads.base import TrialOutput

PY = sys.executable


def test_the_entry_point_runs_the_program_and_returns_its_files_in_the_log(tmp_path: Path) -> None:
    # the container's script, run for real by /bin/sh here: inputs copied, argv run, new files in the log
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "input.txt").write_text("given\n")
    work = tmp_path / "work"
    work.mkdir()
    argv = [
        "stress-ng",
        "--cpu",
        "1",
        "--cpu-ops",
        "50",
        "--metrics-brief",
        "--yaml",
        str(work / "stress-ng.yaml"),
    ]
    proc = subprocess.run(
        ["/bin/sh", "-c", ENTRYPOINT, "nearmetal-trial", *argv],
        cwd=work,
        env={**os.environ, "NEARMETAL_INPUTS": str(inputs)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    stdout, files = split_log(proc.stdout + proc.stderr)
    assert set(files) == {"stress-ng.yaml"}
    assert files["stress-ng.yaml"] == (work / "stress-ng.yaml").read_bytes()
    (tmp_path / "stress-ng.yaml").write_bytes(files["stress-ng.yaml"])
    metrics = get_workload("stress-ng").parse(
        TrialOutput(stdout=stdout, stderr="", files={"stress-ng.yaml": tmp_path / "stress-ng.yaml"})
    )
    assert any(m.name == "bogo_ops_per_s" and m.value > 0 for m in metrics)
    # the program's exit code is the container's
    failing = subprocess.run(
        ["/bin/sh", "-c", ENTRYPOINT, "nearmetal-trial", PY, "-c", "import sys; sys.exit(3)"],
        cwd=work,
        env={**os.environ, "NEARMETAL_INPUTS": str(inputs)},
        capture_output=True,
        timeout=60,
    )
    assert failing.returncode == 3 and failing.stdout.decode().splitlines()[-1] == f"{DONE_MARK} 3"


def test_a_layer_without_a_kubernetes_form_is_refused_before_anything_is_created(tmp_path: Path) -> None:
    unmapped = sorted(set(LAYERS) - set(LAYER_MAPPINGS))
    if not unmapped:
        pytest.skip("every registered layer has a Kubernetes mapping")
    layer = unmapped[0]
    from nearmetal.layers import layer_class

    example = layer_class(layer).example_config()
    if example is None:
        pytest.skip(f"layer {layer} has no example configuration")
    import yaml

    plan = write_plan(
        tmp_path,
        f"""
        name: k8s-unmapped
        workloads:
          w: {{kind: stress-ng, params: {{stressor: cpu, workers: 1, ops: 10}}}}
        variants:
          bare: []
          other: [{yaml.safe_dump(example, default_flow_style=True).strip()}]
        """,
    )
    backend = KubernetesBackend(KubernetesOptions(image=IMAGE))
    with pytest.raises(KubernetesError, match="no Kubernetes form"):
        backend.check(load_plan(plan))


def test_the_pod_layer_is_refused_by_backends_that_cannot_apply_it(tmp_path: Path) -> None:
    plan = write_plan(
        tmp_path,
        """
        name: pod-local
        workloads:
          w: {kind: stress-ng, params: {stressor: cpu, workers: 1, ops: 10}}
        variants:
          bare: []
          kata: [{layer: pod, runtime_class: kata-qemu}]
        """,
    )
    with pytest.raises(NearmetalError, match="cannot run on the local backend"):
        preflight(load_plan(plan))


# --- the pod's own evidence (podevidence) ------------------------------------------------------------------
# recorded from a pod of the single-node cluster (scripts/services/kubernetes.sh, cgroup v1) with limits.cpu 800m
V1_BEFORE = {
    "cpu/cpu.cfs_quota_us": "80000",
    "cpu/cpu.cfs_period_us": "100000",
    "cpu/cpu.stat": "nr_periods 2\nnr_throttled 0\nthrottled_time 0\nnr_bursts 0\nburst_time 0",
    "cpuacct/cpuacct.usage": "14133635",
    "cpuacct/cpuacct.stat": "user 1\nsystem 0",
    "time_ns": "1796279373033796879",
}
V1_AFTER = {
    "cpu/cpu.cfs_quota_us": "80000",
    "cpu/cpu.cfs_period_us": "100000",
    "cpu/cpu.stat": "nr_periods 27\nnr_throttled 25\nthrottled_time 2761634311\nnr_bursts 0\nburst_time 0",
    "cpuacct/cpuacct.usage": "2093409781",
    "cpuacct/cpuacct.stat": "user 201\nsystem 6",
    "time_ns": "1796279375653796879",
}
V2_AFTER = {
    "cpu.max": "max 100000",
    "cpu.stat": "usage_usec 1500000\nuser_usec 1400000\nsystem_usec 100000\nnr_periods 0\nnr_throttled 0\n"
    "throttled_usec 0",
    "time_ns": "2000000000",
}


def test_the_containers_evidence_is_the_quota_and_the_change_over_the_program() -> None:
    from nearmetal.backends.podevidence import container_evidence, evidence_metrics

    record = container_evidence({"before": V1_BEFORE, "after": V1_AFTER})
    assert (record["cgroup_version"], record["quota_us"], record["period_us"]) == (1, 80_000, 100_000)
    assert record["wall_s"] == pytest.approx(2.62)
    assert (record["nr_periods"], record["nr_throttled"]) == (25, 25)
    assert record["throttled_s"] == pytest.approx(2.761634311)
    assert record["usage_s"] == pytest.approx(2.079276146)
    assert (record["user_s"], record["system_s"]) == pytest.approx((2.0, 0.06))
    metrics = {m.name: m for m in evidence_metrics(record)}
    assert metrics["throttled_pct"].value == 100.0 and metrics["throttled_pct"].direction == "lower"
    # what the quota allows: 0.8 CPU = 80% of one CPU over the program's run
    assert metrics["cpu_util_pct"].value == pytest.approx(100 * 2.079276146 / 2.62)
    assert metrics["cpu_util_pct"].value < 80
    # v2: "max" is no quota; the counters are in µs
    v2 = container_evidence({"before": {"time_ns": "0"}, "after": V2_AFTER})
    assert (v2["cgroup_version"], v2["quota_us"], v2["period_us"]) == (2, None, 100_000)
    assert (v2["usage_s"], v2["user_s"], v2["wall_s"]) == (1.5, 1.4, 2.0)
    # no evidence (a container without the entry point's sections): nothing is invented
    assert container_evidence({}) == {} and evidence_metrics({}) == []


def test_the_pods_cgroup_is_found_under_either_cgroup_driver(tmp_path: Path) -> None:
    from nearmetal.backends.podevidence import find_pod_cgroup, read_pod_cgroup

    uid = "2182a1aa-c577-454e-a4e5-7bc87e4fd954"
    # cgroupfs driver, v1: cpu/kubepods/burstable/pod<uid>, cpuacct beside it
    pod = tmp_path / "cpu/kubepods/burstable" / f"pod{uid}"
    pod.mkdir(parents=True)
    (tmp_path / "cpu/cpu.cfs_quota_us").write_text("-1\n")
    (pod / "cpu.cfs_quota_us").write_text("80000\n")
    (pod / "cpu.cfs_period_us").write_text("100000\n")
    (pod / "cpu.stat").write_text(V1_AFTER["cpu/cpu.stat"])
    assert find_pod_cgroup(uid, tmp_path) == (1, pod)
    assert find_pod_cgroup("another-uid", tmp_path) is None
    record = read_pod_cgroup(1, pod)
    assert (record["quota_us"], record["period_us"], record["nr_throttled"]) == (80_000, 100_000, 25)
    # systemd driver, v2: kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid_>.slice
    v2 = tmp_path / "v2"
    slice_ = (
        v2
        / "kubepods.slice/kubepods-besteffort.slice"
        / f"kubepods-besteffort-pod{uid.replace('-', '_')}.slice"
    )
    slice_.mkdir(parents=True)
    (slice_ / "cpu.max").write_text("max 100000\n")
    assert find_pod_cgroup(uid, v2) == (2, slice_)
    assert read_pod_cgroup(2, slice_)["quota_us"] is None


PROGRAM_WITH_STDERR = "echo program-output; sleep 0.2; echo program-warning >&2"


def test_the_entry_points_evidence_is_read_and_left_out_of_the_output(tmp_path: Path) -> None:
    from nearmetal.backends.podevidence import EVIDENCE_MARK, container_evidence, split_evidence

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    proc = subprocess.run(
        ["/bin/sh", "-c", ENTRYPOINT, "nearmetal-trial", "/bin/sh", "-c", PROGRAM_WITH_STDERR],
        cwd=tmp_path,
        env={**os.environ, "NEARMETAL_INPUTS": str(inputs)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    rest, sections = split_evidence(proc.stdout, END_MARK)
    assert set(sections) == {"before", "after"}
    record = container_evidence(sections)
    assert 0.2 <= record["wall_s"] < 30  # the program's own time, from date +%s%N around it
    stdout, files = split_log(proc.stdout)
    # the program's stderr comes through stdout, in order, before the evidence read after it: one stream,
    # so a runtime's separate stream writers cannot put a late stderr line inside an evidence section
    assert stdout.split() == ["program-output", "program-warning"] and proc.stderr == ""
    assert files == {} and EVIDENCE_MARK not in rest
    assert proc.stdout.splitlines()[-1] == f"{DONE_MARK} 0"  # the closing line a complete log ends with


class _GrowingLog:
    """The API server's answers while the runtime is still writing a finished container's log."""

    def __init__(self, answers: list[str]) -> None:
        self.answers, self.reads = answers, 0

    def read_namespaced_pod_log(self, name: str, namespace: str) -> str:
        self.reads += 1
        return self.answers[min(self.reads, len(self.answers)) - 1]


class _Pod:
    class metadata:  # the Kubernetes client's attribute name
        name = "trial-pod"


def _backend_reading(answers: list[str], settle_s: float) -> tuple[KubernetesBackend, _GrowingLog]:
    core = _GrowingLog(answers)
    backend = KubernetesBackend(KubernetesOptions(image=IMAGE, log_settle_s=settle_s))
    backend._core = lambda: core  # type: ignore[method-assign]
    return backend, core


def test_a_finished_pods_log_is_read_again_until_it_has_its_closing_line() -> None:
    cut = "program-output\n=== nearmetal-evidence after cpu/cpu.cfs_quota_us\n"
    whole = cut + f"80000\n{END_MARK}\n{DONE_MARK} 0\n"
    backend, core = _backend_reading([cut, cut, whole], settle_s=30)
    log, reading = backend._read_log(_Pod(), settle=True)
    assert log == whole and core.reads == 3 and reading["complete"] and reading["reads"] == 3
    # a log that never completes is given up on after log_settle_s, and said to be incomplete
    backend, core = _backend_reading([cut], settle_s=0.5)
    log, reading = backend._read_log(_Pod(), settle=True)
    assert log == cut and not reading["complete"] and core.reads >= 2 and 0.5 <= reading["waited_s"] < 5
    # an OOM-killed container's shell never prints the closing line: one read, no waiting
    backend, core = _backend_reading([cut], settle_s=30)
    assert backend._read_log(_Pod(), settle=False)[1] == {"reads": 1, "complete": False, "waited_s": 0.0}


def test_the_pod_table_shows_the_quota_the_kubelet_wrote() -> None:
    from nearmetal.report.studies.pods import quota_text

    assert quota_text({"quota_us": 80_000, "period_us": 100_000}) == "80000 / 100000 µs (0.8 CPU)"
    assert quota_text({"quota_us": None, "period_us": 100_000}) == "none (max)"
    assert quota_text(None) == "–"


def test_a_localhost_image_is_never_pulled_unless_the_plan_says_so(tmp_path: Path) -> None:
    local = KubernetesBackend(KubernetesOptions(image="localhost/nearmetal/workloads:bookworm-abc"))
    assert local.pull_policy() == "Never"
    assert KubernetesBackend(KubernetesOptions(image=IMAGE)).pull_policy() == "IfNotPresent"
    told = KubernetesOptions(image="localhost/x:1", image_pull_policy="IfNotPresent")
    assert KubernetesBackend(told).pull_policy() == "IfNotPresent"


# --- issue 27: fair variants, the quiet watch, the pod's QoS evidence, the node's outside CPU -------------


def test_the_containers_evidence_has_its_cpu_weight() -> None:
    from nearmetal.backends.podevidence import container_evidence

    after = {**V1_AFTER, "cpu/cpu.shares": "819\n"}
    assert container_evidence({"before": V1_BEFORE, "after": after})["cpu_shares"] == 819
    v2 = container_evidence({"before": {"time_ns": "0"}, "after": {**V2_AFTER, "cpu.weight": "32\n"}})
    assert v2["cpu_weight"] == 32 and "cpu_shares" not in v2
    assert "cpu_shares" not in container_evidence({"before": V1_BEFORE, "after": V1_AFTER})
    assert "cpu/cpu.shares" in ENTRYPOINT and "cpu.weight" in ENTRYPOINT


def _snapshot(t: float, busy: int, steal: int, total: int, procs: dict, pod_s: float, self_s: float = 0.0):
    from nearmetal.backends.podnoise import NodeSnapshot

    return NodeSnapshot(t, (busy, steal, total), procs, self_s, pod_s, 1.0)


def test_the_nodes_outside_cpu_is_everything_but_the_pod_split_by_who_took_it() -> None:
    from nearmetal.analysis.contention import TrialNoise, trial_contended
    from nearmetal.backends.podnoise import _TICK, node_noise

    own = str(os.getpid())
    start = {
        ("100", 1): ("kube-apiserver", 0, False),
        ("101", 1): ("etcd", 0, False),
        ("102", 1): ("kubelet", 0, False),
        ("103", 1): ("containerd-shim", 0, False),
        ("104", 1): ("stress-ng-cpu", 0, False),
        ("105", 1): ("kworker/0:1", 0, True),
        (own, 1): ("nearmetal", 0, False),
    }
    t = _TICK  # one second of one CPU in ticks
    end = {
        ("100", 1): ("kube-apiserver", t // 10, False),  # 10% of one CPU over 1 s
        ("101", 1): ("etcd", t // 20, False),
        ("102", 1): ("kubelet", t // 20, False),
        ("103", 1): ("containerd-shim", t // 50, False),
        ("104", 1): ("stress-ng-cpu", t, False),  # a CPU hog outside the cluster
        ("105", 1): ("kworker/0:1", t // 10, True),  # kernel threads are left out, as locally
        (own, 1): ("nearmetal", t // 100, False),
    }
    # the node was busy 2.4 CPU-s over 1 s, of which the pod's cgroup took 1.0 CPU-s
    noise = node_noise(
        _snapshot(0.0, 0, 0, 0, start, 5.0), _snapshot(1.0, int(2.4 * t), 0, 2 * t, end, 6.0), "uid"
    )
    assert noise is not None
    record = noise.to_dict()
    assert record["outside_cpu_pct"] == pytest.approx(130.0)  # 240 − 100 (pod) − 10 (kernel threads)
    split = record["split_pct"]
    assert split["control_plane"] == pytest.approx(15.0) and split["kubelet"] == pytest.approx(5.0)
    assert split["containerd"] == pytest.approx(2.0) and split["nearmetal"] == pytest.approx(1.0)
    assert split["rest"] == pytest.approx(107.0)  # stress-ng 100 + what no scan saw (ended processes) 7
    assert record["top"][0]["name"] == "stress-ng-cpu"
    assert record["processes"]["control_plane"] == {"kube-apiserver": 0.1, "etcd": 0.05}
    # the local backend's rule reads it from the same place: contended
    noise_read = TrialNoise.from_placement({"outside": record})
    assert noise_read is not None and trial_contended(noise_read)
    names = {m.name for m in noise.metrics()}
    assert {"outside_cpu_pct", "steal_pct", "loadavg_1m", "node_control_plane_cpu_pct"} <= names
    # without the pod's CPU time at both ends (its cgroup gone): the container's own count, else nothing
    gone = _snapshot(1.0, int(2.4 * t), 0, 2 * t, end, None)
    assert node_noise(_snapshot(0, 0, 0, 0, start, 5.0), gone, "uid") is None
    fallback = node_noise(_snapshot(0, 0, 0, 0, start, 5.0), gone, "uid", pod_cpu_s=0.9)
    assert fallback is not None and fallback.outside_cpu_pct == pytest.approx(140.0)
    assert "container's cgroup" in fallback.source


def test_off_the_node_the_kubelets_stats_summary_gives_the_outside_cpu() -> None:
    from nearmetal.backends.podnoise import parse_summary, summary_noise

    def summary(when: str, node_s: float, pod_s: float) -> dict:
        return {
            "node": {
                "cpu": {"time": when, "usageCoreNanoSeconds": int(node_s * 1e9)},
                "systemContainers": [{"name": "kubelet", "cpu": {"usageCoreNanoSeconds": int(node_s * 1e8)}}],
            },
            "pods": [
                {"podRef": {"name": "x", "uid": "other"}, "cpu": {"usageCoreNanoSeconds": 1}},
                {"podRef": {"name": "nm", "uid": "u27"}, "cpu": {"usageCoreNanoSeconds": int(pod_s * 1e9)}},
            ],
        }

    start = parse_summary(summary("2026-12-07T06:00:00Z", 100.0, 1.0), "u27")
    end = parse_summary(summary("2026-12-07T06:00:10Z", 118.0, 9.0), "u27")
    assert start is not None and end is not None
    noise = summary_noise(start, end)
    assert noise is not None and noise.source == "kubelet stats summary"
    assert noise.outside_cpu_pct == pytest.approx(100.0)  # (18 − 8) CPU-s over 10 s
    assert noise.to_dict()["split_pct"]["kubelet"] == pytest.approx(18.0)
    assert parse_summary({"node": {}}, "u27") is None
    assert summary_noise(start, parse_summary(summary("2026-12-07T06:00:10Z", 118.0, 9.0), "gone")) is None


def test_off_the_node_a_pod_gone_from_the_summary_counts_its_containers_own_cpu() -> None:
    """What the real kubelet does: a pod is in no summary before cAdvisor's first sample of it, and in none
    after its container ended, so both ends of its window lack it; its container's own count over the
    program stands in, the part of the program inside the window."""
    from nearmetal.backends.podevidence import program_span
    from nearmetal.backends.podnoise import parse_summary, summary_noise

    def node(when: str, node_s: float) -> dict:
        return {"node": {"cpu": {"time": when, "usageCoreNanoSeconds": int(node_s * 1e9)}}, "pods": []}

    start = parse_summary(node("2026-12-07T06:00:00Z", 100.0), "u27")
    end = parse_summary(node("2026-12-07T06:00:10Z", 118.0), "u27")
    assert start is not None and end is not None and start.pod_ns is None
    assert summary_noise(start, end) is None  # without the container's count: nothing to tell
    t0 = start.node_time
    # the program ran 2 s → 14 s after the window's start: 8 of its 12 s inside; 12 CPU-s, 8 of them inside
    sections = {
        "before": {"time_ns": str(int((t0 + 2) * 1e9))},
        "after": {"time_ns": str(int((t0 + 14) * 1e9))},
    }
    span = program_span(sections)
    assert span is not None and span[1] - span[0] == pytest.approx(12.0)
    noise = summary_noise(start, end, 12.0, span)
    assert noise is not None and noise.pod_cpu_s == pytest.approx(8.0)
    assert noise.outside_cpu_pct == pytest.approx(100.0)  # (18 − 8) CPU-s over 10 s
    assert noise.source.startswith("kubelet stats summary") and "67% of its program" in noise.source
    assert program_span({"before": {"time_ns": "5"}}) is None


def test_the_pod_table_shows_qos_shares_quota_throttling_and_outside_cpu() -> None:
    from nearmetal.report.studies.pods import outside_text, shares_text

    placements = [
        {
            "cpu_quota": {"quota_us": None, "period_us": 100_000, "cpu_shares": 819},
            "outside": {"outside_cpu_pct": 20.0, "split_pct": {"control_plane": 6.0, "kubelet": 2.0}},
        },
        {
            "cpu_quota": {"quota_us": None, "period_us": 100_000, "cpu_shares": 819},
            "outside": {"outside_cpu_pct": 30.0, "split_pct": {"control_plane": 8.0, "containerd": 2.0}},
        },
    ]
    assert shares_text(placements) == "819"
    assert outside_text(placements) == "25.0 (cluster 9.0)"
    assert shares_text([{"kubernetes": {"pod_cgroup": {"cpu_weight": 1}}}]) == "weight 1"
    assert outside_text([{}]) == "–" and shares_text([{}]) == "–"
