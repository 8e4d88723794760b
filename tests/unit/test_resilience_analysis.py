"""Availability and recovery analysis (pure), the request log format, the service workloads' parsers on
recorded outputs, and the resilience layers' configuration checks (no root needed)."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
from paths import DATA as ALL_DATA
from pydantic import ValidationError

from nearmetal.analysis.resilience import Fault, RequestLog, faults_from_events, summarize, timeline
from nearmetal.layers.clusters import ClustersConfig, haproxy_conf, nginx_balancer_conf
from nearmetal.layers.fault import FaultConfig
from nearmetal.tools import requestlog
from nearmetal.workloads import get_workload
from nearmetal.workloads.base import ParseError, TrialOutput
from nearmetal.workloads.service import HttpLoadParams, summary_metrics

DATA = ALL_DATA / "resilience"
T0 = 1_700_000_000.0


def steady_log(rate: float = 100.0, seconds: float = 10.0, latency: float = 0.002) -> dict[str, list]:
    n = int(rate * seconds)
    return {
        "start": [T0 + i / rate for i in range(n)],
        "latency_s": [latency] * n,
        "outcome": ["ok"] * n,
        "backend": ["c1-0" if i % 2 else "c2-0" for i in range(n)],
    }


def as_log(cols: dict[str, list]) -> RequestLog:
    return RequestLog.of(cols["start"], cols["latency_s"], cols["outcome"], cols["backend"])


def test_no_fault_is_full_availability_and_no_recovery_metrics():
    s = summarize(as_log(steady_log()))
    assert s.availability_pct == 100.0
    assert not s.faulted and s.detect_s is None and s.recover_s is None and s.requests_lost is None
    assert s.rate_before_rps == pytest.approx(100.0, rel=0.02)
    assert s.latency_us["all"]["p50"] == pytest.approx(2000.0)
    assert s.served_by["before"] == {"c1-0": 500, "c2-0": 500}
    names = {m.name for m in summary_metrics(s)}
    assert {"availability_pct", "errors", "latency_p99_us", "throughput_rps"} <= names
    assert not names & {"detect_s", "recover_s", "latency_during_p99_us"}


def test_half_the_requests_fail_until_the_balancer_notices():
    """Fault at 5 s; the replica c1 is dead: every c1 request started in [5.0, 5.4) fails after a 1 s client
    timeout; from 5.4 s the balancer sends everything to c2."""
    cols = steady_log()
    for i, start in enumerate(cols["start"]):
        t = start - T0
        if 5.0 <= t < 5.4 and cols["backend"][i] == "c1-0":
            cols["outcome"][i], cols["latency_s"][i], cols["backend"][i] = "timeout", 1.0, ""
        elif t >= 5.4:
            cols["backend"][i] = "c2-0"
    s = summarize(as_log(cols), [Fault(T0 + 5.0)])
    assert s.requests_failed == 20
    assert s.errors_by_kind == {"timeout": 20}
    assert s.availability_pct == pytest.approx(98.0)
    # the first failed request was sent at 5.01 (detect) and timed out 1 s later (seen)
    assert s.detect_s == pytest.approx(0.01, abs=1e-6)
    assert s.first_error_seen_s == pytest.approx(1.01, abs=1e-6)
    # the first success that starts an error-free stretch: 5.40 + 2 ms
    assert s.recover_s == pytest.approx(0.402, abs=1e-6)
    assert s.detect_s <= s.recover_s
    assert s.steady_s == pytest.approx(0.40, abs=0.06)
    assert s.requests_lost == 20
    assert s.served_by["during"] == {"c2-0": 20} or "c2-0" in s.served_by["during"]
    assert set(s.phases) == {"before", "during", "after"}
    assert s.phase_availability_pct["before"] == 100.0


def test_timeline_reads_in_order_when_a_request_in_flight_times_out_late():
    """Failover as measured (issue 17): a request sent just before the fault to the dying backend times out
    0.5 s later, while requests sent after the fault fail fast for 0.3 s and then the survivor answers.
    detect (by sending) ≤ recover ≤ when the client saw the timeout."""
    cols = steady_log()
    for i, start in enumerate(cols["start"]):
        t = start - T0
        if 4.985 <= t < 4.995:
            cols["outcome"][i], cols["latency_s"][i] = "timeout", 0.5
        elif 5.0 <= t < 5.3:
            cols["outcome"][i], cols["latency_s"][i] = "refused", 0.001
    s = summarize(as_log(cols), [Fault(T0 + 5.0)])
    assert s.requests_failed >= 2
    # the in-flight request was sent before the injection: the fault was visible at once
    assert s.detect_s == 0.0
    assert s.recover_s == pytest.approx(0.302, abs=0.011)
    assert s.first_error_seen_s == pytest.approx(0.001, abs=1e-3)
    assert s.detect_s <= s.recover_s
    # only the in-flight timeout fails: the client sees it after the recovery; detect still comes first
    cols = steady_log()
    for i, start in enumerate(cols["start"]):
        if 4.985 <= start - T0 < 4.995:
            cols["outcome"][i], cols["latency_s"][i] = "timeout", 0.5
    s = summarize(as_log(cols), [Fault(T0 + 5.0)])
    assert s.first_error_seen_s > s.recover_s >= s.detect_s == 0.0


def test_a_fault_that_never_stops_is_not_recovered():
    cols = steady_log()
    for i, start in enumerate(cols["start"]):
        if start - T0 >= 5.0 and i % 2:
            cols["outcome"][i] = "http_503"
    s = summarize(as_log(cols), [Fault(T0 + 5.0)])
    assert s.recover_s is None and s.steady_s is None
    assert any("not recovered" in n for n in s.notes)
    assert s.availability_pct == pytest.approx(75.0)
    assert s.phase_availability_pct["during"] == pytest.approx(50.0)
    metrics = {m.name: m.value for m in summary_metrics(s)}
    assert metrics["recovered"] == 0.0
    assert "recover_s" not in metrics
    assert metrics["errors_http_503"] == 250


def test_no_error_at_all_means_recovery_zero_and_no_detection():
    s = summarize(as_log(steady_log()), [Fault(T0 + 5.0, T0 + 6.0)])
    assert s.requests_failed == 0 and s.detect_s is None and s.recover_s == 0.0
    assert s.phases["during"] == (T0 + 5.0, T0 + 6.0)


def test_steady_state_after_healing_waits_for_every_backend_to_serve_again():
    cols = steady_log()
    for i, start in enumerate(cols["start"]):
        if 5.0 <= start - T0 < 7.5:  # c1 scaled to zero and taken out: c2 serves all
            cols["backend"][i] = "c2-0"
    s = summarize(as_log(cols), [Fault(T0 + 5.0, T0 + 7.0)])
    # healed at 7 s but c1 serves again only from 7.5 s
    assert s.steady_s == pytest.approx(2.5, abs=0.06)
    assert s.recover_s == 0.0


def test_requests_never_sent_count_as_lost_in_a_closed_loop():
    cols = steady_log()
    keep = [i for i, start in enumerate(cols["start"]) if not (5.0 <= start - T0 < 6.0)]
    cols = {k: [v[i] for i in keep] for k, v in cols.items()}
    # the one request that hung for the whole second
    cols["start"].append(T0 + 5.0)
    cols["latency_s"].append(1.0)
    cols["outcome"].append("timeout")
    cols["backend"].append("")
    s = summarize(as_log(cols), [Fault(T0 + 5.0)])
    assert s.requests_failed == 1
    assert s.requests_lost == pytest.approx(100, abs=3)


def test_timeline_bins_add_up():
    cols = steady_log()
    cols["outcome"][300] = "refused"
    log = as_log(cols)
    tl = timeline(log, bin_s=0.5)
    assert sum(tl.ok) == 999 and sum(tl.errors["refused"]) == 1
    assert len(tl.ok) == 20
    assert sum(tl.by_backend["c1-0"]) + sum(tl.by_backend["c2-0"]) == 999
    assert tl.p99_ms[0] == pytest.approx(2.0)


def test_faults_are_matched_by_id():
    events = [
        {
            "time": 5.0,
            "kind": "fault-injected",
            "detail": {"id": "a", "action": "kill", "target": "cluster:c1"},
        },
        {"time": 6.0, "kind": "fault-injected", "detail": {"id": "b", "action": "pause", "target": "lb"}},
        {"time": 7.0, "kind": "fault-healed", "detail": {"id": "b"}},
        {"time": 8.0, "kind": "fault-healed", "detail": {"id": "zzz"}},
    ]
    faults = faults_from_events(events)
    assert faults == [Fault(5.0, None, "kill", "cluster:c1"), Fault(6.0, 7.0, "pause", "lb")]


def test_an_empty_log_is_refused():
    with pytest.raises(ValueError, match="empty"):
        summarize(RequestLog.of([], [], []))


# --- the request log file --------------------------------------------------------------------------------


def test_request_log_round_trip(tmp_path: Path):
    path = tmp_path / "r.tsv.gz"
    rows = [(0.0, 0.0015, "ok", "c1-0"), (0.005, 1.0, "timeout", "")]
    assert requestlog.write(path, T0, rows, mode="rate") == 2
    back = requestlog.read(path)
    assert back.t0 == T0 and back.meta == {"mode": "rate"}
    assert back.start_s == [T0, T0 + 0.005]
    assert back.latency_s == [0.0015, 1.0]
    assert back.outcome == ["ok", "timeout"] and back.backend == ["c1-0", ""]


def test_request_log_errors_name_the_problem(tmp_path: Path):
    plain = tmp_path / "plain.tsv.gz"
    plain.write_text("not gzip")
    with pytest.raises(requestlog.RequestLogError, match="not a gzip'd request log"):
        requestlog.read(plain)
    wrong = tmp_path / "wrong.tsv.gz"
    with gzip.open(wrong, "wt") as f:
        f.write("start\tlatency\n")
    with pytest.raises(requestlog.RequestLogError, match="header"):
        requestlog.read(wrong)
    cut = tmp_path / "cut.tsv.gz"
    with gzip.open(cut, "wt") as f:
        f.write(f"{requestlog.MAGIC} t0={T0}\nstart_us\tlatency_us\toutcome\tbackend\n12\t34\n")
    with pytest.raises(requestlog.RequestLogError, match=":3: expected 4"):
        requestlog.read(cut)


# --- parsers on recorded trials (HAProxy with/without health checks, nearmetal's own replicas) -------------


def parsed(name: str) -> dict[str, float]:
    return {m.name: m.value for m in get_workload("http-load").parse_file(DATA / name)}


def test_recorded_steady_trial():
    m = parsed("http-steady")
    assert m["availability_pct"] == 100.0 and m["errors"] == 0
    assert m["requests"] == 1600 and m["throughput_rps"] == pytest.approx(200, rel=0.02)
    assert "detect_s" not in m


def test_recorded_kill_with_health_checks_recovers_in_under_a_second():
    m = parsed("http-kill-c1")
    assert m["recovered"] == 1.0
    assert 0 < m["recover_s"] < 1.0
    # HAProxy retries a refused connection with a turn-around delay, so the client's 1 s timeout expires
    # first: the client sees the first error after the recovery, but the fault was detected before it
    assert m["first_error_seen_s"] >= 1.0 and m["errors_timeout"] == m["errors"] > 0
    assert 0 <= m["detect_s"] <= m["recover_s"]
    assert 95 < m["availability_pct"] < 100


def test_recorded_kill_without_health_checks_never_recovers():
    m = parsed("http-kill-c1-nochecks")
    assert m["recovered"] == 0.0 and "recover_s" not in m
    assert m["availability_during_pct"] == pytest.approx(50, abs=3)


def test_recorded_scale_to_zero_and_back():
    m = parsed("http-zero-c1")
    assert m["recovered"] == 1.0
    # healed 2.4 s after the injection; steady state only once c1 serves again
    assert m["steady_s"] > 2.0
    assert m["latency_after_p99_us"] > 0


def test_parse_file_of_a_single_log_reads_faults_beside_it(tmp_path: Path):
    shutil.copytree(DATA / "http-kill-c1", tmp_path / "t")
    metrics = {m.name for m in get_workload("http-load").parse_file(tmp_path / "t" / "requests.tsv.gz")}
    assert "recover_s" in metrics


def test_events_carry_the_timeline():
    workload = get_workload("http-load")
    directory = DATA / "http-zero-c1"
    output = TrialOutput(
        stdout=(directory / "httpload.stdout").read_text(),
        stderr="",
        files={p.name: p for p in directory.iterdir()},
    )
    workload.parse(output)
    (event,) = workload.events(output)
    assert event["kind"] == "timeline"
    detail = event["detail"]
    assert set(detail["by_backend"]) == {"c1-0", "c2-0"}
    assert np.sum(detail["ok"]) + sum(np.sum(v) for v in detail["errors"].values()) == 1600


def test_parse_errors_say_what_is_missing(tmp_path: Path):
    workload = get_workload("http-load")
    with pytest.raises(ParseError, match="NEARMETAL_RESULT"):
        workload.parse(TrialOutput(stdout="", stderr=""))
    stdout = 'NEARMETAL_RESULT {"program":"httpload","format":1}'
    with pytest.raises(ParseError, match="no request log"):
        workload.parse(TrialOutput(stdout=stdout, stderr=""))
    empty = tmp_path / "requests.tsv.gz"
    requestlog.write(empty, T0, [])
    with pytest.raises(ParseError, match="no requests"):
        workload.parse(TrialOutput(stdout=stdout, stderr="", files={"requests.tsv.gz": empty}))
    with pytest.raises(ParseError, match="not the httpload program"):
        workload.parse(TrialOutput(stdout=stdout.replace("httpload", "ioprobe"), stderr=""))


def test_http_load_params():
    assert HttpLoadParams().rate_rps == 200.0
    with pytest.raises(ValidationError, match="either rate_rps"):
        HttpLoadParams(rate_rps=10, concurrency=2)
    with pytest.raises(ValidationError):
        HttpLoadParams(url="ftp://x/")


# --- layer configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"action": "netem", "target": "link:c1"}, "needs delay_ms"),
        ({"action": "link-down", "target": "cluster:c1"}, "cannot aim at 'cluster:c1'"),
        ({"action": "kill", "target": "link:c1"}, "cannot aim at"),
        ({"action": "kill", "heal": "watchdog", "target": "cluster:c1"}, "watchdog is for kill-fuse"),
        ({"action": "kill", "target": "role:server", "heal_after_s": 2}, "cannot be started again"),
        ({"action": "pause", "target": "lb", "signal": "TERM"}, "signal applies to kill"),
        ({"action": "kill"}, "needs a target"),
        ({"action": "kill", "target": "cluster:c1;rm"}, "String should match pattern"),
        ({"action": "kill-fuse", "heal": "watchdog", "heal_after_s": 1}, "drop heal_after_s"),
    ],
)
def test_fault_config_errors(config: dict, message: str):
    with pytest.raises(ValidationError, match=message):
        FaultConfig.model_validate({"layer": "fault", **config})


def test_fault_config_defaults():
    fuse = FaultConfig.model_validate({"layer": "fault", "action": "kill-fuse"})
    assert fuse.target == "mount" and fuse.signal_number == 9
    zero = FaultConfig.model_validate({"layer": "fault", "action": "scale-to-zero", "target": "cluster:c2"})
    assert zero.signal_number == 15 and zero.fault_id == "scale-to-zero:cluster:c2@5s"


def test_clusters_config_errors():
    with pytest.raises(ValidationError, match="cluster name 'Bad-Name'"):
        ClustersConfig.model_validate({"layer": "clusters", "clusters": ["Bad-Name"]})
    with pytest.raises(ValidationError, match="must differ"):
        ClustersConfig.model_validate({"layer": "clusters", "clusters": ["c1", "c1"]})
    with pytest.raises(ValidationError, match=r"delay_ms names unknown clusters \['c3'\]"):
        ClustersConfig.model_validate({"layer": "clusters", "delay_ms": {"c3": 5}})


def test_load_balancer_configurations(tmp_path: Path):
    backends = [("c1-0", "198.18.1.2", 8081), ("c2-0", "198.18.2.2", 8081)]
    checked = haproxy_conf(ClustersConfig(check_interval_ms=100, fall=3), backends)
    assert "option httpchk GET /healthz" in checked
    assert "server c1-0 198.18.1.2:8081 check inter 100ms fall 3 rise 2" in checked
    unchecked = haproxy_conf(ClustersConfig(health_checks=False, redispatch=True), backends)
    assert " check" not in unchecked and "option redispatch 1" in unchecked
    conf = nginx_balancer_conf(tmp_path, ClustersConfig(health_checks=False), backends).read_text()
    assert "max_fails=0" in conf and "proxy_next_upstream off" in conf
    conf = nginx_balancer_conf(tmp_path, ClustersConfig(), backends).read_text()
    assert "max_fails=1 fail_timeout=2s" in conf and "proxy_next_upstream error timeout" in conf


def test_estimates_show_their_interval_only_when_there_is_one():
    from nearmetal.report.availability import Estimate

    assert Estimate(1.1, 0.92, 1.28, 5).text() == "1.10 [0.92, 1.28]"
    assert Estimate(100.0, 100.0, 100.0, 3).text() == "100"
    assert Estimate(2.5, None, None, 1).text() == "2.50"
    assert Estimate(float("nan"), None, None, 0).text() == "–"
