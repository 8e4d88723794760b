"""Every shipped study, in every form (full, quick, GPU), is a valid plan: it loads, expands into cells whose
layers and workloads are registered, names its baseline, and its quick form is a smaller copy of the study
(the same programs under the same layers, fewer or shorter trials) — so `nearmetal study NAME --quick` in CI runs what
the full study would show. (Each study's run and table: tests/integration.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from nearmetal.layers import LAYERS
from nearmetal.plan import load_plan
from nearmetal.plan.load import LoadedPlan
from nearmetal.run.preflight import MAX_TRIALS
from nearmetal.studies import has_gpu_form, study_names, study_path
from nearmetal.workloads import WORKLOADS

STUDIES = study_names()


def _forms(name: str) -> list[tuple[str, Path]]:
    forms = [("full", study_path(name))]
    quick = study_path(name).with_name(f"{name}.quick.yaml")
    if quick.exists():
        forms.append(("quick", quick))
    if has_gpu_form(name):
        forms.append(("gpu", study_path(name, form="gpu")))
    return forms


def _repeats(loaded: LoadedPlan) -> int:
    repeats = loaded.plan.repeats
    return int(getattr(repeats, "max", None) or getattr(repeats, "count", None) or repeats)


def test_the_studies_of_the_seeds_are_shipped() -> None:
    # seed 000 (cpu-quota), 001 (fs-layers, image-builds, net-paths, time-slicing, partitions, scaling),
    # resilience (failover, severed-mount)
    assert {
        "cpu-quota",
        "fs-layers",
        "image-builds",
        "net-paths",
        "time-slicing",
        "partitions",
        "scaling",
    } <= set(STUDIES)
    assert all(study_path(name).with_name(f"{name}.quick.yaml").exists() for name in STUDIES)


@pytest.mark.parametrize("name", STUDIES)
def test_every_form_of_the_study_is_a_valid_plan(name: str) -> None:
    for form, path in _forms(name):
        loaded = load_plan(path)
        assert loaded.cells, (name, form)
        assert len(loaded.cells) <= MAX_TRIALS, (name, form)
        variants = {cell.variant for cell in loaded.cells}
        baseline = loaded.plan.baseline
        assert baseline in variants, (name, form, baseline)
        for cell in loaded.cells:
            assert cell.kind in WORKLOADS, (name, form, cell.kind)
            for config in cell.layers:
                assert config.layer in LAYERS, (name, form, config.layer)
            assert cell.timeout > 0, (name, form, cell.key)
        # the baseline of a study is what the layers are compared with: it has fewer layers than any variant
        base_layers = min(len(c.layers) for c in loaded.cells if c.variant == baseline)
        assert all(len(c.layers) >= base_layers for c in loaded.cells), (name, form)


@pytest.mark.parametrize("name", STUDIES)
def test_the_quick_form_is_a_smaller_copy_of_the_study(name: str) -> None:
    """Its cells may be renamed and fewer, but it measures the same programs under the same mechanisms."""
    full = load_plan(study_path(name))
    quick = load_plan(study_path(name, quick=True))

    def layer_kinds(loaded: LoadedPlan) -> set[str]:
        return {config.layer for cell in loaded.cells for config in cell.layers}

    assert {c.kind for c in quick.cells} <= {c.kind for c in full.cells}, name
    assert layer_kinds(quick) <= layer_kinds(full), name
    if layer_kinds(full):  # a study of layers keeps one in its quick form (others vary builders or placement)
        assert layer_kinds(quick), name
    # the quick form keeps the comparison: its baseline and at least one other variant
    assert len({c.variant for c in quick.cells}) >= 2 and quick.plan.baseline in {
        c.variant for c in quick.cells
    }
    assert len(quick.cells) * _repeats(quick) <= len(full.cells) * _repeats(full), name
