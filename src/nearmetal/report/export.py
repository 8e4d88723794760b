"""Exports of stored runs for other tools: tidy (long) tables as CSV, JSON, JSON lines or Parquet, and
OpenMetrics text for Prometheus/Grafana.

Tidy = one row per trial × metric, with the trial's cell, variant, matrix point and parameters as columns,
so ``pandas.read_csv(...).groupby(["variant", "metric"])`` or a spreadsheet pivot needs no reshaping.
A trial that produced no metric at all (it crashed before printing anything) still gets one row, with an
empty metric, so failures are not silently left out.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import select

from nearmetal.api import Results
from nearmetal.redact import redact_text, redact_value
from nearmetal.store.schema import MetricRow, TrialRow

TRIAL_COLUMNS = [
    "run_id",
    "trial_id",
    "trial_key",
    "cell_id",
    "cell_key",
    "workload",
    "kind",
    "variant",
    "baseline",
    "point",
    "repeat",
    "warmup",
    "block",
    "seq",
    "status",
    "started_at",
    "ended_at",
]
METRIC_COLUMNS = ["metric", "value", "unit", "direction", "source", "n_values"]
TABULAR_FORMATS = ("csv", "json", "jsonl", "parquet")
FORMATS = (*TABULAR_FORMATS, "openmetrics")


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    """``{"a": {"b": 1}}`` → ``param.a.b = 1``; lists become JSON text so every cell is a scalar.
    Values under secret-looking names (``env.API_TOKEN``) and credentials inside strings are redacted:
    exports get shared."""
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}", v, out)
    elif isinstance(value, list | tuple):
        out[prefix] = redact_text(json.dumps(value, default=str))
    elif isinstance(value, str):
        out[prefix] = redact_value(prefix.rsplit(".", 1)[-1], value)
    else:
        out[prefix] = value


def _point_label(point: dict[str, Any] | None) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((point or {}).items()))


def tidy_rows(results: Results) -> list[dict[str, Any]]:
    """One dict per trial × metric of a run (every trial, warm-ups and failures included, flagged)."""
    stmt = (
        select(
            TrialRow.id,
            MetricRow.name,
            MetricRow.value,
            MetricRow.unit,
            MetricRow.direction,
            MetricRow.source,
            MetricRow.n_values,
        )
        .join(MetricRow, MetricRow.trial_id == TrialRow.id)
        .where(TrialRow.run_id == results.run_id)
        .order_by(TrialRow.seq, MetricRow.name)
    )
    with results.store.engine.connect() as conn:
        metric_rows = conn.execute(stmt).all()
    by_trial: dict[int, list[Any]] = {}
    for row in metric_rows:
        by_trial.setdefault(row[0], []).append(row)
    rows: list[dict[str, Any]] = []
    for t in results.trials:
        base: dict[str, Any] = {
            "run_id": t.run_id,
            "trial_id": t.id,
            "trial_key": t.trial_key,
            "cell_id": t.cell_id,
            "cell_key": t.cell_key,
            "workload": t.workload,
            "kind": t.kind,
            "variant": t.variant,
            "baseline": bool(t.is_baseline),
            "point": _point_label(t.point),
            "repeat": t.repeat_index,
            "warmup": bool(t.is_warmup),
            "block": t.block,
            "seq": t.seq,
            "status": t.status,
            "started_at": t.started_at,
            "ended_at": t.ended_at,
        }
        params: dict[str, Any] = {}
        _flatten("param", t.params or {}, params)
        metrics = by_trial.get(t.id) or [(t.id, None, None, None, None, None, None)]
        for _, name, value, unit, direction, source, n_values in metrics:
            rows.append(
                {
                    **base,
                    "metric": name,
                    "value": value,
                    "unit": unit,
                    "direction": direction,
                    "source": source,
                    "n_values": n_values,
                    **params,
                }
            )
    return rows


def columns_of(rows: list[dict[str, Any]]) -> list[str]:
    """The fixed columns first, then every parameter column any row has (sorted)."""
    extra = sorted({k for r in rows for k in r} - set(TRIAL_COLUMNS) - set(METRIC_COLUMNS))
    return [*TRIAL_COLUMNS, *METRIC_COLUMNS, *extra]


def rows_for(results_list: Iterable[Results]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for results in results_list:
        rows += tidy_rows(results)
    return rows


def to_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns_of(rows), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buffer.getvalue()


def _json_safe(value: Any) -> Any:
    # JSON has no NaN or infinity: they become null rather than invalid JSON
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def to_json(rows: list[dict[str, Any]]) -> str:
    columns = columns_of(rows)
    records = [{c: _json_safe(r.get(c)) for c in columns} for r in rows]
    return json.dumps(records, indent=1, default=str, allow_nan=False) + "\n"


def to_jsonl(rows: list[dict[str, Any]]) -> str:
    columns = columns_of(rows)
    return "".join(
        json.dumps({c: _json_safe(r.get(c)) for c in columns}, default=str, allow_nan=False) + "\n"
        for r in rows
    )


def write_parquet(
    rows: list[dict[str, Any]], path: str | Path, metadata: dict[str, str] | None = None
) -> Path:
    """Parquet with one typed column per field; a parameter column whose values differ in type between
    workloads (an int here, a string there) is stored as text."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = columns_of(rows)
    arrays = {}
    for column in columns:
        values = [r.get(column) for r in rows]
        kinds = {type(v) for v in values if v is not None}
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


# --- OpenMetrics ------------------------------------------------------------------------------------

_RESERVED_SUFFIXES = ("_total", "_created", "_count", "_sum", "_bucket", "_gcount", "_gsum", "_info")


def metric_family_name(metric: str, prefix: str = "nearmetal_trial_") -> str:
    """A valid OpenMetrics name for a nearmetal metric (``bw_MiBps`` → ``nearmetal_trial_bw_MiBps``)."""
    name = prefix + re.sub(r"[^A-Za-z0-9_:]", "_", metric)
    if name.endswith(_RESERVED_SUFFIXES):  # those suffixes mean counter/histogram parts in OpenMetrics
        name += "_value"
    return name


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


def to_openmetrics(results_list: Iterable[Results]) -> str:
    """OpenMetrics text exposition: every trial's metrics as gauges timestamped when the trial ended
    (for ``promtool tsdb create-blocks-from openmetrics`` backfills or a textfile collector), each
    variant's loss vs the baseline with its interval bounds, and one info sample per run."""
    families: dict[str, dict[str, Any]] = {}

    def family(name: str, kind: str, help_text: str) -> list[str]:
        fam = families.setdefault(name, {"type": kind, "help": help_text, "samples": []})
        return fam["samples"]

    for results in results_list:
        run = results.run
        info = family("nearmetal_run", "info", "a nearmetal run: its plan, host and version")
        info.append(
            "nearmetal_run_info"
            + _labels(
                {
                    "run": run.id,
                    "plan": run.name,
                    "plan_sha256": run.plan_hash,
                    "host": run.host,
                    "status": run.status,
                    "nearmetal_version": run.nearmetal_version,
                    "plan_source": redact_text(run.plan_source),
                }
            )
            + " 1"
        )
        for row in tidy_rows(results):
            if row["metric"] is None or row["value"] is None:
                continue
            name = metric_family_name(row["metric"])
            unit = f"{row['unit']}, " if row["unit"] else ""
            samples = family(
                name,
                "gauge",
                f"{row['metric']} ({unit}{row['direction']} is better) of each nearmetal trial",
            )
            labels = {
                "run": row["run_id"],
                "workload": row["workload"],
                "variant": row["variant"],
                "point": row["point"],
                "repeat": row["repeat"],
                "trial": row["trial_key"],
                "status": row["status"],
                "warmup": "true" if row["warmup"] else "false",
            }
            stamp = row["ended_at"]
            suffix = f" {stamp:.3f}" if stamp is not None and math.isfinite(stamp) else ""
            samples.append(f"{name}{_labels(labels)} {_number(row['value'])}{suffix}")
        loss = family(
            "nearmetal_loss_ratio",
            "gauge",
            "loss of a variant vs the baseline as a fraction (positive = the variant costs); "
            "bound=estimate|low|high, low/high being the bootstrap interval",
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
                if value is not None and math.isfinite(value):
                    loss.append(f"nearmetal_loss_ratio{_labels({**labels, 'bound': bound})} {_number(value)}")
    lines: list[str] = []
    for name, fam in families.items():
        if not fam["samples"]:
            continue
        lines.append(f"# TYPE {name} {fam['type']}")
        lines.append(f"# HELP {name} {_help(fam['help'])}")
        lines += fam["samples"]
    lines.append("# EOF")
    return "\n".join(lines) + "\n"
