"""nearmetal.host.hostcmd with real programs: the one way nearmetal runs a host program (issue 32 item 4).
A missing program, one that cannot be started and one that hangs each become one error naming it; a probe's
output whatever its exit status; a started daemon stopped within its bound, SIGKILL when it ignores SIGTERM;
a string is never taken for an argv. A few seconds in all."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from nearmetal.errors import NearmetalError
from nearmetal.host import hostcmd, hostnet
from nearmetal.host.mountinfo import is_mounted, unmount_fuse

PY = sys.executable


def test_run_captures_text_and_passes_the_environment_it_is_given() -> None:
    script = "import os, sys; print(os.environ.get('NM_X')); print('err', file=sys.stderr); sys.exit(3)"
    proc = hostcmd.run([PY, "-c", script], 30, env={"NM_X": "value"})
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "value\n", "err\n")
    with pytest.raises(NearmetalError, match=r"^probing: .* failed: err$"):
        hostcmd.run([PY, "-c", script], 30, check=True, what="probing")


def test_stdin_is_empty_unless_given() -> None:
    echo = [PY, "-c", "import sys; print(repr(sys.stdin.read()))"]
    assert hostcmd.run(echo, 30).stdout == "''\n"
    assert hostcmd.run(echo, 30, input="in").stdout == "'in'\n"


def test_missing_unstartable_and_hung_programs_are_one_error_each(tmp_path: Path) -> None:
    with pytest.raises(NearmetalError) as info:
        hostcmd.run(["nearmetal-no-such-program", "-x"], 5, what="doing", install_fix="apt-get install it")
    assert info.value.message == "doing: nearmetal-no-such-program is not installed"
    assert info.value.fix == "apt-get install it"
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)
    # (root too cannot execute a file without any x bit)
    with pytest.raises(NearmetalError, match="not-executable could not be started: Permission denied"):
        hostcmd.run([script], 5)
    started = time.monotonic()
    with pytest.raises(NearmetalError, match=r"did not finish within 0.3s") as hung:
        hostcmd.run([PY, "-c", "import time; time.sleep(30)"], 0.3, timeout_fix="check the thing")
    assert time.monotonic() - started < 10 and hung.value.fix == "check the thing"


def test_a_string_is_never_an_argv() -> None:
    for call in (
        lambda: hostcmd.run("echo hi; touch /tmp/nearmetal-pwned", 5),  # type: ignore[arg-type]
        lambda: hostcmd.start("sleep 1"),  # type: ignore[arg-type]
        lambda: hostcmd.output(b"true"),  # type: ignore[arg-type]
    ):
        with pytest.raises(TypeError, match="argv list, not a string"):
            call()
    with pytest.raises(ValueError, match="empty argv"):
        hostcmd.run([], 5)


def test_output_and_version_read_a_probe_whatever_its_exit_status() -> None:
    says = [PY, "-c", "import sys; print('mytool version 1.2.3-beta (built 2026)'); sys.exit(1)"]
    assert hostcmd.output(says) == "mytool version 1.2.3-beta (built 2026)\n"
    assert hostcmd.version(says, r"version\s+(\S+)") == "1.2.3-beta"
    assert hostcmd.version(says, r"release\s+(\S+)") is None
    both = [PY, "-c", "import sys; print('out'); print('err', file=sys.stderr)"]
    assert hostcmd.output(both, stderr=True) == "out\nerr\n"
    assert hostcmd.output(["nearmetal-no-such-program"]) is None
    assert hostcmd.version(["nearmetal-no-such-program"], "(.*)") is None
    assert hostcmd.output([PY, "-c", "import time; time.sleep(30)"], 0.3) is None


def test_a_started_daemon_stops_within_its_bound(tmp_path: Path) -> None:
    log = tmp_path / "daemon.log"
    with open(log, "wb") as out:
        polite = hostcmd.start([PY, "-c", "import time; print('up', flush=True); time.sleep(60)"],
                               stdout=out, new_session=True)  # fmt: skip
    assert os.getsid(polite.pid) == polite.pid  # its own session: a signal to the group reaches its children
    started = time.monotonic()
    assert hostcmd.stop(polite, terminate=True) == -signal.SIGTERM
    assert time.monotonic() - started < 5
    # one that ignores SIGTERM: SIGKILL after the wait
    stubborn = hostcmd.start(
        [PY, "-c", "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
         "print('ready', flush=True); time.sleep(60)"],
        stdout=hostcmd.PIPE,
    )  # fmt: skip
    assert stubborn.stdout is not None and stubborn.stdout.readline() == b"ready\n"
    started = time.monotonic()
    assert hostcmd.stop(stubborn, 0.5, terminate=True) == -signal.SIGKILL
    assert 0.4 < time.monotonic() - started < 5
    stubborn.stdout.close()
    # one that ends by itself (a FUSE daemon once unmounted): waited for, not signalled
    ending = hostcmd.start([PY, "-c", "import time; time.sleep(0.2)"])
    assert hostcmd.stop(ending) == 0
    running = hostcmd.start([PY, "-c", "import time; time.sleep(30)"])
    assert hostcmd.wait(running, 0.1) is None
    assert hostcmd.stop(running, terminate=True) == -signal.SIGTERM


def test_starting_a_missing_program_names_it_or_leaves_the_report_to_the_caller() -> None:
    with pytest.raises(NearmetalError, match=r"^nearmetal-no-such-daemon is not installed \(layer x\)$"):
        hostcmd.start(["nearmetal-no-such-daemon"], context="layer x")
    with pytest.raises(FileNotFoundError):
        hostcmd.start(["nearmetal-no-such-daemon"], error=None)


@pytest.mark.skipif(not __import__("shutil").which("ip"), reason="iproute2 is not installed")
def test_ip_json(monkeypatch: pytest.MonkeyPatch) -> None:
    links = hostnet.ip_json("link", "show", "lo")
    assert [link["ifname"] for link in links] == ["lo"]
    assert hostnet.ip_json("link", "show", "nearmetal-no-such-link") == []  # ip fails: no JSON
    monkeypatch.setenv("PATH", "/nonexistent")
    assert hostnet.ip_json("link", "show") == []  # no ip at all


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs: needs root")
def test_unmount_fuse_as_root_unmounts_by_what_was_mounted(tmp_path: Path) -> None:
    point = tmp_path / "mnt"
    point.mkdir()
    hostcmd.run(["mount", "-t", "tmpfs", "-o", "size=1m", "nm-hostcmd-test", point], 10, check=True)
    try:
        assert is_mounted(point)
        assert unmount_fuse(str(point)) is True
        assert not is_mounted(point)
    finally:
        if is_mounted(point):
            unmount_fuse(str(point), lazy=True)
