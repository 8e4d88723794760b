"""Energy of real runs: trials carry energy metrics and the report shows the footprint; Kepler energy read
through a real Prometheus."""

from __future__ import annotations

import http.server
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import write_plan

import nearmetal
from nearmetal.host.ports import free_tcp_port
from nearmetal.telemetry.energy import (
    EnergyConfig,
    EnergyMeter,
    footprint,
    prometheus_instant,
)

PY = sys.executable


def test_trials_of_a_real_run_carry_energy_and_the_report_shows_the_footprint(
    tmp_path: Path, db_url: str, run_cli
) -> None:
    plan = write_plan(
        tmp_path,
        f"""
        name: energy
        workloads:
          burn: {{kind: command, params: {{argv: ["{PY}", "-c", "import time\\nt=time.process_time()\\nwhile time.process_time()-t<0.3: pass"]}}}}
        variants: {{bare: []}}
        repeats: 2
        energy: {{sources: [estimated], watts_per_core: 10, pue: 1.5, carbon_intensity_g_per_kWh: 400}}
    """,
    )
    result = nearmetal.run_plan(plan, db=db_url, workdir=tmp_path / "runs")
    for record in result.records:
        metrics = {m.name: m for m in record.metrics}
        assert metrics["energy_J"].source == "energy:estimated"
        assert metrics["energy_J"].value == pytest.approx(metrics["cpu_s"].value * 10)
        assert metrics["energy_J"].value >= 2.5  # at least 0.3 s of CPU at 10 W
    total_j = sum(m.value for r in result.records for m in r.metrics if m.name == "energy_J")
    expected = footprint(total_j, EnergyConfig(pue=1.5, carbon_intensity_g_per_kWh=400))
    assert expected.carbon_g == pytest.approx(total_j / 3.6e6 * 1.5 * 400)
    markdown = run_cli("report", result.run_id, "--format", "markdown", check=True).stdout
    assert "## Energy and carbon" in markdown
    assert "estimated" in markdown and "PUE 1.5" in markdown and "400 gCO2e/kWh" in markdown
    assert f"{expected.carbon_g:.3g}" in markdown
    from nearmetal.report.html import html_report

    html = html_report(nearmetal.load_results(result.run_id, db=db_url))
    assert 'id="energy"' in html and "gCO2e/kWh" in html and "estimated" in html


class _KeplerExporter(http.server.BaseHTTPRequestHandler):
    """Serves a Kepler-shaped counter that grows at 50 W of real time."""

    started = time.time()

    def do_GET(self) -> None:
        joules = 50.0 * (time.time() - self.started)
        body = (
            "# TYPE kepler_node_platform_joules_total counter\n"
            f'kepler_node_platform_joules_total{{instance="test"}} {joules:.3f}\n'
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="needs prometheus installed (Debian package)")
def test_kepler_energy_through_a_real_prometheus(tmp_path: Path) -> None:
    exporter = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _KeplerExporter)
    threading.Thread(target=exporter.serve_forever, daemon=True).start()
    port = free_tcp_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: kepler\n    static_configs: [{{targets: ['127.0.0.1:{exporter.server_port}']}}]\n"
    )
    prom = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                prometheus_instant(url, "sum(kepler_node_platform_joules_total)", time.time())
                break
            except Exception:
                if time.monotonic() > deadline or prom.poll() is not None:
                    raise
                time.sleep(0.5)
        meter = EnergyMeter(
            EnergyConfig(prometheus_url=url, sources=["rapl", "kepler", "estimated"]),
            powercap=tmp_path / "none",
            cpu_model="x",
        )
        with meter.measure() as reading:
            time.sleep(4)
        metrics = {m.name: m for m in meter.finish(reading, cpu_s=0.0)}
        assert metrics["energy_J"].source == "energy:kepler", reading.notes
        # 50 W over ~4 s, give or take one scrape interval at each end
        assert 50 * (reading.wall_s - 2.5) <= metrics["energy_J"].value <= 50 * (reading.wall_s + 2.5)
        # a query with no series falls back to the model with the reason kept
        missing = EnergyMeter(
            EnergyConfig(prometheus_url=url, kepler_query="sum(no_such_metric)"),
            powercap=tmp_path / "none",
            cpu_model="x",
        )
        with missing.measure() as reading2:
            pass
        assert {m.source for m in missing.finish(reading2, cpu_s=1.0)} == {"energy:estimated"}
        assert any("no series" in n or "no_such_metric" in n for n in reading2.notes)
    finally:
        prom.terminate()
        prom.wait(timeout=30)
        exporter.shutdown()
