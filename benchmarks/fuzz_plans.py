"""Fuzz the plan loader with hypothesis and print how the documents ended.

    .venv/bin/python benchmarks/fuzz_plans.py [--examples N]    # N per family (default 2,500: 10,000 in all)

Every document must end as a plan or as one-line problems naming a field or a document position; any other
outcome (a traceback, a multi-line or unnamed problem) stops the run with hypothesis's smallest example.
The generators and the check are tests/support/plan_fuzz.py (the CI test runs a few hundred of each).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))

from hypothesis import HealthCheck, given, settings
from plan_fuzz import FAMILIES, check


def fuzz(family: str, strategy: object, examples: int, outcomes: Counter[tuple[str, str]]) -> None:
    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(strategy)
    def one(text: str) -> None:
        outcomes[(family, check(text))] += 1

    one()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2500, help="documents per family")
    args = parser.parse_args()
    outcomes: Counter[tuple[str, str]] = Counter()
    started = time.perf_counter()
    for family, strategy in FAMILIES.items():
        t0 = time.perf_counter()
        fuzz(family, strategy, args.examples, outcomes)
        n = sum(v for (f, _), v in outcomes.items() if f == family)
        print(f"{family:8s} {n:6d} documents in {time.perf_counter() - t0:6.1f} s", flush=True)
    total = sum(outcomes.values())
    classes = sorted({c for _, c in outcomes})
    print(
        f"\n{total} documents in {time.perf_counter() - started:.0f} s; no traceback, every problem one line\n"
    )
    print("| family | " + " | ".join(classes) + " | total |")
    print("|---" * (len(classes) + 2) + "|")
    for family in FAMILIES:
        row = [outcomes[(family, c)] for c in classes]
        print(f"| {family} | " + " | ".join(str(v) for v in row) + f" | {sum(row)} |")
    row = [sum(outcomes[(f, c)] for f in FAMILIES) for c in classes]
    print("| all | " + " | ".join(str(v) for v in row) + f" | {sum(row)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
