"""Interference measured on the trial itself: how long its threads were runnable but waiting for a CPU
(issue 29).

The kernel keeps, per thread, the time it ran on a CPU and the time it spent on a run queue waiting for one
(``/proc/<pid>/task/<tid>/schedstat``: run ns, wait ns, timeslices). ``WaitSampler`` finds the trial's process
tree (``/proc/<pid>/task/<tid>/children``, from the measured process down), reads every thread's counters in a
thread of its own, and keeps each thread's last values, so a thread that ended between two samples still
counts with what it had at the last one. Samples come 0.05, 0.1, 0.2 … s after the start and then every
``interval_s``; the backend takes a last one after the measured process exited and before it is reaped
(``waitid(WNOWAIT)``), so only the threads that ended in the last interval lose their final part — a share
of a ratio, not of a sum.

``cpu_wait_pct`` = wait / (wait + run) over the tree. A cgroup CPU quota also holds runnable threads off
the CPU (throttling): that wait is the layer's effect, not interference, so the quota group's own
``throttled_time`` is taken off the wait (read from the measured process's CPU cgroup, one file).

Host-wide pressure (``/proc/pressure/cpu`` and ``/proc/pressure/io``, "some" line, where the kernel has PSI)
is read at the start and the end: the share of the window in which some task on the host waited for a CPU
(or for I/O). It explains; the verdict rests on the trial's own wait.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nearmetal.metrics import Metric
from nearmetal.telemetry.process import tree_pids

DEFAULT_INTERVAL_S = 0.25
SAMPLER_NICE = -10
# below this share of the tree's CPU time (rusage) seen in the samples, the wait is not trusted: the sampler
# missed threads that ended between its samples (``coverage`` in the evidence)
MIN_COVERAGE = 0.7
MIN_RUNNABLE_S = 0.1


def read_schedstat(path: str) -> tuple[int, int] | None:
    """(run ns, wait ns) of one thread, or None when it is gone."""
    try:
        with open(path, "rb") as f:
            fields = f.read().split()
        return int(fields[0]), int(fields[1])
    except (OSError, ValueError, IndexError):
        return None


def pressure_total_us(resource: str, root: Path = Path("/proc/pressure")) -> int | None:
    """The 'some' total (µs) of ``/proc/pressure/<resource>``, or None without PSI."""
    try:
        with open(root / resource, "rb") as f:
            for line in f:
                if line.startswith(b"some"):
                    return int(line.rsplit(b"total=", 1)[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cpu_cgroup_stat(pid: int) -> Path | None:
    """The ``cpu.stat`` of the CPU cgroup ``pid`` is in (v1 ``cpu`` controller, else the v2 group)."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    v2 = None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "cpu" in controllers.split(","):
            for mount in ("/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpuacct,cpu"):
                candidate = Path(mount + path) / "cpu.stat"
                if candidate.exists():
                    return candidate
        if controllers == "":
            v2 = path
    if v2 is not None:
        for mount in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
            candidate = Path(mount + v2) / "cpu.stat"
            if candidate.exists() and (Path(mount) / "cgroup.controllers").exists():
                return candidate
    return None


def throttled_s(stat_path: Path) -> float:
    """Time the group was throttled by its quota (v1 ``throttled_time`` ns, v2 ``throttled_usec``)."""
    try:
        text = stat_path.read_text()
    except OSError:
        return 0.0
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "throttled_time":
            return int(value) / 1e9
        if key == "throttled_usec":
            return int(value) / 1e6
    return 0.0


@dataclass
class WaitEvidence:
    """What one trial's threads did: ran, waited for a CPU (less quota throttling), host pressure."""

    run_s: float
    wait_s: float  # runnable but not running, throttling included
    throttled_s: float  # of which the trial's own quota held it off
    tasks: int
    samples: int
    seconds: float
    host_cpu_pressure_pct: float = float("nan")
    host_io_pressure_pct: float = float("nan")
    sampler_cpu_s: float = 0.0
    # the tree's CPU time from the kernel's rusage (every thread, reaped ones too), when the caller knows it
    tree_cpu_s: float = float("nan")

    @property
    def coverage(self) -> float:
        """Share of the tree's CPU time the samples saw (NaN when the rusage is not known)."""
        if math.isnan(self.tree_cpu_s) or self.tree_cpu_s <= 0.02:
            return float("nan")
        return min(1.0, self.run_s / self.tree_cpu_s)

    @property
    def trusted(self) -> bool:
        """Enough runnable time for a share to mean something (a trial that was runnable for a few
        milliseconds — a sleep, a ping — waits 50% by chance) and samples that saw most of it."""
        return self.run_s + self.contended_wait_s >= MIN_RUNNABLE_S and not (self.coverage < MIN_COVERAGE)

    @property
    def contended_wait_s(self) -> float:
        return max(0.0, self.wait_s - self.throttled_s)

    @property
    def cpu_wait_pct(self) -> float:
        """Share of the trial's runnable time spent waiting for a CPU others held, in % (NaN when the samples
        missed too much of the tree's CPU time to tell)."""
        if not self.trusted:
            return float("nan")
        total = self.contended_wait_s + self.run_s
        return 100.0 * self.contended_wait_s / total if total > 0 else float("nan")

    def metrics(self) -> list[Metric]:
        out = []
        if self.cpu_wait_pct == self.cpu_wait_pct:
            out.append(Metric("cpu_wait_pct", self.cpu_wait_pct, "%", "lower", source="telemetry"))
            out.append(Metric("cpu_wait_s", self.contended_wait_s, "s", "lower", source="telemetry"))
        if self.host_cpu_pressure_pct == self.host_cpu_pressure_pct:
            out.append(
                Metric(
                    "host_cpu_pressure_pct",
                    self.host_cpu_pressure_pct,
                    "% of time",
                    "lower",
                    source="telemetry",
                )
            )
        if self.host_io_pressure_pct == self.host_io_pressure_pct:
            out.append(
                Metric(
                    "host_io_pressure_pct",
                    self.host_io_pressure_pct,
                    "% of time",
                    "lower",
                    source="telemetry",
                )
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        def r(v: float, n: int = 2) -> float | None:
            return round(v, n) if v == v else None

        return {
            "cpu_wait_pct": r(self.cpu_wait_pct),
            "cpu_wait_s": r(self.contended_wait_s, 3),
            "cpu_run_s": r(self.run_s, 3),
            "throttled_s": r(self.throttled_s, 3),
            "wait_tasks": self.tasks,
            "wait_samples": self.samples,
            "wait_coverage": r(self.coverage),
            "host_cpu_pressure_pct": r(self.host_cpu_pressure_pct),
            "host_io_pressure_pct": r(self.host_io_pressure_pct),
            "wait_sampler_cpu_s": round(self.sampler_cpu_s, 4),
        }


class WaitSampler:
    """Samples the schedstat counters of ``pid``'s process tree in a thread (``start``/``sample``/``stop``)."""

    def __init__(self, pid: int, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self._last: dict[str, tuple[int, int]] = {}  # "pid/tid" → last (run, wait)
        self._retired_run = 0
        self._retired_wait = 0
        self._stat_path: Path | None = None
        self._throttled = 0.0
        self.samples = 0
        self._cpu_s = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0
        self._t1 = 0.0
        self._psi0: tuple[int | None, int | None] = (None, None)
        self._psi1: tuple[int | None, int | None] = (None, None)

    # --- one sample ---------------------------------------------------------------------------------
    def sample(self) -> None:
        cpu0 = time.thread_time()
        with self._lock:
            for pid in tree_pids(self.pid):
                try:
                    tids = os.listdir(f"/proc/{pid}/task")
                except OSError:
                    continue
                for tid in tids:
                    got = read_schedstat(f"/proc/{pid}/task/{tid}/schedstat")
                    if got is None:
                        continue
                    key = f"{pid}/{tid}"
                    old = self._last.get(key)
                    if old is not None and got[0] < old[0]:
                        # the id was reused by a new thread: keep the old one's last values
                        self._retired_run += old[0]
                        self._retired_wait += old[1]
                    self._last[key] = got
            # looked up at every sample: the first may come before the process joined its layer's group
            stat_path = _cpu_cgroup_stat(self.pid) or self._stat_path
            if stat_path is not None:
                self._stat_path = stat_path
                self._throttled = max(self._throttled, throttled_s(stat_path))
            self.samples += 1
        self._cpu_s += time.thread_time() - cpu0

    def _loop(self) -> None:
        # a thread that misses its samples loses the counters of the threads that ended meanwhile: beside a
        # busy neighbour (or below the shield's weight) this thread must still get its turns. As root it runs
        # at nice -10 (its own thread only: it uses well under 1% of a CPU, so the trial does not notice)
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), SAMPLER_NICE)
        wait = min(0.05, self.interval_s)
        while not self._stop.wait(wait):
            with contextlib.suppress(OSError, ValueError):
                self.sample()
            wait = min(wait * 2, self.interval_s)

    # --- the window ---------------------------------------------------------------------------------
    def start(self) -> WaitSampler:
        self._t0 = time.monotonic()
        self._psi0 = (pressure_total_us("cpu"), pressure_total_us("io"))
        self._thread = threading.Thread(target=self._loop, name=f"nearmetal-wait-{self.pid}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> WaitEvidence:
        """Stop the thread (after a last ``sample()`` the caller took while the process was a zombie)."""
        self._stop.set()
        if self._thread is not None and self._thread.ident is not None:
            self._thread.join(timeout=5)
        self._t1 = time.monotonic()
        self._psi1 = (pressure_total_us("cpu"), pressure_total_us("io"))
        return self.evidence()

    def evidence(self) -> WaitEvidence:
        seconds = max(self._t1 - self._t0, 1e-9)

        def pressure(i: int) -> float:
            a, b = self._psi0[i], self._psi1[i]
            if a is None or b is None:
                return float("nan")
            return min(100.0, 100.0 * (b - a) / 1e6 / seconds)

        with self._lock:
            run = self._retired_run + sum(v[0] for v in self._last.values())
            wait = self._retired_wait + sum(v[1] for v in self._last.values())
            tasks = len(self._last)
        return WaitEvidence(
            run_s=run / 1e9,
            wait_s=wait / 1e9,
            throttled_s=self._throttled,
            tasks=tasks,
            samples=self.samples,
            seconds=seconds,
            host_cpu_pressure_pct=pressure(0),
            host_io_pressure_pct=pressure(1),
            sampler_cpu_s=self._cpu_s,
        )
