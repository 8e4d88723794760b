"""Timelines of the resilience studies: requests per second (successes, errors by kind, successes per backend)
and latency over the trial, the fault window shaded — one representative repeat per cell (the one whose
availability is the median of its cell), from the ``timeline`` event the workload stored."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nearmetal.report.figures.base import Band, FigureSpec, Series, figure

if TYPE_CHECKING:
    from nearmetal.api import Results

MAX_CELLS = 12
ERROR_COLORS = ["#D55E00", "#A50026", "#CC79A7", "#000000", "#F0E442"]
BACKEND_COLORS = ["#0072B2", "#E69F00", "#56B4E9", "#332288", "#999999", "#882255"]


def _representative(entry: Any) -> Any | None:
    with_timeline = [t for t in entry.trials if t.timeline]
    if not with_timeline:
        return None

    def availability(t: Any) -> float:
        tl = t.timeline
        ok = sum(tl["ok"])
        errors = sum(sum(v) for v in tl["errors"].values())
        return float(ok / max(ok + errors, 1))

    ranked = sorted(with_timeline, key=availability)
    return ranked[len(ranked) // 2]


def _bands(trial: Any, t0: float, end: float) -> list[Band]:
    bands = []
    healed = {h.get("id"): h["time"] for h in trial.healed}
    for fault in trial.faults:
        start = fault["time"] - t0
        stop = healed.get(fault.get("id"))
        stop = (stop - t0) if stop is not None else end
        label = f"{fault.get('action')} {fault.get('target')}"
        bands.append(Band(start, max(stop, start + 0.05), label))
    return bands


def _caption(trial: Any, t0: float, extra: str) -> str:
    marks = []
    for e in trial.lb:
        word = "down" if e["kind"] == "lb-server-down" else "up"
        marks.append(f"balancer marked {e.get('server')} {word} at {e['time'] - t0:.2f}s")
    for f in trial.doctor[:1]:
        marks.append(f"doctor {f.get('check_id')}: {f.get('severity')} at {f['time'] - t0:.2f}s")
    for o in trial.other:
        if o["kind"] in ("watchdog-found-severed", "scaled-to-zero"):
            marks.append(f"{o['kind']} at {o['time'] - t0:.2f}s")
    return "; ".join([extra, *marks])


@figure("resilience-timeline")
def timelines(results: Results) -> list[FigureSpec]:
    from nearmetal.report.availability import resilience_data

    specs: list[FigureSpec] = []
    for workload, rows in resilience_data(results).items():
        for entry in rows[:MAX_CELLS]:
            trial = _representative(entry)
            if trial is None:
                continue
            tl = trial.timeline
            t0, bin_s = float(tl["t0"]), float(tl["bin_s"])
            x = [round((i + 0.5) * bin_s, 4) for i in range(len(tl["ok"]))]
            per_s = 1.0 / bin_s
            series = [Series("successful", "line", x, [c * per_s for c in tl["ok"]], color="#009E73")]
            for i, (kind, counts) in enumerate(sorted(tl["errors"].items())):
                series.append(
                    Series(
                        f"errors: {kind}",
                        "line",
                        x,
                        [c * per_s for c in counts],
                        color=ERROR_COLORS[i % len(ERROR_COLORS)],
                    )
                )
            for i, (backend, counts) in enumerate(tl.get("by_backend", {}).items()):
                series.append(
                    Series(
                        f"served by {backend}",
                        "line",
                        x,
                        [c * per_s for c in counts],
                        color=BACKEND_COLORS[i % len(BACKEND_COLORS)],
                        dashed=True,
                    )
                )
            end = x[-1] + bin_s if x else 0.0
            bands = _bands(trial, t0, end)
            label = entry.cell.variant + (f" ({entry.cell.point_label})" if entry.cell.point_label else "")
            unit = "operations" if entry.cell.kind == "io-probe" else "requests"
            base = f"resilience-{workload}-{entry.cell.variant}"
            caption = _caption(
                trial,
                t0,
                f"{entry.fault}; one repeat of {entry.n} (median availability), {bin_s:g}s bins by start time; "
                "shaded: the fault until it healed",
            )
            specs.append(
                FigureSpec(
                    key=base,
                    title=f"{workload} / {label}: {unit} per second",
                    x_label="seconds since the load started",
                    y_label=f"{unit}/s",
                    series=series,
                    section=workload,
                    caption=caption,
                    x_type="linear",
                    bands=bands,
                )
            )
            p50 = [v for v in tl["p50_ms"]]
            p99 = [v for v in tl["p99_ms"]]
            keep = [i for i, v in enumerate(p99) if v is not None]
            if keep:
                specs.append(
                    FigureSpec(
                        key=f"{base}-latency",
                        title=f"{workload} / {label}: latency of successful {unit}",
                        x_label="seconds since the load started",
                        y_label="ms",
                        series=[
                            Series(
                                "p50", "line", [x[i] for i in keep], [p50[i] for i in keep], color="#0072B2"
                            ),
                            Series(
                                "p99", "line", [x[i] for i in keep], [p99[i] for i in keep], color="#D55E00"
                            ),
                        ],
                        section=workload,
                        caption="per bin; shaded: the fault until it healed",
                        x_type="linear",
                        bands=bands,
                    )
                )
    return specs
