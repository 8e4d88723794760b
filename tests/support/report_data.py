"""Runs written straight into a real store with chosen numbers, for report tests that need a shape no
program on the test machine produces (fio-like bandwidth vs clients, latency percentiles, an outlier).
The store, the analysis and the renderers under test are the real ones; only the measurements are made up."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import yaml

from nearmetal.metrics import Metric
from nearmetal.store import Store


@dataclass
class SyntheticCell:
    workload: str
    variant: str
    point: dict[str, Any] = field(default_factory=dict)
    kind: str = "command"
    baseline: bool = False

    @property
    def cell_id(self) -> str:
        key = json.dumps([self.workload, self.variant, self.point], sort_keys=True)
        return hashlib.sha256(key.encode()).hexdigest()[:10]

    @property
    def key(self) -> str:
        label = ",".join(f"{k}={v}" for k, v in sorted(self.point.items()))
        return f"{self.workload}/{self.variant}" + (f"/{label}" if label else "")


def write_run(
    store: Store,
    cells: list[SyntheticCell],
    metrics: Callable[[SyntheticCell, int, np.random.Generator], list[Metric]],
    repeats: int = 5,
    run_id: str | None = None,
    plan: dict[str, Any] | None = None,
    seed: int = 7,
    environment: dict[str, str] | None = None,
    trial_fields: Callable[[SyntheticCell], dict[str, Any]] | None = None,
) -> str:
    """Store a finished run whose trials carry ``metrics(cell, repeat, rng)``, interleaved like a real run;
    ``trial_fields(cell)`` may set a cell's trials' ``placement`` and ``caveats``."""
    run_id = run_id or f"synthetic-{time.time_ns()}"
    plan = plan or {
        "name": "synthetic",
        "workloads": {c.workload: {"kind": c.kind} for c in cells},
        "variants": {c.variant: [] for c in cells},
        "baseline": next(c.variant for c in cells if c.baseline),
    }
    text = yaml.safe_dump(plan, sort_keys=False)
    now = time.time()
    store.create_run(
        id=run_id,
        name=plan["name"],
        description="made-up numbers in a real store",
        plan_text=text,
        plan_source="synthetic.yaml",
        plan_hash=hashlib.sha256(text.encode()).hexdigest(),
        status="running",
        started_at=now,
        host="test-host",
        seed=seed,
        nearmetal_version="test",
        info={},
    )
    store.set_environment(run_id, environment or {"cpu.model": "Test CPU", "cpu.logical": "2"})
    rng = np.random.default_rng(seed)
    seq = 0
    for repeat in range(repeats):
        order = list(cells)
        rng.shuffle(order)
        for cell in order:
            seq += 1
            store.add_trial(
                metrics(cell, repeat, rng),
                run_id=run_id,
                trial_key=f"{cell.cell_id}-r{repeat}",
                cell_id=cell.cell_id,
                cell_key=cell.key,
                comparison_key=json.dumps([cell.workload, cell.point], sort_keys=True, separators=(",", ":")),
                workload=cell.workload,
                kind=cell.kind,
                variant=cell.variant,
                is_baseline=cell.baseline,
                params=dict(cell.point),
                point=dict(cell.point),
                layers=[],
                repeat_index=repeat,
                is_warmup=False,
                block=repeat,
                seq=seq,
                status="ok",
                started_at=now + seq,
                ended_at=now + seq + 0.5,
                output_dir="",
                **{"placement": {}, "caveats": [], **(trial_fields(cell) if trial_fields else {})},
            )
    store.finish_run(run_id, "finished")
    return run_id
