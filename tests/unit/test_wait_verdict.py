"""The contended verdict by what the trial waited (issue 29): pure functions, no host."""

from __future__ import annotations

import math
from pathlib import Path

from nearmetal.analysis.contention import (
    CONTENDED,
    TrialNoise,
    assess_cell,
    contention_verdict,
    trial_contended,
)
from nearmetal.run.shield import describe
from nearmetal.telemetry.schedwait import WaitEvidence


def test_wait_decides_when_measured_and_outside_cpu_only_explains() -> None:
    # a neighbour that used 150% of a CPU the trial did not want: not contended
    assert not trial_contended(TrialNoise(150.0, cpu_wait_pct=2.0))
    # a small neighbour that kept the trial off the CPU: contended
    assert trial_contended(TrialNoise(5.0, cpu_wait_pct=40.0))
    assert not trial_contended(TrialNoise(5.0, cpu_wait_pct=40.0), max_cpu_wait_pct=50.0)
    # records from before the wait existed: the outside-CPU rule
    assert trial_contended(TrialNoise(30.0))
    assert not trial_contended(TrialNoise(10.0))


def test_cell_describes_the_wait_and_names_neighbours_in_cpus() -> None:
    busy = TrialNoise(120.0, top=(("stress-ng-cpu", 2, 2.4),), cpu_wait_pct=38.0)
    cell = assess_cell([busy, busy], seconds=4.0)
    assert cell.is_contended and cell.by_wait
    text = cell.describe()
    assert "waited 38% of their runnable time" in text, text
    assert "stress-ng-cpu 1.2 CPUs" in text, text
    quiet = assess_cell([TrialNoise(150.0, cpu_wait_pct=1.0)] * 5)
    assert not quiet.is_contended
    assert contention_verdict(quiet, cell, guard=True) == CONTENDED
    assert contention_verdict(quiet, quiet, guard=True) is None


def test_noise_from_placement_with_wait_only_and_with_both() -> None:
    only_wait = TrialNoise.from_placement({"outside": {"cpu_wait_pct": 22.5}})
    assert only_wait is not None and only_wait.cpu_wait_pct == 22.5 and math.isnan(only_wait.outside_cpu_pct)
    assert trial_contended(only_wait)
    both = TrialNoise.from_placement({"outside": {"outside_cpu_pct": 90.0, "cpu_wait_pct": None}})
    assert both is not None and not both.has_wait and trial_contended(both)
    cell = assess_cell([only_wait, both])
    assert cell.trials == 2 and cell.mean_wait_pct == 22.5


def test_quota_throttling_is_not_interference() -> None:
    # 1 s run, 1.5 s runnable-waiting of which 1.2 s the trial's own quota held it off
    ev = WaitEvidence(run_s=1.0, wait_s=1.5, throttled_s=1.2, tasks=2, samples=5, seconds=2.5)
    assert ev.contended_wait_s == 1.5 - 1.2
    assert abs(ev.cpu_wait_pct - 100 * 0.3 / 1.3) < 1e-9
    # throttling read larger than the wait (another CPU's throttled period): never negative
    assert WaitEvidence(1.0, 0.1, 0.5, 1, 1, 1.0).cpu_wait_pct == 0.0
    assert {m.name for m in ev.metrics()} >= {"cpu_wait_pct", "cpu_wait_s"}
    # runnable for 4 ms (a sleep, a ping): its share is chance, not evidence
    assert math.isnan(WaitEvidence(0.002, 0.002, 0.0, 1, 3, 0.5).cpu_wait_pct)
    # samples that saw a third of the tree's CPU time (threads that ended between them): not trusted
    short_sighted = WaitEvidence(1.0, 0.5, 0.0, 2, 3, 2.0, tree_cpu_s=3.0)
    assert short_sighted.coverage == 1 / 3 and math.isnan(short_sighted.cpu_wait_pct)


def test_shield_header_line() -> None:
    assert describe(None) == "off"
    line = describe(
        {"cgroup": "nearmetal-r1-shield", "settings": {"cpu.shares": "262144"}, "io_weight": False}
    )
    assert "nearmetal-r1-shield" in line and "cpu.shares 262144" in line and "no I/O weight" in line


def test_plan_shield_and_wait_threshold_and_spec_round_trip() -> None:
    from nearmetal.plan import Trial, parse_plan_text
    from nearmetal.run.trial import TrialSpec

    loaded = parse_plan_text(
        "name: s\nworkloads: {w: {kind: command, params: {argv: [/bin/true]}}}\nvariants: {a: []}\n"
        "shield: true\nanalysis: {max_cpu_wait_pct: 15, max_repaired_blocks: 0}\n"
    )
    assert loaded.plan.shield is True
    assert loaded.plan.analysis.max_cpu_wait_pct == 15 and loaded.plan.analysis.max_repaired_blocks == 0
    spec = TrialSpec.from_trial(Trial(loaded.cells[0], 0), "r1", Path("/tmp/x"), 1)
    spec.shield = {
        "parent": "nearmetal-r1-shield",
        "procs": ["/sys/fs/cgroup/cpu/nearmetal-r1-shield/cgroup.procs"],
    }
    assert TrialSpec.from_dict(spec.to_dict()).shield == spec.shield
    # a spec written before the shield existed still reads
    old = {k: v for k, v in spec.to_dict().items() if k != "shield"}
    assert TrialSpec.from_dict(old).shield == {}
