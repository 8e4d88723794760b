"""The fio workload: its parser on recorded outputs of several fio versions (3.33 recorded here with several
job shapes; 2.2.10, 2.6 and 3.1 written from fio's documented schemas; 3.16 with stonewalled groups from a
public repository, see data/README.md), its job, and real fio runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from paths import DATA

from nearmetal.errors import NearmetalError
from nearmetal.units import parse_size
from nearmetal.workloads.base import ParseError, WorkloadContext
from nearmetal.workloads.fio import FioWorkload
from nearmetal.workloads.fio.job import FioParams, job_options
from nearmetal.workloads.fio.layout import check_sizes
from nearmetal.workloads.fio.parse import parse_fio_json


def metrics_of(name: str) -> dict[str, float]:
    return {m.name: m.value for m in parse_fio_json((DATA / name).read_text())}


def test_fio_2x_latencies_are_microseconds_and_io_bytes_kib() -> None:
    m = metrics_of("fio-2.2.10-randread-group-json.json")
    assert m["bw_MiBps"] == pytest.approx(237226 / 1024)
    assert m["iops"] == pytest.approx(3706.66)
    assert m["io_MiB"] == pytest.approx(7116800 / 1024)  # 2.x io_bytes is KiB
    assert m["clat_mean_us"] == pytest.approx(8612.40)
    assert m["clat_p50_us"] == 12000 and m["clat_p95_us"] == 30000
    assert m["clat_p99_us"] == 45000 and m["clat_p99_9_us"] == 60000
    assert m["fio_usr_cpu_pct"] == pytest.approx(1.25) and m["fio_sys_cpu_pct"] == pytest.approx(6.75)
    assert m["direct_io"] == 1
    # the empty write and trim sides add nothing and make no read_/write_ metrics
    assert not any(k.startswith(("read_", "write_")) for k in m)


def test_fio_31_nanoseconds_and_duplicate_keys() -> None:
    text = (DATA / "fio-3.1-randread-dupkeys-json.json").read_text()
    assert text.count('"0.00" : 0') > 1 and text.count('"filename"') == 2
    m = metrics_of("fio-3.1-randread-dupkeys-json.json")
    assert m["clat_mean_us"] == pytest.approx(311.390134141)
    assert m["lat_mean_us"] == pytest.approx(351.322981736)
    assert m["clat_p99_us"] == pytest.approx(987.136)
    assert m["clat_p99_9_us"] == pytest.approx(3686.4)
    assert m["io_MiB"] == pytest.approx(100.0)  # 3.x io_bytes is bytes
    assert m["bw_MiBps"] == pytest.approx(11155 / 1024)


def test_fio_26_client_stats_mixed_side_with_total_latency_only() -> None:
    m = metrics_of("fio-2.6-client-mixed-json.json")
    assert m["bw_MiBps"] == pytest.approx(16653 / 1024)
    assert m["iops"] == pytest.approx(2252.49)
    assert m["lat_mean_us"] == pytest.approx(1782.92)
    assert "clat_p99_us" not in m  # fio printed no percentiles: none are invented


def test_fio_333_group_reporting_jsonplus_recorded_here() -> None:
    doc = json.loads((DATA / "fio-3.33-randread-libaio-group-jsonplus.json").read_text())
    read = doc["jobs"][0]["read"]
    m = metrics_of("fio-3.33-randread-libaio-group-jsonplus.json")
    assert len(doc["jobs"]) == 1
    assert m["bw_MiBps"] == pytest.approx(read["bw"] / 1024)
    assert m["clat_p99_us"] == pytest.approx(read["clat_ns"]["percentile"]["99.000000"] / 1000)
    assert m["clat_p99_9_us"] == pytest.approx(read["clat_ns"]["percentile"]["99.900000"] / 1000)


def test_fio_333_per_job_entries_are_summed_and_percentiles_merged_from_histograms() -> None:
    doc = json.loads((DATA / "fio-3.33-write-psync-perjob-jsonplus.json").read_text())
    jobs = doc["jobs"]
    assert len(jobs) == 3
    m = metrics_of("fio-3.33-write-psync-perjob-jsonplus.json")
    assert m["bw_MiBps"] == pytest.approx(sum(j["write"]["bw"] for j in jobs) / 1024)
    assert m["iops"] == pytest.approx(sum(j["write"]["iops"] for j in jobs))
    # the merged p99 lies within the per-job p99s (exact from the json+ bins)
    p99s = [j["write"]["clat_ns"]["percentile"]["99.000000"] / 1000 for j in jobs]
    assert min(p99s) <= m["clat_p99_us"] <= max(p99s)
    ios = [j["write"]["total_ios"] for j in jobs]
    means = [j["write"]["clat_ns"]["mean"] / 1000 for j in jobs]
    assert m["clat_mean_us"] == pytest.approx(sum(a * b for a, b in zip(ios, means, strict=True)) / sum(ios))


def test_fio_333_mixed_read_write_gives_both_sides() -> None:
    doc = json.loads((DATA / "fio-3.33-randrw-libaio-group-json.json").read_text())
    job = doc["jobs"][0]
    m = metrics_of("fio-3.33-randrw-libaio-group-json.json")
    assert m["read_bw_MiBps"] == pytest.approx(job["read"]["bw"] / 1024)
    assert m["write_bw_MiBps"] == pytest.approx(job["write"]["bw"] / 1024)
    assert m["bw_MiBps"] == pytest.approx(m["read_bw_MiBps"] + m["write_bw_MiBps"])
    assert m["write_clat_p99_us"] == pytest.approx(job["write"]["clat_ns"]["percentile"]["99.000000"] / 1000)


def test_fio_mixed_read_write_without_bins_claims_no_combined_percentile() -> None:
    # json (no json+ bins): a p99 over reads and writes cannot be made from the two sides' p99s
    m = metrics_of("fio-3.33-randrw-libaio-group-json.json")
    assert "read_clat_p99_us" in m and "write_clat_p99_us" in m
    assert not any(k in m for k in ("clat_p50_us", "clat_p95_us", "clat_p99_us", "clat_p99_9_us"))


def test_fio_mixed_read_write_jsonplus_combined_p99_from_merged_bins() -> None:
    # recorded here (fio 3.33, randrw 70/30, psync, json+): both sides carry clat_ns bins
    doc = json.loads((DATA / "fio-3.33-randrw-psync-group-jsonplus.json").read_text())
    job = doc["jobs"][0]
    m = metrics_of("fio-3.33-randrw-psync-group-jsonplus.json")
    assert m["read_clat_p99_us"] == pytest.approx(job["read"]["clat_ns"]["percentile"]["99.000000"] / 1000)
    assert m["write_clat_p99_us"] == pytest.approx(job["write"]["clat_ns"]["percentile"]["99.000000"] / 1000)
    merged: dict[int, int] = {}
    for side in ("read", "write"):
        for ns, count in job[side]["clat_ns"]["bins"].items():
            merged[int(ns)] = merged.get(int(ns), 0) + count
    total, running = sum(merged.values()), 0
    for ns in sorted(merged):  # the smallest latency at or below which 99 % of all I/Os completed
        running += merged[ns]
        if running >= total * 0.99:
            break
    assert m["clat_p99_us"] == pytest.approx(ns / 1000)
    # not the I/O-weighted mean of the two sides' p99s
    ios = job["read"]["total_ios"], job["write"]["total_ios"]
    mean = (m["read_clat_p99_us"] * ios[0] + m["write_clat_p99_us"] * ios[1]) / sum(ios)
    assert m["clat_p99_us"] != pytest.approx(mean)


def test_fio_stonewall_groups_are_reported_per_group() -> None:
    # cbrowet-axway/performance_testing IO_perf/README.md: fio 3.16, three stonewalled groups of randrw
    doc = json.loads((DATA / "fio-3.16-randrw-stonewall-3groups-json.json").read_text())
    assert [j["groupid"] for j in doc["jobs"]] == [0, 1, 2]
    m = metrics_of("fio-3.16-randrw-stonewall-3groups-json.json")
    for job in doc["jobs"]:
        g = f"g{job['groupid']}_"
        assert m[f"{g}read_bw_MiBps"] == pytest.approx(job["read"]["bw"] / 1024)
        assert m[f"{g}write_bw_MiBps"] == pytest.approx(job["write"]["bw"] / 1024)
        assert m[f"{g}bw_MiBps"] == pytest.approx((job["read"]["bw"] + job["write"]["bw"]) / 1024)
        assert m[f"{g}iops"] == pytest.approx(job["read"]["iops"] + job["write"]["iops"])
        assert m[f"{g}fio_usr_cpu_pct"] == pytest.approx(job["usr_cpu"])
    assert m["g1_bw_MiBps"] == pytest.approx((120859 + 120972) / 1024)
    assert m["g1_read_clat_p99_us"] == pytest.approx(2965.504)
    assert m["g2_write_clat_p99_us"] == pytest.approx(4227.072)
    assert m["g0_read_clat_mean_us"] == pytest.approx(522.014600546)
    # nothing summed or averaged across groups that ran one after another
    assert not any(k in m for k in ("bw_MiBps", "iops", "clat_mean_us", "fio_usr_cpu_pct"))
    # json without bins: per-direction p99s only, in each group
    assert not any(k in m for k in ("g0_clat_p99_us", "g1_clat_p99_us", "g2_clat_p99_us"))
    assert max(len(k) for k in m) <= 128


def test_text_before_the_json_and_buffered_mode() -> None:
    text = (DATA / "fio-3.33-read-buffered-note.json").read_text()
    assert text.startswith("note:")
    m = metrics_of("fio-3.33-read-buffered-note.json")
    assert m["direct_io"] == 0 and m["bw_MiBps"] > 0


def test_console_output_with_crlf_and_kernel_noise() -> None:
    # what a VM's serial console gives: CR LF line ends and boot messages around the document
    body = (DATA / "fio-3.1-randread-dupkeys-json.json").read_text().replace("\n", "\r\n")
    text = "[    1.2] virtio_blk virtio1: [vda]\r\n" + body + "\r\nnearmetal-exit=0\r\n"
    assert parse_fio_json(text)[0].name == "bw_MiBps"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no JSON"),
        ("fio: pid=12, err=22/file:filesetup.c:805, func=open(), error=Invalid argument\n", "no JSON"),
        ('{\n  "fio version" : "fio-3.33",\n  "jobs" : [\n    {\n', "no complete JSON"),
        ('{"fio version": "fio-3.33", "jobs": []}', "no jobs"),
    ],
)
def test_outputs_without_results_are_clear_parse_errors(text: str, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        parse_fio_json(text)


def test_job_that_did_no_io_names_the_error() -> None:
    doc = json.loads((DATA / "fio-3.1-randread-dupkeys-json.json").read_text().replace('"0.00" : 0,', ""))
    doc["jobs"][0]["error"] = 22
    doc["jobs"][0]["read"].update(io_bytes=0, io_kbytes=0, iops=0, bw=0)
    with pytest.raises(ParseError, match="error 22"):
        parse_fio_json(json.dumps(doc))


def test_job_options_follow_the_seed_job_file(tmp_path: Path) -> None:
    params = FioParams(rw="write", numjobs=8, size="16m", bs="64k", runtime=2, ioengine="libaio")
    opts = dict(job_options(params, "/data"))
    assert opts["directory"] == "/data" and opts["filename_format"] == "job$jobnum.dat"
    assert opts["fallocate"] == "none" and opts["direct"] == "1" and opts["time_based"] == "1"
    assert opts["numjobs"] == "8" and opts["iodepth"] == "8" and opts["group_reporting"] == "1"
    psync = dict(job_options(FioParams(ioengine="psync", iodepth=8), "/d"))
    assert psync["iodepth"] == "1"  # a synchronous engine has one I/O in flight


def test_the_workload_reads_its_directory_from_its_context(tmp_path: Path) -> None:
    wl = FioWorkload()
    plain = WorkloadContext(trial_dir=tmp_path, is_root=True)
    assert f"--directory={tmp_path / 'fio-data'}" in wl.processes(FioParams(), plain)[0].argv
    layered = WorkloadContext(
        trial_dir=tmp_path, is_root=True, endpoints={"test_dir": "/nearmetal/test", "test_dir_host": "/x"}
    )
    argv = wl.processes(FioParams(), layered)[0].argv
    assert "--directory=/nearmetal/test" in argv and argv[-1] == "--output-format=json+"


def test_params_refuse_bad_sizes_and_option_names() -> None:
    assert parse_size("64k") == 65536 and parse_size("1MiB") == 1024**2 and parse_size("2g") == 2 * 1024**3
    with pytest.raises(ValueError):
        FioParams(size="lots")
    with pytest.raises(ValueError):
        FioParams(options={"--rw": 1})


def test_sizes_beyond_free_disk_or_memory_are_refused(tmp_path: Path) -> None:
    check_sizes(FioParams(numjobs=2, size="1m"), tmp_path)
    with pytest.raises(NearmetalError, match="MiB free"):
        check_sizes(FioParams(numjobs=64, size="100t"), tmp_path)
    with pytest.raises(NearmetalError, match="buffers"):
        check_sizes(FioParams(numjobs=1024, iodepth=4096, bs="16m", size="1k"), tmp_path)
