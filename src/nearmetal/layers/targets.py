"""What a fault can be aimed at, and the process helpers topology layers and the fault layer share.

A topology layer (``clusters``) registers its targets in ``ctx.targets`` by name — ``cluster:c1`` (every
backend of one cluster), ``backend:c1-0`` (one replica), ``lb`` (the load balancer), ``link:c1`` /
``link:client`` (a veth pair) — and the fault layer resolves a plan's ``target:`` against them. A target knows
its processes, how to signal them and how to bring them back (a deployment scaled up again), and which link
ends it has. Standard library and nearmetal only (layer modules are imported when the plan model is built).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nearmetal.errors import NearmetalError
from nearmetal.host import hostcmd
from nearmetal.host.procstat import read_stat

READY_TIMEOUT_S = 30.0


class FaultTarget:
    """Base of every target; subclasses override what they support."""

    name: str = ""
    description: str = ""

    def pids(self) -> list[int]:
        """Every process of the target now (all of a process group: nginx's workers too)."""
        return []

    def signal(self, sig: int) -> list[int]:
        pids = self.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        return pids

    def wait_gone(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not [p for p in self.pids() if not is_zombie(p)]:
                return True
            time.sleep(0.01)
        return not [p for p in self.pids() if not is_zombie(p)]

    @property
    def can_restart(self) -> bool:
        return False

    def restart(self) -> None:
        raise NearmetalError(f"target {self.name} cannot be started again by nearmetal")

    def links(self) -> list[tuple[str | None, str]]:
        """(network namespace, interface) of each end of the target's link; [] when it is not a link."""
        return []


# --- processes ----------------------------------------------------------------------------------------


def is_zombie(pid: int) -> bool:
    stat = read_stat(pid)
    return stat is None or stat.gone


def group_pids(pgid: int) -> list[int]:
    """Live processes of a process group (a daemon and the workers it forked)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = read_stat(entry.name)
        if stat is not None and stat.pgrp == pgid and not stat.gone:
            out.append(int(entry.name))
    return sorted(out)


def pids_with_env(name: str, value: str) -> list[int]:
    """Processes whose environment has ``name=value`` (how the fault layer finds a trial's ``role:`` processes)."""
    marker = f"{name}={value}".encode()
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0") and not is_zombie(int(entry.name)):
            out.append(int(entry.name))
    return sorted(out)


def listening(pid: int, port: int) -> bool:
    """Whether the network namespace of ``pid`` has a TCP socket listening on ``port`` (/proc/PID/net/tcp
    shows the sockets of the process's namespace, so this works across namespaces without entering them)."""
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) > 3 and parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


@dataclass
class ManagedProcess:
    """A daemon a layer starts and may have to start again (a replica after a scale-to-zero): its argv,
    where its output goes, and the readiness check (a TCP port listening in its namespace)."""

    name: str
    argv: list[str]
    log_dir: Path
    port: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    # stderr lines, each stamped with the epoch time it was read (a load balancer's state changes)
    stamp_stderr: bool = False
    proc: hostcmd.Process[bytes] | None = None
    starts: int = 0
    _reader: threading.Thread | None = None
    on_line: Callable[[float, str], None] | None = None

    @property
    def stdout_path(self) -> Path:
        return self.log_dir / f"{self.name}.stdout"

    @property
    def stderr_path(self) -> Path:
        return self.log_dir / f"{self.name}.stderr"

    def start(self, ready_timeout_s: float = READY_TIMEOUT_S) -> None:
        self.starts += 1
        mode = "ab" if self.starts > 1 else "wb"
        with open(self.stdout_path, mode) as out:
            # closed below (the child keeps its copy)
            stderr = hostcmd.PIPE if self.stamp_stderr else open(self.stderr_path, mode)  # noqa: SIM115
            try:
                self.proc = hostcmd.start(
                    self.argv,
                    stdout=out,
                    stderr=stderr,
                    env={**os.environ, **self.env},
                    new_session=True,
                    context=self.name,
                )
            finally:
                if not self.stamp_stderr:
                    stderr.close()  # type: ignore[union-attr]
        if self.stamp_stderr:
            self._reader = threading.Thread(
                target=self._read_stderr, args=(self.proc, mode), name=f"nearmetal-{self.name}", daemon=True
            )
            self._reader.start()
        self.wait_ready(ready_timeout_s)

    def _read_stderr(self, proc: hostcmd.Process[bytes], mode: str) -> None:
        assert proc.stderr is not None
        with open(self.stderr_path, mode.replace("b", "")) as log:
            for raw in proc.stderr:
                now = time.time()
                line = raw.decode(errors="replace").rstrip("\n")
                log.write(f"{now:.6f}\t{line}\n")
                log.flush()
                if self.on_line is not None:
                    with contextlib.suppress(Exception):
                        self.on_line(now, line)

    def wait_ready(self, timeout_s: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise NearmetalError(
                    f"{self.name} exited ({self.proc.returncode}) before it was ready: {self.tail()}"
                )
            if self.port is None or listening(self.proc.pid, self.port):
                return
            time.sleep(0.02)
        raise NearmetalError(
            f"{self.name} did not listen on port {self.port} within {timeout_s:g}s: {self.tail()}"
        )

    def tail(self, chars: int = 400) -> str:
        with contextlib.suppress(OSError):
            return self.stderr_path.read_text(errors="replace")[-chars:].strip()
        return ""

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pids(self) -> list[int]:
        if self.proc is None or self.proc.poll() is not None:
            return []
        return group_pids(self.proc.pid) or [self.proc.pid]

    def signal_group(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)

    def reap(self) -> None:
        """Collect the exit status of a process that died (killed by a fault), so it is no zombie."""
        if self.proc is not None:
            self.proc.poll()

    def stop(self, grace_s: float = 1.0) -> None:
        """SIGTERM the group, SIGKILL after the grace period; waits for it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.signal_group(signal.SIGTERM)
            if hostcmd.wait(self.proc, grace_s) is None:
                self.signal_group(signal.SIGKILL)
                hostcmd.wait(self.proc, 10)
        # workers of a group whose leader is gone
        for pid in group_pids(self.proc.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if self._reader is not None:
            self._reader.join(timeout=5)
            self._reader = None
