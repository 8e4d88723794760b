"""A run as tidy rows: one per trial × metric (``trials``) or one per analysed cell (``losses``).

What every export writes (``report/export.py``) and what ``Results.to_pandas`` returns; a module of its own
below both, so the API does not import the report package (which imports the API).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from nearmetal.labels import point_label
from nearmetal.redact import redact_text, redact_value
from nearmetal.store.schema import MetricRow, TrialRow

if TYPE_CHECKING:
    from nearmetal.api import Results

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
# epoch seconds in the store; typed timestamps in Parquet and DataFrames
TIME_COLUMNS = ("started_at", "ended_at")
METRIC_COLUMNS = ["metric", "value", "unit", "direction", "source", "n_values"]


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
            "point": point_label(t.point or {}),
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


def loss_rows(results: Results, metric: str | None = None) -> list[dict[str, Any]]:
    """The analysed table of a run, one row per cell (``Results.table``): the metric's summary, its loss vs
    the baseline with the interval and verdict, the stop reason; with the run id and cell id first."""
    by_key = {(c.workload, c.point_label, c.variant): c for c in results.cells}
    rows = []
    for row in results.table(metric):
        cell = by_key.get((str(row.get("workload")), str(row.get("point")), str(row.get("variant"))))
        rows.append({"run_id": results.run_id, "cell_id": cell.cell_id if cell else None, **row})
    return rows


def columns_of(rows: list[dict[str, Any]]) -> list[str]:
    """Tidy rows: the fixed columns first, then every parameter column any row has (sorted). Other rows
    (the loss table): every key in the order it first appears."""
    if not rows or "trial_id" not in rows[0]:
        return list(dict.fromkeys(k for r in rows for k in r))
    extra = sorted({k for r in rows for k in r} - set(TRIAL_COLUMNS) - set(METRIC_COLUMNS))
    return [*TRIAL_COLUMNS, *METRIC_COLUMNS, *extra]


WHATS = ("trials", "losses")


def rows_for(
    results_list: Iterable[Results], what: str = "trials", metric: str | None = None
) -> list[dict[str, Any]]:
    """``trials``: one row per trial × metric; ``losses``: one row per cell of the analysed table."""
    rows: list[dict[str, Any]] = []
    for results in results_list:
        rows += tidy_rows(results) if what == "trials" else loss_rows(results, metric)
    return rows
