"""The root side of a rootless trial reads what the user's child wrote without following its links, copies
regular files only (sparse ones sparse, within limits), and takes the child's outcome only when it is one."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nearmetal.run import asuser
from nearmetal.run.asuser import ChildOutcome, _read_outcome, clean_text, copy_back


def _users(*paths: Path) -> None:
    """Files as the user's child makes them: not root's (run as root, given to nobody)."""
    if os.geteuid() == 0:
        for path in paths:
            os.chown(path, 65534, 65534)


def _copy(tmp_path: Path, child_name: str = "child") -> tuple[Path, asuser.CopyReport]:
    trial = tmp_path / "trial"
    trial.mkdir(exist_ok=True)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return trial, copy_back(fd, child_name, trial)
    finally:
        os.close(fd)


def test_copying_back_skips_links_fifos_and_root_files(tmp_path: Path) -> None:
    child = tmp_path / "child"
    (child / "sub").mkdir(parents=True)
    (child / "main.stdout").write_text("measured\n")
    (child / "sub" / "fio.json").write_text("{}")
    secret = tmp_path / "secret"
    secret.write_text("root's\n")
    (child / "main.stderr").symlink_to(secret)
    (child / "linked-dir").symlink_to(tmp_path)
    os.mkfifo(child / "pipe")
    _users(child / "main.stdout", child / "sub" / "fio.json")
    as_root = os.geteuid() == 0
    if as_root:
        (child / "roots").write_text("x")  # root's own file (a hard link to one of them): left behind
    trial, report = _copy(tmp_path)
    assert sorted(str(p.relative_to(trial)) for p in trial.rglob("*")) == [
        "main.stdout",
        "sub",
        "sub/fio.json",
    ]
    assert (trial / "main.stdout").read_text() == "measured\n"
    assert report.files == 2 and len(report.left_out) == 3 + as_root, report.left_out
    assert any("FIFO" in line for line in report.left_out)


def test_a_child_directory_that_is_a_link_copies_nothing(tmp_path: Path) -> None:
    (tmp_path / "etc-like").mkdir()
    (tmp_path / "etc-like" / "shadow").write_text("secret")
    (tmp_path / "child").symlink_to(tmp_path / "etc-like")
    trial, report = _copy(tmp_path)
    assert list(trial.iterdir()) == [] and report.files == 0


def test_a_sparse_file_stays_sparse_and_the_byte_limit_cuts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    child = tmp_path / "child"
    child.mkdir()
    with open(child / "a-sparse", "wb") as f:
        f.write(b"head")
        f.truncate(1 << 40)  # 1 TiB apparent, one block allocated
    with open(child / "big", "wb") as f:
        f.write(os.urandom(3 << 20))
    _users(*child.iterdir())
    monkeypatch.setattr(asuser, "COPY_MAX_BYTES", 1 << 20)
    trial, report = _copy(tmp_path)
    sparse = (trial / "a-sparse").stat()
    assert sparse.st_size == 1 << 40 and sparse.st_blocks * 512 < 1 << 20
    assert (trial / "a-sparse").open("rb").read(4) == b"head"
    # the 1 MiB budget: "big" comes back cut, and says so
    assert (trial / "big").stat().st_size <= 1 << 20
    assert report.truncated and any("copy-back limit" in line for line in report.left_out)


def test_the_file_count_limit_stops_the_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    child = tmp_path / "child"
    child.mkdir()
    for i in range(20):
        (child / f"f{i:02d}").write_text("x")
        _users(child / f"f{i:02d}")
    monkeypatch.setattr(asuser, "COPY_MAX_FILES", 5)
    trial, report = _copy(tmp_path)
    assert len(list(trial.iterdir())) == 5 and report.truncated


def _outcome(tmp_path: Path, data: object, name: str = "outcome.json") -> object:
    (tmp_path / name).write_text(data if isinstance(data, str) else json.dumps(data))
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return _read_outcome(fd, "outcome.json")
    finally:
        os.close(fd)


def test_an_outcome_that_is_a_link_a_fifo_or_not_json_is_not_taken(tmp_path: Path) -> None:
    good = _outcome(tmp_path, {"status": "ok", "wall_s": 1.0})
    assert isinstance(good, dict) and good["status"] == "ok"
    (tmp_path / "outcome.json").unlink()
    (tmp_path / "real.json").write_text("{}")
    (tmp_path / "outcome.json").symlink_to(tmp_path / "real.json")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    assert "not a regular file" in str(_read_outcome(fd, "outcome.json"))
    (tmp_path / "outcome.json").unlink()
    os.mkfifo(tmp_path / "outcome.json")  # would hang a plain open
    assert "not a regular file" in str(_read_outcome(fd, "outcome.json"))
    (tmp_path / "outcome.json").unlink()
    assert _read_outcome(fd, "outcome.json") is None
    os.close(fd)
    assert _outcome(tmp_path, "not json") == "its outcome file is not JSON"


def test_a_forged_outcome_gives_one_line_and_text_comes_back_plain(tmp_path: Path) -> None:
    assert "metrics" in str(_outcome(tmp_path, {"status": "ok", "wall_s": 1, "metrics": [{"value": 1}]}))
    html = {
        "status": "ok",
        "wall_s": 1,
        "metrics": [{"name": "<img src=x>", "value": 1, "direction": "higher"}],
    }
    assert "metrics.0.name" in str(_outcome(tmp_path, html))
    markup = {
        "status": "ok",
        "wall_s": 1,
        "metrics": [{"name": "[bold]x[/]", "value": 1, "direction": "higher"}],
    }
    assert isinstance(_outcome(tmp_path, markup), str)
    escapes = {
        "status": "failed",
        "wall_s": 1,
        "error": "\x1b]0;owned\x07\x1b[2Jboom\r",
        "placement": {"k\x1b[31m": ["v\x1b[0m"]},
    }
    out = _outcome(tmp_path, escapes)
    assert isinstance(out, dict)
    assert out["error"] == "boom" and out["placement"] == {"k": ["v"]}
    assert isinstance(_outcome(tmp_path, [1, 2]), str)
    assert clean_text("a\x1b[1mb\x00c\nd") == "abc\nd"
    assert ChildOutcome.model_validate({"status": "ok", "wall_s": 0}).metrics == []
