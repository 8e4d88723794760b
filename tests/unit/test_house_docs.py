"""docs/design.md names only what exists: every file path and every dotted ``nearmetal.…`` name it gives
resolves (issue 32: the design named modules that had moved). The section on other codebases names theirs."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from paths import REPO as ROOT

import nearmetal

SRC = Path(nearmetal.__file__).parent


def _design_text() -> str:
    text = (ROOT / "docs" / "design.md").read_text()
    return text.split("\n## Codebases to learn from", 1)[0]


def _path_exists(name: str) -> bool:
    candidates = [ROOT / name, SRC / name, SRC.parent / name, ROOT / "tests" / name]
    return any(p.exists() for p in candidates) or any(SRC.rglob(name))


def _dotted_resolves(name: str) -> bool:
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_every_file_the_design_names_exists() -> None:
    named = set(re.findall(r"`([A-Za-z0-9_./-]+\.(?:py|sh|yaml|md|json))`", _design_text()))
    missing = sorted(n for n in named if not _path_exists(n))
    assert not missing, f"docs/design.md names files that do not exist: {missing}"


def test_every_dotted_name_the_design_gives_resolves() -> None:
    named = set(re.findall(r"\bnearmetal(?:\.[A-Za-z_][A-Za-z0-9_]*)+", _design_text()))
    stale = sorted(n for n in named if not _dotted_resolves(n))
    assert not stale, f"docs/design.md names modules or objects that do not exist: {stale}"
