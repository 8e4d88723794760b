"""The GPU-sharing advisor: the seed's How-To-Choose verdicts and MIG layouts checked against the profile table
of each card. That its manifests are ones the Kubernetes OpenAPI schema (kubernetes-validate) and the official
client's models accept: tests/integration/test_advise_manifests.py (the unit tier runs without the kubernetes
extra)."""

from __future__ import annotations

import pytest
import yaml

from nearmetal.advise import (
    recommend,
    time_slicing_configmap,
)
from nearmetal.advise.gpu_sharing import USE_CASES, parse_layout, resolve_card
from nearmetal.advise.manifests import dump_yaml
from nearmetal.host.gpu_profiles import GPU_MODELS, layout_problem, place_instances


@pytest.mark.parametrize(
    ("use_case", "card", "expected"),
    [
        ("latency-sensitive", "A100-40GB", "mig"),
        ("latency-sensitive", "T4", "vgpu"),  # no MIG on a T4: only vGPU's fixed share is predictable
        ("notebooks", "A100-80GB", "time-slicing"),
        ("simulation", "H100", "mig"),
        ("simulation", "V100", None),  # the table allows only MIG: whole GPUs then
        ("ci-runners", "A100-40GB", "time-slicing"),
    ],
)
def test_recommendation_follows_the_seed_table(use_case: str, card: str, expected: str | None) -> None:
    rec = recommend(use_case, card, users_per_gpu=3)
    assert rec.mechanism == expected
    assert rec.reasons and USE_CASES[use_case].why in rec.reasons
    if expected == "mig":
        assert rec.mig_layout and sum(rec.mig_layout.values()) == 3
        assert any("SMs" in c for c in rec.caveats)
    if expected == "time-slicing":
        assert rec.replicas == 3 and any("memory isolation" in c for c in rec.caveats)
    if expected is not None:
        assert any(e.startswith("seed 001") for e in rec.evidence)


def test_the_mig_loss_caveat_uses_the_card_table() -> None:
    rec = recommend("simulation", "A100-40GB", users_per_gpu=2)
    assert rec.mig_layout == {"3g.20gb": 2}
    assert any("9.3% of the SMs" in c and "108 → 98" in c for c in rec.caveats)
    h100 = recommend("simulation", "H100", users_per_gpu=7)
    assert h100.mig_layout == {"1g.10gb": 7} and h100.card == "H100-SXM5-80GB"


@pytest.mark.parametrize(
    ("card", "layout", "valid"),
    [
        ("A100-40GB", {"2g.10gb": 2, "1g.5gb": 3}, True),  # the seed's 2x2g.10gb-3x1g.5gb
        ("A100-40GB", {"4g.20gb": 1, "3g.20gb": 1}, True),
        ("A100-40GB", {"3g.20gb": 2}, True),
        ("A100-40GB", {"3g.20gb": 2, "1g.5gb": 1}, False),  # 7 compute slices but 9 memory slices
        ("A100-40GB", {"1g.5gb": 8}, False),
        ("A100-40GB", {"4g.20gb": 2}, False),
        ("A100-80GB", {"3g.40gb": 1, "2g.20gb": 1, "1g.10gb": 2}, True),
        ("A100-80GB", {"1g.20gb": 4}, True),
        ("H100-SXM5-80GB", {"7g.80gb": 1}, True),
        ("H100-SXM5-80GB", {"4g.40gb": 1, "3g.40gb": 1, "1g.10gb": 1}, False),
    ],
)
def test_mig_layouts_against_the_profile_table(card: str, layout: dict[str, int], valid: bool) -> None:
    model = GPU_MODELS[card]
    assert (layout_problem(model, layout) is None) == valid
    placed = place_instances(model, layout)
    if valid:
        assert placed is not None and len(placed) == sum(layout.values())
        slots = [s for name, start in placed for s in range(start, start + model.profile(name).memory_slices)]
        assert len(slots) == len(set(slots)) and max(slots) < 8


def test_a_profile_of_another_card_is_refused_by_name() -> None:
    problem = layout_problem(GPU_MODELS["A100-80GB"], {"1g.5gb": 1})
    assert problem and "no MIG profile '1g.5gb'" in problem and "1g.10gb" in problem
    with pytest.raises(ValueError, match="not valid"):
        recommend("simulation", "A100-40GB", mig_layout={"3g.20gb": 2, "1g.5gb": 1})


def test_embedded_configs_are_written_as_yaml_blocks() -> None:
    text = dump_yaml(time_slicing_configmap(2))
    assert "slice-2: |" in text and "replicas: 2" in text
    assert yaml.safe_load(text)["data"]["slice-2"].startswith("version: v1")


def test_layout_syntax() -> None:
    assert parse_layout("2x2g.10gb,3x1g.5gb") == {"2g.10gb": 2, "1g.5gb": 3}
    assert parse_layout("2x2g.10gb-3x1g.5gb") == {"2g.10gb": 2, "1g.5gb": 3}
    assert parse_layout("3g.20gb 3g.20gb") == {"3g.20gb": 2}
    assert resolve_card("NVIDIA A100-SXM4-80GB").name == "A100-80GB"
    assert resolve_card("Tesla T4") is None
