"""A/A runs: the baseline against copies of itself, to see the noise floor of this machine.

Every comparison in an A/A run compares a thing with itself, so each interval that excludes 0 is a false
positive. Their share estimates how often a real run's "significant" verdict comes from noise alone (the
nominal rate is 1 − confidence); a much higher share means the intervals are too narrow here (drift,
noisy neighbours, frequency scaling: ``nearmetal doctor``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from scipy import stats as sps

from nearmetal.api import Results
from nearmetal.errors import NearmetalError
from nearmetal.plan import LoadedPlan, parse_plan_text
from nearmetal.plan.models import NAME_PATTERN

DEFAULT_COPIES = 4


def aa_plan(loaded: LoadedPlan, copies: int = DEFAULT_COPIES) -> LoadedPlan:
    """The plan with only its baseline variant, plus ``copies - 1`` identical copies of it."""
    if copies < 2:
        raise NearmetalError(
            "an A/A run needs at least 2 copies of the baseline", fix="use --copies 2 or more"
        )
    raw: dict[str, Any] = yaml.safe_load(loaded.text) or {}
    baseline = loaded.plan.baseline
    spec = (raw.get("variants") or {}).get(baseline)
    stem = baseline[:55]
    variants = {baseline: spec, **{f"{stem}-aa{i}": spec for i in range(1, copies)}}
    raw["variants"] = variants
    raw["baseline"] = baseline
    raw["name"] = f"{loaded.plan.name[:59]}-aa"
    raw["description"] = (
        f"A/A: the baseline '{baseline}' of {loaded.plan.name} against {copies - 1} copies of itself"
    )
    # the matrix may name parameters of variants' overrides only through workloads, which are kept as they are
    text = yaml.safe_dump(raw, sort_keys=False)
    return parse_plan_text(text, source=f"{loaded.source} (A/A)")


@dataclass
class AASummary:
    """False positives among the A/A comparisons (primary metric of each workload and matrix point)."""

    comparisons: int
    false_positives: int
    confidence: float  # of each interval
    rate_low: float  # Clopper–Pearson interval of the false-positive rate, at the same confidence
    rate_high: float
    no_interval: int = 0  # comparisons with too few trials for an interval
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.false_positives / self.comparisons if self.comparisons else float("nan")

    @property
    def expected(self) -> float:
        return 1 - self.confidence

    @property
    def verdict(self) -> str:
        if not self.comparisons:
            return "no comparison had an interval: run more trials"
        if self.rate_low > self.expected:
            return (
                f"intervals are too narrow on this machine: {self.rate:.0%} false positives, more than the"
                f" {self.expected:.0%} expected even at the low end of its interval; run `nearmetal doctor`"
                " and treat borderline differences with care"
            )
        return f"consistent with the nominal {self.expected:.0%}" + (
            " (few comparisons: the rate is known only roughly)"
            if self.rate_high - self.rate_low > 0.3
            else ""
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "comparisons": self.comparisons,
            "false_positives": self.false_positives,
            "rate": self.rate,
            "rate_low": self.rate_low,
            "rate_high": self.rate_high,
            "expected": self.expected,
            "no_interval": self.no_interval,
            "verdict": self.verdict,
            "rows": self.rows,
        }


def false_positive_rate(results: Results, metric: str | None = None) -> AASummary:
    """The share of an A/A run's comparisons whose interval excludes 0, with a Clopper–Pearson interval."""
    results.with_intervals(metric)
    analysis = results.analysis
    significant = total = missing = 0
    rows = []
    for cell in results.cells:
        if cell.is_baseline:
            continue
        comp = analysis.comparison(cell.cell_id, metric or cell.primary_metric)
        if comp is None:
            continue
        # each row's own interval (not the family-wise verdict): what the nominal level promises per row
        row_significant = comp.loss.row_significant
        if row_significant is None:
            missing += 1
            continue
        total += 1
        significant += int(row_significant)
        rows.append(
            {
                "cell": cell.key,
                "metric": comp.metric,
                "loss_pct": comp.loss.loss * 100,
                "ci_low_pct": comp.loss.low * 100,  # type: ignore[operator]
                "ci_high_pct": comp.loss.high * 100,  # type: ignore[operator]
                "false_positive": bool(row_significant),
            }
        )
    if total:
        ci = sps.binomtest(significant, total).proportion_ci(results.confidence, method="exact")
        low, high = float(ci.low), float(ci.high)
    else:
        low, high = 0.0, 1.0
    return AASummary(total, significant, results.confidence, low, high, missing, rows)


__all__ = ["DEFAULT_COPIES", "NAME_PATTERN", "AASummary", "aa_plan", "false_positive_rate"]
