"""House rules on the shape of modules (issue 32): none over 600 lines, one report module per shipped study
named like its YAML, and no list of layer kinds kept by hand (they are read from the registry's families)."""

from __future__ import annotations

import ast
from pathlib import Path

import nearmetal
from nearmetal.layers import FAMILIES, LAYERS, layer_kinds

SRC = Path(nearmetal.__file__).parent
MAX_LINES = 600
# modules allowed over MAX_LINES, with why; an entry whose module is back under the limit is an error (drop it)
OVER_LIMIT: dict[str, str] = {}
# report/studies modules that belong to no one study: shapes any plan can have
CROSS_STUDY_SHAPES = {
    "pods": "a run on the Kubernetes backend: the pods' limits, QoS and throttling",
    "rootless": "rootless cells beside their rootful twins, in any plan",
}
# literals that name layer kinds but are not kind lists: program names that happen to equal a kind
NOT_KIND_LISTS = {
    "host/cleanup.py": "USERNET_PROGRAMS: the user-mode network programs a leftover process runs",
    "layers/mounts.py": "the FUSE daemons and QEMU programs a filesystem layer may leave running",
}


def _modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def test_no_module_is_over_600_lines() -> None:
    too_long = {}
    for path in _modules():
        name = path.relative_to(SRC).as_posix()
        lines = len(path.read_text().splitlines())
        if lines > MAX_LINES and name not in OVER_LIMIT:
            too_long[name] = lines
    assert not too_long, f"split these at their seams (one concept per module): {too_long}"
    stale = [
        name
        for name in OVER_LIMIT
        if (SRC / name).exists() and len((SRC / name).read_text().splitlines()) <= MAX_LINES
    ]
    assert not stale, f"back under {MAX_LINES} lines: drop them from OVER_LIMIT: {stale}"


def test_every_study_report_module_is_named_like_its_study() -> None:
    studies = {p.name.split(".")[0] for p in (SRC / "studies").glob("*.yaml")}
    modules = {p.stem for p in (SRC / "report" / "studies").glob("*.py") if p.stem != "__init__"}
    misnamed = sorted(
        m for m in modules if m.replace("_", "-") not in studies and m not in CROSS_STUDY_SHAPES
    )
    assert not misnamed, (
        f"name a study's report module like its YAML (time-slicing → time_slicing): {misnamed}"
    )
    assert {"time_slicing", "partitions", "scaling", "failover", "severed_mount"} <= modules


def test_every_layer_declares_a_known_family() -> None:
    for kind in LAYERS:
        family = LAYERS.info(kind)["family"]
        assert family in FAMILIES, (kind, family)
        assert LAYERS[kind].family == family
    assert set(layer_kinds("network")) == {"netns", "slirp4netns", "pasta"}
    assert set(layer_kinds("filesystem")) == {"overlayfs", "fuse-overlayfs", "bindfs", "squashfuse", "tmpfs"}
    assert set(layer_kinds("filesystem", rootless_form=True)) == {"overlayfs", "fuse-overlayfs", "bindfs"}
    assert set(layer_kinds("sharing", "partition")) == {"colocate", "cpuset", "gpu"}


def test_no_list_of_layer_kinds_is_kept_by_hand() -> None:
    """A tuple, list or set of two or more layer kinds in the source is a list someone must remember to
    extend; read it from the registry instead (``layer_kinds(family)``)."""
    kinds = set(LAYERS)
    found = []
    for path in _modules():
        name = path.relative_to(SRC).as_posix()
        if name in NOT_KIND_LISTS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Tuple | ast.List | ast.Set):
                named = [e.value for e in node.elts if isinstance(e, ast.Constant) and e.value in kinds]
                if len(named) >= 2:
                    found.append(f"{name}:{node.lineno} {named}")
    assert not found, f"derive these from the layers' families (layers.layer_kinds): {found}"
