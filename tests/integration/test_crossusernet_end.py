"""One end of the user-mode path between nodes (``python -m nearmetal.layers.crossusernet``), here on this
host: it holds its slirp4netns stack open exactly as long as the program it serves, forwards the port, counts
what crossed its TAP, and leaves nothing on every exit path: the program's own end, SIGTERM (what srun passes
on when the runner stops a server), and SIGKILL (``nearmetal cleanup RUN`` finds the namespace and stack)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import nearmetal_argv

from nearmetal.host import hostnet
from nearmetal.host.ports import free_tcp_port

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("slirp4netns") is None, reason="needs root and slirp4netns"
)
PY = sys.executable


def _start(run_id: str, tmp_path: Path, port: int) -> tuple[subprocess.Popen[str], str]:
    netns = f"nearmetal-{run_id}-0123456789-r0-usernet-srv"
    argv = [
        PY, "-m", "nearmetal.layers.crossusernet", "--netns", netns, "--tap", hostnet.short_ifname(netns, "t"),
        "--counters", str(tmp_path / "tap-srv.json"), "--forward", f"127.0.0.1:{port}", "--",
        PY, "-m", "nearmetal.tools.tcprr", "server", "--port", str(port),
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the server's "listening on …": namespace, stack and forward are up
    assert "listening on" in line, line + proc.stderr.read() if proc.stderr else line
    return proc, netns


def _running(pid: int) -> bool:
    """Still running: not gone and not a zombie waiting for its new parent to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _stacks(netns: str) -> list[tuple[int, str]]:
    return hostnet.processes_with(str(hostnet.NETNS_DIR / netns), ("slirp4netns",))


def test_an_end_forwards_counts_and_removes_everything_when_its_program_ends(tmp_path: Path) -> None:
    port = free_tcp_port()
    proc, netns = _start("xuend", tmp_path, port)
    try:
        assert hostnet.netns_exists(netns) and len(_stacks(netns)) == 1
        client = subprocess.run(
            [PY, "-m", "nearmetal.tools.tcprr", "client", "--host", "127.0.0.1", "--port", str(port),
             "--size", "1", "--count", "300", "--warmup", "10"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert client.returncode == 0, client.stderr
        assert proc.wait(timeout=30) == 0  # the server ends with its client's connection (iperf3 -s -1 too)
    finally:
        if proc.poll() is None:
            proc.kill()
    moved = json.loads((tmp_path / "tap-srv.json").read_text())
    # the 310 requests came in through the forwarded port and the stack, so through the TAP
    assert moved["kind"] == "tap" and moved["rx_packets"] >= 310 and moved["tx_packets"] >= 310
    assert not hostnet.netns_exists(netns) and not _stacks(netns)
    assert not hostnet.api_socket_path(netns).exists()


def test_sigterm_ends_the_program_and_removes_the_end(tmp_path: Path) -> None:
    """What srun passes on when the runner stops a server that is still waiting (tcp-rr's, a neighbour)."""
    proc, netns = _start("xuterm", tmp_path, free_tcp_port())
    try:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
    assert json.loads((tmp_path / "tap-srv.json").read_text())["kind"] == "tap"
    assert not hostnet.netns_exists(netns) and not _stacks(netns)
    assert not hostnet.api_socket_path(netns).exists()


def test_cleanup_removes_what_a_killed_end_left(tmp_path: Path) -> None:
    proc, netns = _start("xukill", tmp_path, free_tcp_port())
    inside = hostnet.netns_pids(netns)  # the program the end ran (the tcp-rr server)
    proc.kill()  # SIGKILL: no teardown; the stack (its own session), the namespace and its program stay
    proc.wait(timeout=10)
    time.sleep(0.2)
    try:
        assert hostnet.netns_exists(netns) and _stacks(netns) and inside
        done = subprocess.run(
            [*nearmetal_argv(), "cleanup", "xukill"], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        assert not hostnet.netns_exists(netns) and not _stacks(netns)
        # the program inside too: the namespace's nsfs mount used to go first, hiding it from `ip netns pids`
        time.sleep(0.2)
        alive = [pid for pid in inside if _running(pid)]
        assert not alive, alive
    finally:
        for pid in inside:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        from nearmetal.layers.crossusernet import remove_end

        remove_end(netns)
