"""Issue 26, case 9: limits are applied before the work they limit. A matrix's cell count comes from its
value counts before any cell is built; a workload's output is read as a bounded tail or stream."""

from __future__ import annotations

import json

import pytest

from nearmetal.errors import PlanError
from nearmetal.plan.expand import MAX_CELLS
from nearmetal.plan.load import parse_plan_text


def _matrix_plan(*sizes: int, variants: int = 1) -> str:
    axes = ["argv", "tool_package", "env"][: len(sizes)]
    values = {
        "argv": lambda n: [["/bin/true", str(i)] for i in range(n)],
        "tool_package": lambda n: [f"p{i}" for i in range(n)],
        "env": lambda n: [{"N": str(i)} for i in range(n)],
    }
    matrix = "".join(
        f"  w.{axis}: {json.dumps(values[axis](n))}\n" for axis, n in zip(axes, sizes, strict=True)
    )
    names = ", ".join(f"v{i}: []" for i in range(variants))
    return (
        "name: big\nworkloads:\n  w: {kind: command, params: {argv: [/bin/true]}}\n"
        f"variants: {{{names}}}\nbaseline: v0\nmatrix:\n{matrix}"
    )


def test_a_ten_million_cell_matrix_is_refused_from_its_value_counts() -> None:
    # three axes of a few hundred values: ten million cells from 650 values (YAML of 11,000 took seconds)
    with pytest.raises(PlanError) as info:
        parse_plan_text(_matrix_plan(250, 200, 200), "big.yaml")
    (problem,) = info.value.problems
    assert "makes 10,000,000 cells (250 × 200 × 200 × 1" in problem and f"more than {MAX_CELLS:,}" in problem


def test_variants_count_in_the_cells() -> None:
    with pytest.raises(PlanError, match=r"makes 20,100 cells \(201 × 100"):
        parse_plan_text(_matrix_plan(201, variants=100), "big.yaml")


def test_a_plan_at_the_limit_still_expands() -> None:
    loaded = parse_plan_text(_matrix_plan(40, 5, variants=2), "ok.yaml")
    assert len(loaded.cells) == 400


def test_output_is_read_as_a_bounded_head_and_tail(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from nearmetal.backends.base import read_output, read_tail

    path = tmp_path / "main.stdout"
    with path.open("wb") as f:
        f.write(b"header=1\n")
        f.write(b"x" * 5_000_000)
        f.write(b"\nt=1.5\n")
    text = read_output(path, limit=1_000_000, head=100_000)
    assert len(text) < 1_100_000
    assert text.startswith("header=1\n") and text.endswith("t=1.5\n")
    assert "[nearmetal: 4,000,016 bytes of this output left out here]" in text
    assert read_output(path, limit=10_000_000) == path.read_text()
    assert read_tail(path, 7) == "\nt=1.5\n"


def test_an_output_that_is_a_link_or_a_fifo_is_not_read(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os

    from nearmetal.backends.base import read_output, read_tail

    secret = tmp_path / "secret"
    secret.write_text("root's secret\n")
    (tmp_path / "main.stdout").symlink_to(secret)
    os.mkfifo(tmp_path / "main.stderr")
    assert read_output(tmp_path / "main.stdout") == ""
    assert read_output(tmp_path / "main.stderr") == "" and read_tail(tmp_path / "main.stderr", 10) == ""
    assert read_output(tmp_path / "missing") == ""
