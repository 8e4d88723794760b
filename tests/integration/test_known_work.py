"""Issue 28, item 7: known work on real processes. A Python loop and the same loop with 1.5× the iterations,
the true ratio timed outside nearmetal (best-of-7, interleaved), then a nearmetal run of base / identical
copy / heavier loop. On a busy host (load 4–15 while this was written) what holds is coverage-style: the
heavier row's interval contains the true ratio and the A/A row is not called significant, each at the
plan's 99% level. The "true" ratio is itself measured on the same busy host (best-of-5), so one run misses it
more often than one in a hundred (``benchmarks/known_work.py``: 52 of 60 per-run truths covered at 95%); a
miss is therefore measured again with a fresh seed and truth, and the test fails when both runs miss — an
interval that is biased or too narrow misses both. ``benchmarks/known_work.py`` repeats it and prints the
table (docs/validity.md)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from paths import REPO


def _known_work():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("known_work", REPO / "benchmarks" / "known_work.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(420)
def test_the_heavier_loops_interval_covers_the_true_ratio(tmp_path: Path) -> None:
    """CPU time of the loop (what other processes on a shared host disturb least): 4 blocks, 99% intervals."""
    known_work = _known_work()
    rows = []
    for seed in (1, 2):
        workdir = tmp_path / f"seed-{seed}"
        workdir.mkdir()
        row = known_work.one_run(workdir, 3_000_000, 4, seed=seed, timer="cpu", confidence=0.99, best_of=5)
        assert 0.3 < row["truth"] < 0.7, row  # 1.5× the iterations: about +50% CPU time
        rows.append(row)
        if row["covered"] and not row["aa_significant"]:
            break
    assert any(r["covered"] for r in rows), rows
    assert not all(r["aa_significant"] for r in rows), rows
