"""Block-level repair (issue 29): a block in which one trial waited for a CPU far more than its partners is
run again at the end of the run, up to a bound.

The paired comparison takes each block's trials as run side by side under the same conditions; a neighbour
that woke up during one trial of a block breaks that, for that block only. Such a block is found by the
trials' own wait (``cpu_wait_pct``, ``telemetry.schedwait``): one trial waited more than ``factor`` times the
median of its partners in the block *and* at least ``min_gap_pct`` percentage points more. Its trials are
marked ``repaired`` (kept in the store with their evidence, left out of the statistics like a failed trial,
but not counted as failures) and the whole block is run again as a new block. At most ``max_blocks`` blocks
and at most a fifth of the run's blocks are repaired, the worst first, and a repaired block is never repaired
again: a host that is busy all the time is the contention verdict's business, not this.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nearmetal.backends.base import Backend

REPAIRED = "repaired"  # the stored status of a trial whose block was run again


@dataclass(frozen=True)
class RepairPolicy:
    max_blocks: int = 2
    factor: float = 3.0
    min_gap_pct: float = 10.0
    max_share: float = 0.2


@dataclass(frozen=True)
class BadBlock:
    block: int
    cell_id: str  # the trial that waited
    wait_pct: float
    partners_pct: float  # the median wait of the block's other trials

    @property
    def gap_pct(self) -> float:
        return self.wait_pct - self.partners_pct

    def to_dict(self) -> dict[str, object]:
        return {
            "block": self.block,
            "cell_id": self.cell_id,
            "cpu_wait_pct": round(self.wait_pct, 2),
            "partners_cpu_wait_pct": round(self.partners_pct, 2),
        }


def uneven_blocks(
    waits: Mapping[int, Mapping[str, float]], policy: RepairPolicy = RepairPolicy()
) -> list[BadBlock]:
    """Every block (block → cell id → ``cpu_wait_pct`` of its measured trial) in which one trial waited far
    more than its partners, worst first. Blocks with fewer than two trials that have a wait are skipped."""
    out = []
    for block, by_cell in waits.items():
        known = {c: w for c, w in by_cell.items() if w is not None and math.isfinite(w)}
        if len(known) < 2:
            continue
        cell, worst = max(known.items(), key=lambda kv: kv[1])
        partners = statistics.median(w for c, w in known.items() if c != cell)
        if worst - partners >= policy.min_gap_pct and worst > policy.factor * partners:
            out.append(BadBlock(block, cell, worst, partners))
    return sorted(out, key=lambda b: (-b.gap_pct, b.block))


def blocks_to_repair(
    waits: Mapping[int, Mapping[str, float]],
    policy: RepairPolicy = RepairPolicy(),
    already: Iterable[int] = (),
) -> list[BadBlock]:
    """The blocks to run again: uneven ones not repaired before, within ``max_blocks`` and ``max_share`` of
    the run's blocks (counting those already repaired)."""
    done = set(already)
    bound = min(policy.max_blocks, math.floor(policy.max_share * len(waits)))
    room = max(0, bound - len(done))
    return [b for b in uneven_blocks(waits, policy) if b.block not in done][:room]


def waits_by_block(trials: Iterable[object]) -> dict[int, dict[str, float]]:
    """block → cell id → ``cpu_wait_pct`` from stored trials (``TrialRow``: measured, ok, with evidence)."""
    out: dict[int, dict[str, float]] = {}
    for t in trials:
        if getattr(t, "status", None) != "ok" or getattr(t, "is_warmup", False):
            continue
        outside = (getattr(t, "placement", None) or {}).get("outside") or {}
        wait = outside.get("cpu_wait_pct")  # None where too short to tell (telemetry.schedwait)
        block = getattr(t, "block", None)
        if wait is None or block is None:
            continue
        out.setdefault(int(block), {})[str(t.cell_id)] = float(wait)  # type: ignore[attr-defined]
    return out


def repair_blocks(
    store: Any, run_id: str, loaded: Any, seed: int, run_blocks: Callable[[list[Any]], None], backend: Backend
) -> None:
    """After the run's last block: run the uneven blocks again as new blocks (``run_blocks`` runs and stores
    trials), then mark their first trials ``repaired`` and record each in the run's ``info["repaired"]``."""
    from nearmetal.run.schedule import schedule

    policy = RepairPolicy(max_blocks=loaded.plan.analysis.max_repaired_blocks)
    if policy.max_blocks <= 0 or backend.remote:
        return
    rows = store.trials(run_id)
    done: list[dict[str, Any]] = list((store.get_run(run_id).info or {}).get("repaired") or [])
    bad = blocks_to_repair(waits_by_block(rows), policy, {int(d["block"]) for d in done})
    measured_blocks = [r.block for r in rows if not r.is_warmup]
    next_block = max([*measured_blocks, *(int(d["rerun_as"]) for d in done)], default=0) + 1
    for offset, block in enumerate(bad):
        again = next_block + offset
        in_block = [r for r in rows if r.block == block.block and not r.is_warmup and r.status == "ok"]
        ids = {r.cell_id for r in in_block}
        cells = [c for c in loaded.cells if c.cell_id in ids]
        run_blocks(schedule(cells, loaded.plan.order, 0, again, 1, seed))
        store.set_trial_status([r.id for r in in_block], REPAIRED)
        done.append({**block.to_dict(), "rerun_as": again})
        store.update_run_info(run_id, {"repaired": done})
