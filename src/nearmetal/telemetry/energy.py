"""Energy per trial, and what it means as kWh and CO2e per run (seed 001: Kepler, "Nurturing
Sustainability").

Sources, first that works wins for the host's CPU side; GPUs are added when NVML is there:

1. ``rapl``: Intel/AMD RAPL counters in ``/sys/class/powercap`` (packages + DRAM; ``psys`` when the
   platform has it) — a measurement of the whole socket, so other tenants' load is included;
2. ``nvml``: every GPU's total-energy counter (``nvmlDeviceGetTotalEnergyConsumption``, Volta and newer),
   reported separately as ``gpu_energy_J``;
3. ``kepler``: a PromQL query against the Prometheus that scrapes Kepler (``energy.prometheus_url``; default
   query ``sum(kepler_node_platform_joules_total)``), the counter's increase over the trial;
4. ``estimated``: a model, ``CPU seconds × watts per busy core``, the watts from the CPU's TDP ÷ cores (table
   below, or ``energy.watts_per_core``). It counts only the trial's own CPU time and no idle or platform
   power, so it is a floor, and it is always marked as estimated.

Every figure carries its source in ``Metric.source`` (``energy:rapl`` …) and the report shows it.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from nearmetal.metrics import Metric

POWERCAP = Path("/sys/class/powercap")
J_PER_KWH = 3.6e6

# watts per busy core = TDP ÷ cores of representative parts of each family (public spec sheets); the
# first substring of the CPU model name that matches wins
WATTS_PER_CORE: list[tuple[str, float, str]] = [
    ("EPYC 9", 3.75, "AMD EPYC 9654: 360 W / 96 cores"),
    ("EPYC 7", 4.4, "AMD EPYC 7763: 280 W / 64 cores"),
    ("Xeon(R) Platinum 8", 6.5, "Intel Xeon Platinum 8380: 270 W / 40 cores"),
    ("Xeon(R) Gold 6", 7.0, "Intel Xeon Gold 6338: 205 W / 32 cores"),
    ("Xeon(R) Gold 5", 6.5, "Intel Xeon Gold 5318Y: 165 W / 24 cores"),
    ("Xeon(R) CPU E5-26", 8.5, "Intel Xeon E5-2680 v4: 120 W / 14 cores"),
    ("Xeon", 7.0, "a typical Xeon: ~7 W per core"),
    ("Ryzen", 13.0, "AMD Ryzen 7 5800X: 105 W / 8 cores"),
    ("Core(TM) i", 15.0, "Intel Core i7-12700K: 125 W base / 8 P-cores"),
    ("Neoverse", 3.5, "Arm Neoverse N1 (Ampere Altra Q80): 250 W / 80 cores"),
]
DEFAULT_WATTS_PER_CORE = 10.0


class EnergyConfig(BaseModel):
    """The plan's ``energy:`` section: where energy comes from and how it becomes carbon."""

    model_config = ConfigDict(extra="forbid")
    pue: float = Field(1.4, ge=1.0, le=5.0, description="power usage effectiveness of the data centre")
    carbon_intensity_g_per_kWh: float = Field(
        400.0, ge=0, le=2000, description="grid carbon intensity, gCO2e per kWh"
    )
    prometheus_url: str | None = Field(
        None,
        description="Prometheus that scrapes Kepler, e.g. http://prometheus:9090 (env NEARMETAL_PROMETHEUS_URL)",
    )
    kepler_query: str = Field(
        "sum(kepler_node_platform_joules_total)", description="PromQL counter of joules to difference"
    )

    @field_validator("prometheus_url")
    @classmethod
    def _http_only(cls, value: str | None) -> str | None:
        # the runner fetches it (as root, on the node): http(s) only, and only with --allow-network
        from nearmetal.reach import check_url

        return None if value is None else check_url(value)

    watts_per_core: float | None = Field(None, gt=0, description="override the model's per-core power")
    sources: list[str] = Field(
        default_factory=lambda: ["rapl", "nvml", "kepler", "estimated"],
        description="sources to try, in order (drop one to never use it)",
    )


def watts_per_core(cpu_model: str) -> tuple[float, str]:
    for marker, watts, basis in WATTS_PER_CORE:
        if marker in cpu_model:
            return watts, basis
    return DEFAULT_WATTS_PER_CORE, "no table entry for this CPU: a default of 10 W per busy core"


# --- RAPL ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RaplZone:
    name: str
    energy_file: Path
    max_range_uj: int

    def read_uj(self) -> int:
        return int(self.energy_file.read_text())


def rapl_zones(root: Path = POWERCAP) -> list[RaplZone]:
    """The zones whose sum is the host's energy: ``psys`` alone when present, else every package and its
    DRAM sub-zone. Empty when powercap is absent or its counters are not readable (non-root since 2020)."""
    top, dram, psys = [], [], []
    for zone in sorted(root.glob("intel-rapl:*")):
        name_file, energy_file = zone / "name", zone / "energy_uj"
        try:
            name = name_file.read_text().strip()
            int(energy_file.read_text())
            max_range = int((zone / "max_energy_range_uj").read_text())
        except (OSError, ValueError):
            continue
        item = RaplZone(f"{zone.name}:{name}", energy_file, max_range)
        depth = zone.name.count(":")
        if name == "psys":
            psys.append(item)
        elif depth == 1 and name.startswith("package"):
            top.append(item)
        elif depth == 2 and name == "dram":
            dram.append(item)
    return psys or top + dram


def _delta_uj(zone: RaplZone, start: int, end: int) -> int:
    # the counter wraps at max_energy_range_uj (every few minutes to hours under load)
    return end - start if end >= start else end + zone.max_range_uj + 1 - start


# --- NVML ----------------------------------------------------------------------------------------------
def _nvml_handles() -> list[Any]:
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        for handle in handles:
            pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)  # refuses on pre-Volta cards
        return handles
    except Exception:  # no driver, no GPU, or a GPU without the counter
        return []


def _nvml_total_mj(handles: list[Any]) -> int:
    import pynvml

    return sum(int(pynvml.nvmlDeviceGetTotalEnergyConsumption(h)) for h in handles)


# --- Kepler via Prometheus -----------------------------------------------------------------------------
class PrometheusError(Exception):
    pass


def prometheus_instant(url: str, query: str, at: float, timeout_s: float = 5.0) -> float:
    """The value of a PromQL query that returns one series (or a scalar) at time ``at``."""
    params = urllib.parse.urlencode({"query": query, "time": f"{at:.3f}"})
    try:
        with urllib.request.urlopen(
            f"{url.rstrip('/')}/api/v1/query?{params}", timeout=timeout_s
        ) as response:
            body = json.loads(response.read().decode())
    except (OSError, ValueError) as exc:
        raise PrometheusError(f"Prometheus at {url} did not answer: {exc}") from None
    if body.get("status") != "success":
        raise PrometheusError(f"Prometheus refused {query!r}: {body.get('error', body)}")
    data = body["data"]
    if data["resultType"] == "scalar":
        return float(data["result"][1])
    if not data["result"]:
        raise PrometheusError(f"{query!r} has no series in Prometheus at {url} (is Kepler scraped?)")
    return float(data["result"][0]["value"][1])


# --- the meter -----------------------------------------------------------------------------------------
@dataclass
class Reading:
    """What one trial's energy measurement found."""

    wall_s: float
    cpu_j: float | None = None
    cpu_source: str | None = None
    gpu_j: float | None = None
    notes: list[str] = field(default_factory=list)

    def metrics(self) -> list[Metric]:
        out = []
        if self.cpu_j is not None and self.cpu_source:
            source = f"energy:{self.cpu_source}"
            out.append(Metric("energy_J", self.cpu_j, "J", "lower", source=source))
            if self.wall_s > 0:
                out.append(Metric("power_avg_W", self.cpu_j / self.wall_s, "W", "lower", source=source))
        if self.gpu_j is not None:
            out.append(Metric("gpu_energy_J", self.gpu_j, "J", "lower", source="energy:nvml"))
            if self.wall_s > 0:
                out.append(
                    Metric("gpu_power_avg_W", self.gpu_j / self.wall_s, "W", "lower", source="energy:nvml")
                )
        return out


def _env_prometheus_url() -> str | None:
    """NEARMETAL_PROMETHEUS_URL, when it is an http(s) URL (anything else is ignored: never file://)."""
    from nearmetal.reach import check_url

    value = os.environ.get("NEARMETAL_PROMETHEUS_URL")
    try:
        return check_url(value) if value else None
    except ValueError:
        return None


class EnergyMeter:
    """Measures one trial at a time: ``with meter.measure() as reading: …``, then
    ``reading_metrics = meter.finish(reading, cpu_s)``."""

    def __init__(
        self, config: EnergyConfig | None = None, powercap: Path = POWERCAP, cpu_model: str | None = None
    ) -> None:
        self.config = config or EnergyConfig()
        sources = self.config.sources
        self.rapl = rapl_zones(powercap) if "rapl" in sources else []
        self.nvml = _nvml_handles() if "nvml" in sources else []
        self.prometheus_url = (
            (self.config.prometheus_url or _env_prometheus_url()) if "kepler" in sources else None
        )
        if cpu_model is None:
            from nearmetal.telemetry.environment import cpu_model as read_cpu_model

            cpu_model = read_cpu_model()
        self.cpu_model = cpu_model
        if self.config.watts_per_core:
            self.watts, self.watts_basis = self.config.watts_per_core, "energy.watts_per_core in the plan"
        else:
            self.watts, self.watts_basis = watts_per_core(cpu_model)

    def describe(self) -> str:
        cpu = "rapl" if self.rapl else "kepler" if self.prometheus_url else "estimated"
        return cpu + (" + nvml" if self.nvml else "")

    @contextlib.contextmanager
    def measure(self) -> Iterator[Reading]:
        rapl_start = [z.read_uj() for z in self.rapl]
        nvml_start = _nvml_total_mj(self.nvml) if self.nvml else 0
        t0_wall, t0 = time.time(), time.perf_counter()
        reading = Reading(0.0)
        try:
            yield reading
        finally:
            reading.wall_s = time.perf_counter() - t0
            if self.rapl:
                with contextlib.suppress(OSError, ValueError):
                    ends = [z.read_uj() for z in self.rapl]
                    total = sum(
                        _delta_uj(z, s, e) for z, s, e in zip(self.rapl, rapl_start, ends, strict=True)
                    )
                    reading.cpu_j, reading.cpu_source = total / 1e6, "rapl"
            if self.nvml:
                with contextlib.suppress(Exception):
                    reading.gpu_j = (_nvml_total_mj(self.nvml) - nvml_start) / 1e3
            if reading.cpu_source is None and self.prometheus_url:
                self._kepler(reading, t0_wall, time.time())

    def _kepler(self, reading: Reading, start: float, end: float) -> None:
        assert self.prometheus_url
        try:
            before = prometheus_instant(self.prometheus_url, self.config.kepler_query, start)
            after = prometheus_instant(self.prometheus_url, self.config.kepler_query, end)
        except PrometheusError as exc:
            reading.notes.append(f"kepler: {exc}")
            return
        if after < before:  # the exporter restarted: its counter began again at 0
            reading.notes.append("kepler: counter reset during the trial")
            return
        if after == before:
            reading.notes.append("kepler: no new sample during the trial (shorter than the scrape interval)")
            return
        reading.cpu_j, reading.cpu_source = after - before, "kepler"

    def finish(self, reading: Reading, cpu_s: float | None) -> list[Metric]:
        """The trial's energy metrics; the model fills in when no measured CPU source answered."""
        if reading.cpu_source is None and "estimated" in self.config.sources and cpu_s is not None:
            reading.cpu_j, reading.cpu_source = cpu_s * self.watts, "estimated"
        return reading.metrics()


# --- per run -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Footprint:
    energy_J: float
    pue: float
    carbon_intensity_g_per_kWh: float

    @property
    def it_kWh(self) -> float:
        return self.energy_J / J_PER_KWH

    @property
    def facility_kWh(self) -> float:
        return self.it_kWh * self.pue

    @property
    def carbon_g(self) -> float:
        return self.facility_kWh * self.carbon_intensity_g_per_kWh


def footprint(energy_j: float, config: EnergyConfig | None = None) -> Footprint:
    """kWh × PUE × carbon intensity = the run's footprint (gCO2e)."""
    config = config or EnergyConfig()
    return Footprint(energy_j, config.pue, config.carbon_intensity_g_per_kWh)
