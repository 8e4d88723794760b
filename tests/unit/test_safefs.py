"""safefs: directories verified before use, walks that follow no link, regular files only (issue 26)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from nearmetal.host import safefs
from nearmetal.host.safefs import UnsafePathError


def test_a_private_dir_is_made_0700_and_owned_by_this_user(tmp_path: Path) -> None:
    fd = safefs.private_dir(tmp_path / "a" / "b")
    try:
        st = os.fstat(fd)
        assert st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) == 0o700
    finally:
        os.close(fd)
    # an existing one with a wider mode is narrowed (it is ours)
    (tmp_path / "a" / "b").chmod(0o755)
    os.close(safefs.private_dir(tmp_path / "a" / "b", 0o711))
    assert stat.S_IMODE((tmp_path / "a" / "b").stat().st_mode) == 0o711


def test_a_private_dir_that_is_a_link_or_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(UnsafePathError, match="symbolic link"):
        safefs.private_dir(tmp_path / "link")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UnsafePathError):
        safefs.private_dir(tmp_path / "file")
    # a link on the way is refused too, not followed
    with pytest.raises(UnsafePathError, match="not a directory"):
        safefs.private_dir(tmp_path / "link" / "below")
    assert not (tmp_path / "real" / "below").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="making a directory of another owner needs root")
def test_a_directory_another_user_made_or_can_write_is_refused(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, 65534, 65534)
    with pytest.raises(UnsafePathError, match=r"owned by .*65534"):
        safefs.private_dir(theirs)
    with pytest.raises(UnsafePathError, match="owned by"):
        safefs.check_tree(theirs / "below")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(UnsafePathError, match="can be written by other users"):
        safefs.check_tree(shared)
    # sticky and world-writable (as /tmp): passable, what is in it must be root's or ours
    shared.chmod(0o1777)
    safefs.check_tree(shared)
    os.close(safefs.private_dir(shared / "mine"))
    (shared / "planted").mkdir()
    os.chown(shared / "planted", 65534, 65534)
    with pytest.raises(UnsafePathError, match="owned by"):
        safefs.private_dir(shared / "planted")


def test_open_beneath_opens_regular_files_only_and_never_through_a_link(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("data")
    (tmp_path / "outside").write_text("secret")
    (tmp_path / "d" / "link").symlink_to(tmp_path / "outside")
    (tmp_path / "d" / "dirlink").symlink_to(tmp_path)
    os.mkfifo(tmp_path / "d" / "fifo")
    base = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = safefs.open_beneath(base, "d/f")
        assert os.read(fd, 10) == b"data"
        assert os.get_blocking(fd) is not False  # the O_NONBLOCK used to open is cleared
        os.close(fd)
        for bad in ("d/link", "d/dirlink/outside", "d/fifo", "../x", "/etc/passwd"):
            with pytest.raises(UnsafePathError):
                safefs.open_beneath(base, bad)
        sub = safefs.mkdir_beneath(base, "made/deeper", 0o750)
        assert stat.S_IMODE(os.fstat(sub).st_mode) == 0o750
        os.close(sub)
        with pytest.raises(UnsafePathError):
            safefs.mkdir_beneath(base, "d/dirlink/x")
        assert not (tmp_path / "x").exists()
    finally:
        os.close(base)


def test_the_walk_works_without_openat2_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(safefs, "_openat2_works", False)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("data")
    (tmp_path / "d" / "dirlink").symlink_to(tmp_path / "d")
    base = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.close(safefs.open_beneath(base, "d/f"))
        with pytest.raises(UnsafePathError):
            safefs.open_beneath(base, "d/dirlink/f")
    finally:
        os.close(base)


def test_remove_entry_unlinks_a_link_and_never_its_target(tmp_path: Path) -> None:
    (tmp_path / "target").mkdir()
    (tmp_path / "target" / "keep").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "tree" / "sub" / "inner-link").symlink_to(tmp_path / "target")
    base = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        safefs.remove_entry(base, "link")
        safefs.remove_entry(base, "tree")
    finally:
        os.close(base)
    assert (tmp_path / "target" / "keep").exists()
    assert not os.path.lexists(tmp_path / "link") and not (tmp_path / "tree").exists()


def test_unmount_refuses_a_path_through_a_link_and_never_unmounts_slash() -> None:
    with pytest.raises(UnsafePathError):
        safefs.unmount("/")
    # /proc/self is a link: the walk stops there, nothing is unmounted
    with pytest.raises(UnsafePathError, match="link"):
        safefs.unmount("/proc/self/root")
