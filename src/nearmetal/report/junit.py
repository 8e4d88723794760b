"""A run's verdicts as a JUnit XML report, for CI systems (GitLab, Jenkins, GitHub test reporters): one test
case per compared cell (variant × matrix point × metric against its baseline), failed when the loss lies
wholly above ``fail_above`` (the interval's low bound beyond it: a loss for sure, not noise), skipped when
it cannot be judged (no interval, or a contended cell under the contention guard)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING

from nearmetal.analysis import describe_loss
from nearmetal.report.tables import fmt_estimate

if TYPE_CHECKING:
    from nearmetal.api import Results


def junit_xml(results_list: list[Results], fail_above: float = 0.0) -> str:
    """The JUnit XML of runs: a ``testsuite`` per run, a ``testcase`` per comparison."""
    suites = ET.Element("testsuites", name="nearmetal")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    total_time = 0.0
    for results in results_list:
        run = results.run
        suite = ET.SubElement(suites, "testsuite", name=f"{run.name} ({run.id})")
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        suite_time = 0.0
        props = ET.SubElement(suite, "properties")
        for name, value in (
            ("run", run.id),
            ("plan", run.name),
            ("host", run.host),
            ("fail_above", f"{fail_above:g}"),
        ):
            ET.SubElement(props, "property", name=name, value=str(value))
        for comp in results.analysis.comparisons:
            cell = comp.cell
            seconds = sum(
                (t.ended_at or 0) - (t.started_at or 0)
                for t in results.trials
                if t.cell_id == cell.cell_id and t.ended_at and t.started_at
            )
            point = f"[{cell.point_label}]" if cell.point_label else ""
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"{run.name}.{cell.workload}",
                name=f"{cell.variant}{point} {comp.metric} vs {comp.baseline.variant}",
                time=f"{max(0.0, seconds):.3f}",
            )
            counts["tests"] += 1
            suite_time += max(0.0, seconds)
            estimate = fmt_estimate(comp.loss)
            contended = results.contention_verdict(cell)
            if contended:
                ET.SubElement(case, "skipped", message=contended)
                counts["skipped"] += 1
            elif comp.loss.low is None or comp.loss.high is None:
                ET.SubElement(case, "skipped", message=f"no interval: {estimate}")
                counts["skipped"] += 1
            elif comp.loss.low > fail_above:
                failure = ET.SubElement(
                    case,
                    "failure",
                    message=f"loss {estimate} lies wholly above {fail_above:.1%}",
                    type="significant-loss",
                )
                failure.text = (
                    f"{cell.key} {comp.metric}: {describe_loss(comp.loss)}; loss {estimate} "
                    f"({comp.loss.confidence:.0%} interval, {comp.loss.design}) vs {comp.baseline.variant}"
                )
                counts["failures"] += 1
            ET.SubElement(case, "system-out").text = f"loss {estimate}: {describe_loss(comp.loss)}"
        for key, count in counts.items():
            suite.set(key, str(count))
            totals[key] += count
        suite.set("time", f"{suite_time:.3f}")
        total_time += suite_time
    for key, count in totals.items():
        suites.set(key, str(count))
    suites.set("time", f"{total_time:.3f}")
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def write_junit(results_list: list[Results], path: Path, fail_above: float = 0.0) -> int:
    """Write the report (directories made); returns the number of failed test cases."""
    text = junit_xml(results_list, fail_above)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return text.count("<failure ")
