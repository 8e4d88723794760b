"""Block-level repair policy (issue 29): which blocks are run again. Pure, no host."""

from __future__ import annotations

from types import SimpleNamespace

from nearmetal.run.repair import RepairPolicy, blocks_to_repair, uneven_blocks, waits_by_block


def _run(blocks: int, bad: dict[int, tuple[str, float]] | None = None) -> dict[int, dict[str, float]]:
    waits = {b: {"base": 2.0, "q1": 3.0, "q2": 2.5} for b in range(blocks)}
    for block, (cell, wait) in (bad or {}).items():
        waits[block][cell] = wait
    return waits


def test_one_trial_that_waited_far_more_than_its_partners_marks_its_block() -> None:
    bad = uneven_blocks(_run(10, {3: ("q1", 45.0)}))
    assert [(b.block, b.cell_id) for b in bad] == [(3, "q1")]
    assert bad[0].partners_pct == 2.25 and bad[0].gap_pct == 42.75
    # evenly busy blocks are not uneven (that is the contention verdict's business), nor are small gaps
    assert not uneven_blocks({0: {"a": 40.0, "b": 42.0, "c": 41.0}})
    assert not uneven_blocks(_run(10, {3: ("q1", 9.0)}))
    # a block with a single trial that has a wait has no partner to compare with
    assert not uneven_blocks({0: {"a": 50.0, "b": float("nan")}})


def test_bounded_worst_first_and_never_twice() -> None:
    waits = _run(10, {1: ("q1", 30.0), 4: ("base", 60.0), 7: ("q2", 40.0)})
    chosen = blocks_to_repair(waits, RepairPolicy(max_blocks=2))
    assert [b.block for b in chosen] == [4, 7]
    # blocks repaired before count against the bound and are not chosen again
    assert [b.block for b in blocks_to_repair(waits, RepairPolicy(max_blocks=2), already={4})] == [7]
    assert blocks_to_repair(waits, RepairPolicy(max_blocks=2), already={4, 7}) == []
    # at most a fifth of the run's blocks: none of 4
    assert blocks_to_repair(_run(4, {1: ("q1", 50.0)})) == []
    assert blocks_to_repair(waits, RepairPolicy(max_blocks=0)) == []


def test_waits_from_stored_trials_skip_warmups_failures_and_missing_evidence() -> None:
    def row(
        cell: str, block: int, wait: float | None, status: str = "ok", warm: bool = False
    ) -> SimpleNamespace:
        outside = {} if wait is None else {"cpu_wait_pct": wait}
        return SimpleNamespace(
            cell_id=cell, block=block, status=status, is_warmup=warm, placement={"outside": outside}
        )

    rows = [
        row("a", 0, 1.0),
        row("b", 0, 50.0),
        row("a", 0, 9.0, warm=True),
        row("c", 0, 3.0, "failed"),
        row("d", 1, None),
    ]
    assert waits_by_block(rows) == {0: {"a": 1.0, "b": 50.0}}
