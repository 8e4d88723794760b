"""The root side of a rootless trial reads what the user's child wrote without following its links."""

from __future__ import annotations

import json
from pathlib import Path

from nearmetal.asuser import _copy_back, _read_outcome


def test_copying_back_skips_links_the_users_child_made(tmp_path: Path) -> None:
    child = tmp_path / "child"
    (child / "sub").mkdir(parents=True)
    (child / "main.stdout").write_text("measured\n")
    (child / "sub" / "fio.json").write_text("{}")
    secret = tmp_path / "secret"
    secret.write_text("root's\n")
    (child / "main.stderr").symlink_to(secret)
    (child / "linked-dir").symlink_to(tmp_path)
    trial = tmp_path / "trial"
    _copy_back(child, trial)
    assert sorted(str(p.relative_to(trial)) for p in trial.rglob("*")) == [
        "main.stdout",
        "sub",
        "sub/fio.json",
    ]
    assert (trial / "main.stdout").read_text() == "measured\n"


def test_an_outcome_that_is_a_link_or_not_json_is_not_read(tmp_path: Path) -> None:
    real = tmp_path / "real.json"
    real.write_text(json.dumps({"status": "ok", "wall_s": 1.0}))
    assert _read_outcome(real) == {"status": "ok", "wall_s": 1.0}
    link = tmp_path / "outcome.json"
    link.symlink_to(real)
    assert _read_outcome(link) is None
    (tmp_path / "bad.json").write_text("not json")
    assert _read_outcome(tmp_path / "bad.json") is None
    assert _read_outcome(tmp_path / "missing.json") is None
