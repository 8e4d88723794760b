"""Exports of stored runs for other tools: tidy (long) tables as CSV, JSON, JSON lines or Parquet, and
OpenMetrics text for Prometheus/Grafana.

Tidy = one row per trial × metric, with the trial's cell, variant, matrix point and parameters as columns,
so ``pandas.read_csv(...).groupby(["variant", "metric"])`` or a spreadsheet pivot needs no reshaping.
A trial that produced no metric at all (it crashed before printing anything) still gets one row, with an
empty metric, so failures are not silently left out.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nearmetal.redact import redact_text

# the tidy rows every export writes live beside the API (``Results.to_pandas`` draws the same ones)
from nearmetal.rows import TIME_COLUMNS as TIME_COLUMNS
from nearmetal.rows import WHATS as WHATS
from nearmetal.rows import columns_of as columns_of
from nearmetal.rows import loss_rows as loss_rows
from nearmetal.rows import rows_for as rows_for
from nearmetal.rows import tidy_rows as tidy_rows

if TYPE_CHECKING:
    from nearmetal.api import Results

TABULAR_FORMATS = ("csv", "json", "jsonl", "parquet")
FORMATS = (*TABULAR_FORMATS, "openmetrics", "textfile")


def iso_utc(stamp: Any) -> Any:
    """Epoch seconds → ISO 8601 in UTC (``2026-12-07T06:05:20.123456+00:00``); anything else as it is."""
    if isinstance(stamp, int | float) and not isinstance(stamp, bool) and math.isfinite(stamp):
        return datetime.datetime.fromtimestamp(stamp, datetime.UTC).isoformat()
    return stamp


def plain(value: Any) -> Any:
    """A value as JSON and CSV readers expect it: NumPy scalars (``numpy.bool_`` from the analysis) as
    Python bools and numbers, not their text."""
    if hasattr(value, "item") and type(value).__module__ == "numpy":
        value = value.item()
    return value


def _record(row: dict[str, Any], columns: list[str]) -> dict[str, Any]:
    record = {c: plain(row.get(c)) for c in columns}
    for column in TIME_COLUMNS:
        if column in record:
            record[column] = iso_utc(record[column])
    return record


# a spreadsheet evaluates a cell that starts with one of these as a formula (=HYPERLINK(…), +cmd|…):
# OWASP's CSV injection rule prefixes such a cell with ' (shown as text, evaluated by nothing)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A CSV cell that no spreadsheet evaluates: text that starts like a formula gets a leading ``'``,
    unless it is a number (``-1.5`` stays a negative number); lists become JSON text (checked too)."""
    if value is None:
        return ""
    if isinstance(value, list | tuple | dict):
        value = json.dumps(value, default=str)
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        try:
            float(value)
        except ValueError:
            return "'" + value
    return value


def to_csv(rows: list[dict[str, Any]]) -> str:
    """CSV for spreadsheets and pandas: ISO 8601 UTC times, True/False, numbers as numbers, and no cell a
    spreadsheet would run as a formula (``csv_cell``)."""
    buffer = io.StringIO()
    columns = columns_of(rows)
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    # Python's csv quotes a field for the characters of its line terminator only, not a lone CR, which a
    # reader then takes for the end of the row: a row with a CR in a field is written fully quoted
    quoted = csv.DictWriter(
        buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n", quoting=csv.QUOTE_ALL
    )
    writer.writeheader()
    for row in rows:
        cells = {k: csv_cell(v) for k, v in _record(row, columns).items()}
        has_cr = any(isinstance(v, str) and "\r" in v for v in cells.values())
        (quoted if has_cr else writer).writerow(cells)
    return buffer.getvalue()


def _json_safe(value: Any) -> Any:
    # JSON has no NaN or infinity: they become null rather than invalid JSON
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _json_record(row: dict[str, Any], columns: list[str]) -> dict[str, Any]:
    return {c: _json_safe(v) for c, v in _record(row, columns).items()}


def to_json(rows: list[dict[str, Any]]) -> str:
    columns = columns_of(rows)
    records = [_json_record(r, columns) for r in rows]
    return json.dumps(records, indent=1, default=str, allow_nan=False) + "\n"


def to_jsonl(rows: list[dict[str, Any]]) -> str:
    columns = columns_of(rows)
    return "".join(json.dumps(_json_record(r, columns), default=str, allow_nan=False) + "\n" for r in rows)


def write_parquet(
    rows: list[dict[str, Any]], path: str | Path, metadata: dict[str, str] | None = None
) -> Path:
    """Parquet with one typed column per field: times as UTC timestamps (microseconds), a parameter column
    whose values differ in type between workloads (an int here, a string there) as text."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = columns_of(rows)
    arrays = {}
    for column in columns:
        values = [r.get(column) for r in rows]
        kinds = {type(v) for v in values if v is not None}
        if column in TIME_COLUMNS and kinds <= {int, float}:
            arrays[column] = pa.array(
                [None if v is None or not math.isfinite(v) else round(v * 1e6) for v in values],
                type=pa.int64(),
            ).cast(pa.timestamp("us", tz="UTC"))
            continue
        if kinds == {int, float}:
            values = [None if v is None else float(v) for v in values]
        elif len(kinds) > 1:
            values = [None if v is None else str(v) for v in values]
        arrays[column] = pa.array(values) if kinds else pa.array(values, type=pa.string())
    table = pa.table(arrays)
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    path = Path(path)
    pq.write_table(table, path)
    return path


# --- OpenMetrics and the node_exporter textfile collector ---------------------------------------------

_RESERVED_SUFFIXES = ("_total", "_created", "_count", "_sum", "_bucket", "_gcount", "_gsum", "_info")

# nearmetal's unit → (Prometheus base-unit suffix, factor to that unit, whether it is a unit OpenMetrics names
# in ``# UNIT``). Counts and counts per second have no base unit: their families end in the count's own words.
_BASE_UNITS: dict[str, tuple[str, float, bool]] = {
    "s": ("seconds", 1.0, True),
    "ms": ("seconds", 1e-3, True),
    "us": ("seconds", 1e-6, True),
    "µs": ("seconds", 1e-6, True),
    "ns": ("seconds", 1e-9, True),
    "min": ("seconds", 60.0, True),
    "h": ("seconds", 3600.0, True),
    "%": ("ratio", 0.01, True),
    "fraction": ("ratio", 1.0, True),
    "ratio": ("ratio", 1.0, True),
    "B": ("bytes", 1.0, True),
    "KiB": ("bytes", 2.0**10, True),
    "MiB": ("bytes", 2.0**20, True),
    "GiB": ("bytes", 2.0**30, True),
    "kB": ("bytes", 1e3, True),
    "MB": ("bytes", 1e6, True),
    "GB": ("bytes", 1e9, True),
    "B/s": ("bytes_per_second", 1.0, True),
    "KiB/s": ("bytes_per_second", 2.0**10, True),
    "MiB/s": ("bytes_per_second", 2.0**20, True),
    "GiB/s": ("bytes_per_second", 2.0**30, True),
    "MB/s": ("bytes_per_second", 1e6, True),
    "GB/s": ("bytes_per_second", 1e9, True),
    "bit/s": ("bytes_per_second", 1 / 8, True),
    "kbit/s": ("bytes_per_second", 1e3 / 8, True),
    "Mbit/s": ("bytes_per_second", 1e6 / 8, True),
    "Gbit/s": ("bytes_per_second", 1e9 / 8, True),
    "J": ("joules", 1.0, True),
    "kJ": ("joules", 1e3, True),
    "W": ("watts", 1.0, True),
    "GFLOPS": ("flops", 1e9, False),
    "TFLOPS": ("flops", 1e12, False),
}
# unit words at the end of nearmetal's metric names, replaced by the base unit's suffix
_NAME_UNIT_SUFFIX = re.compile(
    r"(?:^|_)(s|ms|us|ns|pct|percent|ratio|fraction|B|KiB|MiB|GiB|bytes|Bps|KiBps|MiBps|GiBps|bps|Mbps|Gbps|"
    r"J|W|GFLOPS|TFLOPS|gflops|tflops|flops|per_s|ps)$"
)


@dataclass(frozen=True)
class Family:
    """How one nearmetal metric appears in Prometheus: the family name, its ``# UNIT`` (or None) and the
    factor from nearmetal's unit to the base unit."""

    name: str
    unit: str | None
    factor: float


def metric_family(metric: str, unit: str | None, prefix: str = "nearmetal_trial_") -> Family:
    """The Prometheus family of a nearmetal metric in base units: ``wall_s`` (s) →
    ``nearmetal_trial_wall_seconds``, ``bw_MiBps`` (MiB/s) → ``…_bw_bytes_per_second`` × 2²⁰,
    ``throttled_pct`` (%) → ``…_throttled_ratio`` × 0.01, ``timesteps_per_s`` (steps/s) →
    ``…_timesteps_per_second``. A unit it does not know keeps the name as it is, without ``# UNIT``."""
    stem = re.sub(r"[^A-Za-z0-9_:]", "_", metric)
    base = _BASE_UNITS.get((unit or "").strip())
    if base is None and metric.endswith(("_pct", "_percent")):
        base = _BASE_UNITS["%"]  # "% of one CPU", "% of CPU time": a percentage all the same → a ratio
    if base is not None:
        suffix, factor, named = base
        stem = _NAME_UNIT_SUFFIX.sub("", stem)
        name = f"{prefix}{stem}_{suffix}" if stem else prefix + suffix
        family_unit = suffix if named else None
    elif (unit or "").strip().endswith("/s"):
        suffix, factor, family_unit = "per_second", 1.0, None
        stem = _NAME_UNIT_SUFFIX.sub("", stem)
        name = f"{prefix}{stem}_per_second" if stem else f"{prefix}per_second"
    else:
        name, factor, family_unit = prefix + stem, 1.0, None
    if name.endswith(_RESERVED_SUFFIXES):  # those suffixes mean counter/histogram parts in OpenMetrics
        if family_unit is not None:
            name, family_unit = name.removesuffix(f"_{family_unit}"), None
        name += "_value"
    return Family(name, family_unit, factor)


def metric_family_name(metric: str, unit: str | None = None, prefix: str = "nearmetal_trial_") -> str:
    """A valid OpenMetrics name for a nearmetal metric in base units (see ``metric_family``)."""
    return metric_family(metric, unit, prefix).name


def _label_value(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: dict[str, Any]) -> str:
    return "{" + ",".join(f'{k}="{_label_value(v)}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _families(results_list: Iterable[Results], textfile: bool) -> dict[str, dict[str, Any]]:
    """Families of samples: (name, labels, value, timestamp or None)."""
    families: dict[str, dict[str, Any]] = {}

    def family(name: str, kind: str, help_text: str, unit: str | None = None) -> list[Any]:
        fam = families.setdefault(name, {"type": kind, "help": help_text, "unit": unit, "samples": []})
        samples: list[Any] = fam["samples"]
        return samples

    for results in results_list:
        run = results.run
        run_stamp = run.ended_at if _finite(run.ended_at) else run.started_at
        trial_ends = [t.ended_at for t in results.trials if _finite(t.ended_at)]
        analysed_at = max(trial_ends) if trial_ends else run_stamp
        # an info family is OpenMetrics only; a textfile collector reads the Prometheus text format, where
        # the convention is a gauge named *_info with the value 1 (node_uname_info)
        info = family(
            "nearmetal_run" if not textfile else "nearmetal_run_info",
            "info" if not textfile else "gauge",
            "a nearmetal run: its plan, host and version",
        )
        info.append(
            (
                "nearmetal_run_info",
                {
                    "run": run.id,
                    "plan": run.name,
                    "plan_sha256": run.plan_hash,
                    "host": run.host,
                    "status": run.status,
                    "nearmetal_version": run.nearmetal_version,
                    "plan_source": redact_text(run.plan_source),
                },
                1.0,
                run.started_at,
            )
        )
        for row in tidy_rows(results):
            if row["metric"] is None or row["value"] is None:
                continue
            fam = metric_family(row["metric"], row["unit"])
            unit = f"{row['unit']}, " if row["unit"] else ""
            samples = family(
                fam.name,
                "gauge",
                f"nearmetal's {row['metric']} ({unit}{row['direction']} is better) of each trial"
                + (f", in {fam.unit}" if fam.unit else ""),
                fam.unit,
            )
            labels = {
                "run": row["run_id"],
                "metric": row["metric"],
                "workload": row["workload"],
                "variant": row["variant"],
                "point": row["point"],
                "status": row["status"],
                "warmup": "true" if row["warmup"] else "false",
            }
            if textfile:  # no timestamps there: each trial is a series of its own, told apart by these
                labels.update(repeat=row["repeat"], trial=row["trial_key"])
            stamp = row["ended_at"] if _finite(row["ended_at"]) else row["started_at"]
            samples.append((fam.name, labels, row["value"] * fam.factor, stamp))
        loss = family(
            "nearmetal_loss_ratio",
            "gauge",
            "loss of a variant vs the baseline as a fraction (positive = the variant costs); "
            "bound=estimate|low|high, low/high being the bootstrap interval",
            "ratio",
        )
        for comp in results.analysis.comparisons:
            labels = {
                "run": run.id,
                "workload": comp.cell.workload,
                "variant": comp.cell.variant,
                "baseline": comp.baseline.variant,
                "point": comp.cell.point_label,
                "metric": comp.metric,
                "confidence": f"{comp.loss.confidence:g}",
            }
            for bound, value in (
                ("estimate", comp.loss.loss),
                ("low", comp.loss.low),
                ("high", comp.loss.high),
            ):
                if _finite(value):
                    loss.append(("nearmetal_loss_ratio", {**labels, "bound": bound}, value, analysed_at))
    return {name: fam for name, fam in families.items() if fam["samples"]}


def _series_in_time_order(samples: list[Any]) -> list[Any]:
    """A family's samples grouped by series (a cell's trials are one series: no per-trial label, the trial
    is its timestamp) with strictly increasing timestamps in each, as a backfill needs; two trials of one
    series that ended in the same millisecond are kept 1 ms apart."""

    def key(sample: Any) -> tuple[Any, ...]:
        _, labels, _, stamp = sample
        return (sorted((k, str(v)) for k, v in labels.items()), stamp if _finite(stamp) else -math.inf)

    ordered: list[Any] = []
    last: dict[str, float] = {}
    for name, labels, value, stamp in sorted(samples, key=key):
        series = _labels(labels)
        if _finite(stamp):
            stamp = round(stamp, 3)
            if series in last and stamp <= last[series]:
                stamp = round(last[series] + 0.001, 3)
            last[series] = stamp
        ordered.append((name, labels, value, stamp))
    return ordered


def to_openmetrics(results_list: Iterable[Results]) -> str:
    """OpenMetrics text for ``promtool tsdb create-blocks-from openmetrics`` (a Prometheus backfill): every
    trial's metrics as gauges in Prometheus base units (seconds, bytes, joules, ratios; nearmetal's own name
    in the ``metric`` label) with ``# UNIT``, timestamped when the trial ended; each variant's loss vs the
    baseline with its interval bounds, timestamped when the run's last trial ended; one info sample per run,
    timestamped when it started. Every sample has a timestamp: a backfill refuses one without."""
    lines: list[str] = []
    for name, fam in _families(results_list, textfile=False).items():
        lines.append(f"# TYPE {name} {fam['type']}")
        if fam["unit"]:
            lines.append(f"# UNIT {name} {fam['unit']}")
        lines.append(f"# HELP {name} {_help(fam['help'])}")
        for sample_name, labels, value, stamp in _series_in_time_order(fam["samples"]):
            suffix = f" {stamp:.3f}" if _finite(stamp) else ""
            lines.append(f"{sample_name}{_labels(labels)} {_number(value)}{suffix}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def to_textfile(results_list: Iterable[Results]) -> str:
    """The Prometheus text format for node_exporter's textfile collector (``--collector.textfile.directory``):
    the same families and values as ``to_openmetrics`` but gauges only, no timestamps (the collector refuses
    client-side ones: Prometheus stamps the scrape) and no ``# EOF``. Write it to ``NAME.prom.$$`` and rename
    to ``NAME.prom``, so the collector never reads half a file."""
    lines: list[str] = []
    for name, fam in _families(results_list, textfile=True).items():
        lines.append(f"# HELP {name} {_help(fam['help'])}")
        lines.append(f"# TYPE {name} gauge")
        for sample_name, labels, value, _ in fam["samples"]:
            lines.append(f"{sample_name}{_labels(labels)} {_number(value)}")
    return "\n".join(lines) + "\n"
