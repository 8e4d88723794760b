"""Parsers of the network workloads on recorded outputs of several program versions (tests/data/)."""

from __future__ import annotations

import json

import pytest
from paths import DATA

from nearmetal.tools.tcprr import percentile, summarize
from nearmetal.workloads.base import ParseError
from nearmetal.workloads.iperf3 import parse_iperf3_json
from nearmetal.workloads.mpi import parse_osu, size_label
from nearmetal.workloads.tcprr import parse_tcprr_json


def by_name(metrics):
    return {m.name: m for m in metrics}


@pytest.mark.parametrize(
    "name", ["iperf3-3.1.3-tcp-P2.json", "iperf3-3.12-tcp-P2.json", "iperf3-3.16-tcp-P2.json"]
)
def test_iperf3_json_across_versions(name: str) -> None:
    doc = json.loads((DATA / name).read_text())
    m = by_name(parse_iperf3_json((DATA / name).read_text()))
    # the receiver's rate is what arrived; it is the headline number
    assert m["throughput_Gbps"].value == pytest.approx(doc["end"]["sum_received"]["bits_per_second"] / 1e9)
    assert m["throughput_Gbps"].direction == "higher" and m["throughput_Gbps"].unit == "Gbit/s"
    assert m["retransmits"].value == doc["end"]["sum_sent"]["retransmits"]
    assert m["client_cpu_pct"].value == pytest.approx(doc["end"]["cpu_utilization_percent"]["host_total"])
    assert m["server_cpu_pct"].value == pytest.approx(doc["end"]["cpu_utilization_percent"]["remote_total"])
    assert len(m["interval_Gbps"].values) == len(doc["intervals"])


def test_iperf3_error_and_garbage_are_parse_errors() -> None:
    with pytest.raises(ParseError, match="Connection refused"):
        parse_iperf3_json((DATA / "iperf3-3.12-refused.json").read_text())
    with pytest.raises(ParseError, match="-J"):
        parse_iperf3_json("Connecting to host 127.0.0.1, port 5201\n[  5] local ...")
    with pytest.raises(ParseError, match="cut short"):
        parse_iperf3_json((DATA / "iperf3-3.12-tcp-P2.json").read_text()[:500])


def test_iperf3_udp_client_report() -> None:
    # 0-complexity/selfhealing: iperf 3.1.3, -u -k 10000 -b 1000M -J (end.sum only, no sum_received)
    m = by_name(parse_iperf3_json((DATA / "iperf3-3.1.3-udp-client.json").read_text()))
    assert m["udp_jitter_ms"].value == pytest.approx(0.092) and m["udp_jitter_ms"].direction == "lower"
    assert m["udp_lost_packets"].value == 69 and m["udp_packets"].value == 9996
    assert m["udp_lost_pct"].value == pytest.approx(0.690276) and m["udp_lost_pct"].unit == "%"
    assert m["sent_Gbps"].value == pytest.approx(0.834711189017002)
    # what arrived: the sent rate less the lost datagrams
    assert m["throughput_Gbps"].value == pytest.approx(0.834711189017002 * (9996 - 69) / 9996)
    assert m["test_s"].value == pytest.approx(0.785134)
    # a client's report: host is the client, remote the server
    assert m["client_cpu_pct"].value == pytest.approx(17.769540)
    assert m["server_cpu_pct"].value == pytest.approx(0.136453)


def test_iperf3_udp_server_report_labels_the_servers_cpu() -> None:
    # vivekvk-prog/IPERF-Json-to-graph-Plot: iperf 3.7 server (-s -J) of a -t 0 UDP test its client stopped
    text = (DATA / "iperf3-3.7-udp-server.json").read_text()
    with pytest.raises(ParseError, match="the client has terminated"):
        parse_iperf3_json(text)  # a trial of ours that ends so is not a measurement
    m = by_name(parse_iperf3_json(text, allow_interrupted=True))
    # host_total 7.607… is the server's own CPU; its remote (client) figures are all 0: not reported
    assert m["server_cpu_pct"].value == pytest.approx(7.6072439543206736)
    assert "client_cpu_pct" not in m
    assert m["udp_jitter_ms"].value == pytest.approx(0.027511477464460966)
    assert m["udp_lost_packets"].value == 1516392 and m["udp_packets"].value == 5762668
    assert m["udp_lost_pct"].value == pytest.approx(26.314061472914975)
    # end.sum says 0 bytes: the rate is the intervals' bytes over 0..133.000007 s, the last interval
    # (printed twice by that iperf3) counted once
    doc = json.loads(text)
    sums = {(i["sum"]["start"], i["sum"]["end"]): i["sum"]["bytes"] for i in doc["intervals"]}
    assert len(sums) == len(doc["intervals"]) - 1
    assert m["throughput_Gbps"].value == pytest.approx(sum(sums.values()) * 8 / 133.000007 / 1e9)
    assert len(m["interval_Gbps"].values) == len(sums)


def test_tcprr_client_output() -> None:
    m = by_name(parse_tcprr_json("some banner\n" + (DATA / "tcprr-v1-client.json").read_text()))
    assert m["rtt_p50_us"].direction == "lower" and m["rtt_p50_us"].unit == "µs"
    assert m["rtt_p50_us"].value <= m["rtt_p99_us"].value <= m["rtt_p99_9_us"].value <= m["rtt_max_us"].value
    assert m["transactions_per_s"].direction == "higher"
    with pytest.raises(ParseError, match="transactions_per_s"):
        parse_tcprr_json("listening on 0.0.0.0 5000\n")


def test_tcprr_summary_statistics() -> None:
    rtts_ns = [1000 * v for v in range(1, 101)]  # 1..100 µs
    s = summarize(rtts_ns, elapsed_s=0.5, size=1)
    assert s["transactions"] == 100 and s["transactions_per_s"] == 200
    assert s["rtt_mean_us"] == pytest.approx(50.5)
    assert s["rtt_p50_us"] == pytest.approx(50.5)
    assert s["rtt_p99_us"] == pytest.approx(99.01)
    assert percentile([5.0], 99) == 5.0


@pytest.mark.parametrize(
    ("name", "metric", "value", "small", "large"),
    [
        (
            "osu-5.6.3-latency.txt",
            "latency_8B_us",
            0.24,
            ("latency_small_us", 0.24),
            ("latency_large_us", 603.70),
        ),
        (
            "osu-7.3-latency.txt",
            "latency_1MiB_us",
            436.13,
            ("latency_small_us", 1.86),
            ("latency_large_us", 436.13),
        ),
        ("osu-5.8-bw.txt", "bw_1MiB_MBps", 11279.40, ("bw_small_MBps", 2.87), ("bw_large_MBps", 11393.08)),
        (
            "osu-7.3-allreduce-full.txt",
            "allreduce_8KiB_us",
            36.13,
            ("allreduce_small_us", 4.71),
            ("allreduce_large_us", 2901.55),
        ),
    ],
)
def test_osu_outputs_across_versions(name, metric, value, small, large) -> None:
    m = by_name(parse_osu((DATA / name).read_text()))
    assert m[metric].value == pytest.approx(value)
    assert m[small[0]].value == pytest.approx(small[1])  # smallest size > 0 (OSU 5 starts at 0 bytes)
    assert m[large[0]].value == pytest.approx(large[1])
    assert m[metric].source == "osu"


def test_osu_directions_and_the_mpi4py_form() -> None:
    m = by_name(parse_osu((DATA / "nearmetal-mpi4py-osu.txt").read_text()))
    assert {"latency_small_us", "bw_large_MBps", "allreduce_small_us", "allreduce_large_us"} <= set(m)
    assert m["latency_small_us"].direction == "lower" and m["bw_large_MBps"].direction == "higher"
    assert m["bw_large_MBps"].unit == "MB/s" and m["latency_8B_us"].unit == "µs"


def test_osu_aborted_and_foreign_output() -> None:
    with pytest.raises(ParseError, match="no result lines"):
        parse_osu((DATA / "osu-aborted.txt").read_text())
    with pytest.raises(ParseError, match="not OSU"):
        parse_osu("Loop time of 0.75 on 2 procs")


def test_osu_output_starting_with_a_byte_order_mark() -> None:
    # hpc-cofc/generic-benchmarks latency/compute001.log (OSU 5.3.2) with a UTF-8 BOM in front
    raw = (DATA / "osu-5.3.2-latency-bom.txt").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf# OSU MPI Latency Test v5.3.2")
    m = by_name(parse_osu(raw.decode("utf-8")))
    assert m["latency_8B_us"].value == pytest.approx(1.15)
    assert m["latency_small_us"].value == pytest.approx(1.14)  # 1 byte, the smallest size > 0
    assert m["latency_large_us"].value == pytest.approx(355.08)  # 4 MiB
    assert m["latency_1MiB_us"].value == pytest.approx(103.43)


def test_size_labels() -> None:
    assert [size_label(s) for s in (1, 8, 1000, 1024, 65536, 1 << 20)] == [
        "1B",
        "8B",
        "1000B",
        "1KiB",
        "64KiB",
        "1MiB",
    ]


# --- per-iteration statistics (nearmetal.tools.iterstats) -----------------------------------------------


def _mixture(n: int, slow_fraction: float, fast_us: float = 5.0, slow_us: float = 4000.0, seed: int = 1):
    """Round trips as a busy host makes them: most near ``fast_us`` (±20%), a share near ``slow_us``."""
    import random

    rng = random.Random(seed)
    n_slow = round(n * slow_fraction)
    fast = [fast_us * rng.uniform(0.8, 1.2) for _ in range(n - n_slow)]
    slow = [slow_us * rng.uniform(0.5, 1.5) for _ in range(n_slow)]
    return sorted(fast + slow)


def test_bimodality_finds_the_slow_group_the_mean_hides() -> None:
    from nearmetal.tools.iterstats import bimodality
    from nearmetal.tools.iterstats import summarize as iteration_stats

    values = _mixture(2000, 0.012)
    s = iteration_stats(values)
    assert s["bimodal"] == 1.0
    assert s["slow_pct"] == pytest.approx(1.2)
    assert 400 < s["mode_ratio"] < 1200
    # the mean is decided by the 1.2% slow iterations; the median is not
    assert s["mean"] > 8 * s["p50"] and 4 < s["p50"] < 6
    modes = bimodality(values)
    assert 4 < modes["fast"] < 6 and 2000 < modes["slow"] < 6000


def test_bimodality_leaves_one_mode_and_rare_outliers_alone() -> None:
    from nearmetal.tools.iterstats import summarize as iteration_stats

    # one group spread over ±20%: no empty gap wide enough
    assert iteration_stats(_mixture(2000, 0.0))["bimodal"] == 0.0
    # a heavy but continuous tail (1..100 µs): no two groups
    assert iteration_stats([float(v) for v in range(1, 101)])["bimodal"] == 0.0
    # 0.2% slow iterations: below the 1% a mode needs; they are p99.9 material, not a second mode
    s = iteration_stats(_mixture(2000, 0.002))
    assert s["bimodal"] == 0.0 and s["slow_pct"] == 0.0 and s["mode_ratio"] == 1.0
    # a whole trial in the slow group (both ranks on one CPU) is one mode too: the cell's trials show it
    assert iteration_stats(_mixture(500, 1.0))["bimodal"] == 0.0


def test_osu_mpi4py_per_iteration_lines_and_rank_placement() -> None:
    """A real run of nearmetal.tools.osu (2 pinned ranks, latency/bw/allreduce): OSU's mean per size plus
    the iterations' median, p99 and bimodality, and where each rank ran."""
    from nearmetal.workloads.base import TrialOutput
    from nearmetal.workloads.mpi import MpiWorkload

    text = (DATA / "nearmetal-mpi4py-osu-v2.txt").read_text()
    m = by_name(parse_osu(text))
    for test in ("latency", "allreduce"):
        p50, p99, mean = (m[f"{test}_small_{k}"] for k in ("p50_us", "p99_us", "us"))
        assert p50.unit == "µs" and p50.direction == "lower" and p50.source == "osu"
        assert 0 < p50.value <= p99.value
        assert m[f"{test}_small_bimodal"].value in (0.0, 1.0)
        assert m[f"{test}_small_slow_pct"].unit == "%"
        assert mean.value > 0
    assert m["latency_8B_p50_us"].value == m["latency_small_p50_us"].value
    assert m["latency_64KiB_p50_us"].value == m["latency_large_p50_us"].value
    assert "bw_large_MBps" in m and "bw_large_p50_us" not in m  # bandwidth has no per-iteration times
    # the workload leads with the median
    assert MpiWorkload.primary_metric == "latency_small_p50_us"
    placement = MpiWorkload().placement(TrialOutput(stdout=text, stderr=""))
    ranks = placement["mpi_ranks"]
    assert ranks["pinned"] is True
    assert [r["rank"] for r in ranks["ranks"]] == [0, 1]
    assert [len(r["cpus"]) for r in ranks["ranks"]] == [1, 1]
    assert ranks["ranks"][0]["cpus"] != ranks["ranks"][1]["cpus"]  # recorded on a 2-CPU host
    assert len(placement["load_avg"]["start"]) == 3 and len(placement["load_avg"]["end"]) == 3


def test_osu_binaries_output_has_no_iteration_metrics() -> None:
    m = by_name(parse_osu((DATA / "osu-7.3-latency.txt").read_text()))
    assert not [n for n in m if n.endswith(("_p50_us", "_bimodal"))]


def test_tcprr_v2_client_output_reports_its_modes() -> None:
    m = by_name(parse_tcprr_json((DATA / "tcprr-v2-client.json").read_text()))
    assert m["rtt_p50_us"].value <= m["rtt_p99_us"].value
    assert m["rtt_bimodal"].value in (0.0, 1.0) and m["rtt_bimodal"].direction == "lower"
    assert m["rtt_slow_pct"].unit == "%" and m["rtt_mode_ratio"].value >= 1.0
    # version 1 (no mode fields) still parses
    assert "rtt_bimodal" not in by_name(parse_tcprr_json((DATA / "tcprr-v1-client.json").read_text()))


def test_trial_medians_in_two_groups_get_a_caveat() -> None:
    """Issue 17's cell: trials at ~6 µs or ~3,900 µs (both ranks on one CPU in some) are not one distribution."""
    from nearmetal.report.studies.net_paths import trial_groups

    text = trial_groups([6.1, 3900.0, 5.8, 3870.0, 6.3], "µs")
    assert text is not None and "two groups" in text and "µs" in text
    assert trial_groups([5.1, 5.6, 6.3, 5.9, 7.2], "µs") is None  # ordinary spread
    assert trial_groups([5.0], "µs") is None
