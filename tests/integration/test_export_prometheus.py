"""The Prometheus exports read by Prometheus' own programs: ``promtool tsdb create-blocks-from openmetrics``
(a backfill) and node_exporter's textfile collector (Debian's ``prometheus`` and ``prometheus-node-exporter``)."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from report_data import SyntheticCell, write_run

import nearmetal
from nearmetal.metrics import Metric
from nearmetal.report.export import to_openmetrics, to_textfile
from nearmetal.store import Store

PROMTOOL = shutil.which("promtool")
NODE_EXPORTER = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")


def _metrics(cell: SyntheticCell, repeat: int, rng) -> list[Metric]:
    slow = 1.0 if cell.variant == "native" else 1.6
    return [
        Metric("wall_s", 2.0 * slow * rng.normal(1, 0.01), "s", "lower"),
        Metric("bw_MiBps", 1000 / slow * rng.normal(1, 0.01), "MiB/s", "higher"),
        Metric("clat_p99_us", 250.0 * slow, "µs", "lower"),
        Metric("throttled_pct", 12.5, "%", "lower"),
        Metric("energy_J", 40.0, "J", "lower"),
        Metric("ops_total", 5.0, "", "higher"),
    ]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> list[nearmetal.Results]:
    """Two stored runs with metrics in several units and a label value that needs escaping."""
    tmp_path = tmp_path_factory.mktemp("prom")
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    cells = [
        SyntheticCell("io", v, {"path": 'a "b"\\c', "clients": 8}, baseline=v == "native")
        for v in ("native", "fuse")
    ]
    runs = [write_run(store, cells, _metrics, repeats=4, seed=seed) for seed in (1, 2)]
    return [nearmetal.load_results(r, store=store).with_intervals("bw_MiBps") for r in runs]


def _dump(promtool: str, tsdb: Path) -> list[tuple[str, dict[str, str], float, int]]:
    """Every sample in a TSDB as ``promtool tsdb dump`` prints it: name, labels, value, timestamp (ms)."""
    (tsdb / "wal").mkdir(exist_ok=True)  # dump opens the TSDB read-only and wants a WAL, a backfill has none
    proc = subprocess.run(
        [promtool, "tsdb", "dump", str(tsdb)], capture_output=True, text=True, timeout=120, check=True
    )
    samples = []
    for line in proc.stdout.splitlines():
        match = re.match(r"^\{(.*)\} (\S+) (\d+)$", line)
        assert match, line
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(1)))
        samples.append((labels.pop("__name__"), labels, float(match.group(2)), int(match.group(3))))
    return samples


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian package prometheus)")
def test_promtool_backfills_the_openmetrics_export(two_runs: list[nearmetal.Results], tmp_path: Path) -> None:
    assert PROMTOOL is not None
    source = tmp_path / "runs.om"
    source.write_text(to_openmetrics(two_runs))
    tsdb = tmp_path / "tsdb"
    proc = subprocess.run(
        [PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", str(source), str(tsdb)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    samples = _dump(PROMTOOL, tsdb)
    by_name: dict[str, list] = {}
    for name, labels, value, stamp in samples:
        by_name.setdefault(name, []).append((labels, value, stamp))
    # every trial's metrics in base units, nearmetal's own name in a label; the stored values, converted
    results = two_runs[0]
    stored = results.values("bw_MiBps")
    run_bw = [s for s in by_name["nearmetal_trial_bw_bytes_per_second"] if s[0]["run"] == results.run_id]
    assert {s[0]["metric"] for s in run_bw} == {"bw_MiBps"}
    measured = sorted(s[1] for s in run_bw if s[0]["warmup"] == "false")
    assert measured == pytest.approx(sorted(v * 2**20 for vs in stored.values() for v in vs))
    assert sorted({s[1] for s in by_name["nearmetal_trial_clat_p99_seconds"]}) == pytest.approx(
        [250e-6, 400e-6]
    )
    assert {s[1] for s in by_name["nearmetal_trial_throttled_ratio"]} == {0.125}
    assert {s[1] for s in by_name["nearmetal_trial_energy_joules"]} == {40.0}
    assert "nearmetal_trial_ops_total_value" in by_name
    # timestamps: a trial's sample is stamped when it ended (milliseconds in the TSDB); the trial is its
    # timestamp, not a label: a cell's trials are one series (issue 30: no per-trial label)
    assert not any({"trial", "repeat"} & set(s[0]) for s in run_bw)
    ends = {round(t.ended_at * 1000) for t in results.trials}
    assert {s[2] for s in run_bw} <= ends and len({s[2] for s in run_bw}) == len(run_bw)
    assert len({tuple(sorted(s[0].items())) for s in run_bw}) == 2  # one series per variant
    # the loss with its interval, for both runs, and one info series per run
    loss = {
        (s[0]["run"], s[0]["bound"]): s[1]
        for s in by_name["nearmetal_loss_ratio"]
        if s[0]["metric"] == "bw_MiBps"
    }
    for run in two_runs:
        assert loss[(run.run_id, "low")] <= loss[(run.run_id, "estimate")] <= loss[(run.run_id, "high")]
        assert loss[(run.run_id, "estimate")] == pytest.approx(1 - 1 / 1.6, abs=0.03)
    assert {s[0]["run"] for s in by_name["nearmetal_run_info"]} == {r.run_id for r in two_runs}
    point = by_name["nearmetal_trial_wall_seconds"][0][0]["point"]
    assert point == 'clients=8,path=a \\"b\\"\\\\c'  # promtool dump prints the value escaped again


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _scrape(url: str, deadline_s: float = 30) -> str:
    end = time.monotonic() + deadline_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read().decode()
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.2)


@pytest.mark.skipif(
    NODE_EXPORTER is None, reason="node_exporter is not installed (Debian package prometheus-node-exporter)"
)
def test_node_exporter_serves_the_textfile_export(
    two_runs: list[nearmetal.Results], tmp_path: Path, run_cli
) -> None:
    assert NODE_EXPORTER is not None
    directory = tmp_path / "textfile"
    directory.mkdir()
    text = to_textfile(two_runs)
    assert "# EOF" not in text and "# UNIT" not in text and " info" not in text
    (directory / "nearmetal.prom").write_text(text)
    port = _free_port()
    proc = subprocess.Popen(
        [
            NODE_EXPORTER,
            "--collector.disable-defaults",
            "--collector.textfile",
            f"--collector.textfile.directory={directory}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        page = _scrape(f"http://127.0.0.1:{port}/metrics")
    finally:
        proc.terminate()
        log = proc.communicate(timeout=30)[0]
    # the collector read the file without an error (it reports its own failures as this gauge)
    assert "node_textfile_scrape_error 0" in page, log
    assert "nearmetal_trial_wall_seconds{" in page
    served = [
        line
        for line in page.splitlines()
        if line.startswith("nearmetal_trial_bw_bytes_per_second{")
        and f'run="{two_runs[0].run_id}"' in line
        and 'warmup="false"' in line
    ]
    stored = two_runs[0].values("bw_MiBps")
    values = sorted(float(line.rsplit(" ", 1)[1]) for line in served)
    assert values == pytest.approx(sorted(v * 2**20 for vs in stored.values() for v in vs))
    assert re.search(r'^nearmetal_run_info\{.*run="' + re.escape(two_runs[1].run_id), page, re.M)
    assert re.search(r'^nearmetal_loss_ratio\{.*bound="low"', page, re.M)


@pytest.mark.skipif(
    NODE_EXPORTER is None, reason="node_exporter is not installed (Debian package prometheus-node-exporter)"
)
def test_node_exporter_refuses_the_openmetrics_form(
    two_runs: list[nearmetal.Results], tmp_path: Path
) -> None:
    """The reason for a second form: the collector refuses timestamps and the info type (so this test
    shows the textfile test above can fail)."""
    assert NODE_EXPORTER is not None
    directory = tmp_path / "textfile"
    directory.mkdir()
    (directory / "nearmetal.prom").write_text(to_openmetrics(two_runs[:1]))
    port = _free_port()
    proc = subprocess.Popen(
        [
            NODE_EXPORTER,
            "--collector.disable-defaults",
            "--collector.textfile",
            f"--collector.textfile.directory={directory}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        page = _scrape(f"http://127.0.0.1:{port}/metrics")
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert "node_textfile_scrape_error 1" in page
    assert "nearmetal_trial_wall_seconds{" not in page


def test_textfile_export_through_the_cli(tmp_path: Path, run_cli) -> None:
    store = Store(f"sqlite:///{tmp_path / 'results.db'}")
    cells = [SyntheticCell("io", v, baseline=v == "native") for v in ("native", "fuse")]
    run_id = write_run(store, cells, _metrics, repeats=3)
    out = tmp_path / "nearmetal.prom"
    run_cli("export", run_id, "--db", str(store.url), "-f", "textfile", "-o", str(out), check=True)
    text = out.read_text()
    assert "# TYPE nearmetal_trial_wall_seconds gauge" in text
    assert not list(tmp_path.glob("*.partial"))
    # no sample line carries a timestamp: each is NAME{labels} VALUE
    assert all(
        re.match(r"^[a-z_0-9]+\{.*\} \S+$", line) for line in text.splitlines() if not line.startswith("#")
    )
