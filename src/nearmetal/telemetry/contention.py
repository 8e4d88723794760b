"""Noise evidence: what else used the CPU while a trial ran (issue 16 item 9, issue 17 item 3).

A sampler thread reads ``/proc/stat`` (steal, total CPU time), ``/proc/loadavg`` and ``/proc/PID/stat`` of every
process every ``interval_s`` and attributes the CPU time each process used between two scans to either *ours*
(the runner and everything it started — found by parentage, or by the ``NEARMETAL_RUN_ID`` a run puts in its
processes' environment, so daemons that re-parent to init stay ours), *kernel threads*, or *outside*.

Each process is counted as ``utime + stime + cutime + cstime``: a long-lived parent (a shell, ``make``) thereby
carries the CPU time of short-lived children it reaped between two scans, which a sampler would otherwise
miss. A child that *was* seen and then reaped is subtracted from its parent's next increase, so nothing is
counted twice; a process born during the window is counted from zero. Reading ~100–400 small files every
1 s costs a few milliseconds of one CPU (``sampler_cpu_s`` in the evidence says how much, per trial).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nearmetal.host.procstat import read_stat
from nearmetal.metrics import Metric

PROC = Path("/proc")
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
RUN_MARKER = "NEARMETAL_RUN_ID"
DEFAULT_INTERVAL_S = 1.0  # a scan of ~150 processes costs ~3 ms: 0.3% of one CPU (benchmarks/overhead.py)
TOP = 5


@dataclass
class _Proc:
    comm: str
    ppid: int
    last: int  # utime + stime + cutime + cstime, ticks, at the last scan
    kind: str  # ours | outside | kernel
    counted: int = 0  # ticks attributed inside the window


def _environ_has(pid: str, marker: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return marker in f.read().split(b"\0")
    except OSError:
        return False


def cpu_times() -> tuple[int, int, int]:
    """(total ticks, idle+iowait ticks, steal ticks) of all CPUs from /proc/stat."""
    with open("/proc/stat", "rb") as f:
        first = f.readline().split()
    values = [int(v) for v in first[1:]]
    # user nice system idle iowait irq softirq steal guest guest_nice; guest time is already in user
    total = sum(values[:8])
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    steal = values[7] if len(values) > 7 else 0
    return total, idle, steal


def loadavg_1m() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")


@dataclass
class Evidence:
    """What the sampler saw over one window (a trial, a preflight, a doctor check)."""

    seconds: float
    outside_cpu_s: float
    kernel_cpu_s: float
    ours_cpu_s: float
    steal_pct: float
    loadavg: float
    samples: int
    sampler_cpu_s: float
    cpus: int
    # the busiest outside programs: name, processes, CPU seconds (largest first)
    top: list[dict[str, Any]] = field(default_factory=list)

    @property
    def outside_cpu_pct(self) -> float:
        """Outside CPU time per second of wall time, in % of one CPU (200% = two CPUs kept busy)."""
        return 100.0 * self.outside_cpu_s / self.seconds if self.seconds > 0 else float("nan")

    def metrics(self) -> list[Metric]:
        return [
            Metric("outside_cpu_pct", self.outside_cpu_pct, "% of one CPU", "lower", source="telemetry"),
            Metric("outside_cpu_s", self.outside_cpu_s, "s", "lower", source="telemetry"),
            Metric("steal_pct", self.steal_pct, "% of CPU time", "lower", source="telemetry"),
            Metric("loadavg_1m", self.loadavg, "tasks", "lower", source="telemetry"),
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 3),
            "outside_cpu_pct": round(self.outside_cpu_pct, 2),
            "outside_cpu_s": round(self.outside_cpu_s, 3),
            "kernel_cpu_s": round(self.kernel_cpu_s, 3),
            "ours_cpu_s": round(self.ours_cpu_s, 3),
            "steal_pct": round(self.steal_pct, 2),
            "loadavg_1m": self.loadavg,
            "samples": self.samples,
            "sampler_cpu_s": round(self.sampler_cpu_s, 4),
            "cpus": self.cpus,
            "top": self.top,
        }

    def describe(self) -> str:
        """'outside processes used 182% of one CPU (stress-ng-cpu ×2 21.3 s, …); steal 0.0%, load 3.1'."""
        names = ", ".join(
            f"{t['name']}{' ×' + str(t['processes']) if t['processes'] > 1 else ''} {t['cpu_s']:.1f} s"
            for t in self.top
        )
        return (
            f"outside processes used {self.outside_cpu_pct:.0f}% of one CPU over {self.seconds:.1f} s"
            + (f" ({names})" if names else "")
            + f"; steal {self.steal_pct:.1f}%, load average {self.loadavg:.2f}"
        )


class HostSampler:
    """Samples every process's CPU time in a thread while a trial runs (a context manager).

    ``root_pid`` (default: this process) and its descendants are *ours*, as is any process whose environment
    carries ``NEARMETAL_RUN_ID=<run_id>``."""

    def __init__(
        self,
        interval_s: float = DEFAULT_INTERVAL_S,
        root_pid: int | None = None,
        run_id: str | None = None,
    ) -> None:
        self.interval_s = interval_s
        self.root_pid = root_pid if root_pid is not None else os.getpid()
        run_id = run_id if run_id is not None else os.environ.get(RUN_MARKER)
        self._marker = f"{RUN_MARKER}={run_id}".encode() if run_id else None
        self._procs: dict[tuple[str, int], _Proc] = {}
        self._gone: dict[tuple[str, int], _Proc] = {}
        self._cpu0: tuple[int, int, int] | None = None
        self._cpu1: tuple[int, int, int] | None = None
        self._t0 = 0.0
        self._t1 = 0.0
        self._loads: list[float] = []
        self.samples = 0
        # ticks a subtraction took beyond a parent's increase (a child reaped by another process)
        self.clamped_ticks = 0
        self._sampler_cpu = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- one scan ---------------------------------------------------------------------------------------
    def _kind(self, pid: str, ppid: int, kthread: bool, by_pid: dict[int, str]) -> str:
        if kthread:
            return "kernel"
        if int(pid) == self.root_pid or by_pid.get(ppid) == "ours":
            return "ours"
        if self._marker is not None and _environ_has(pid, self._marker):
            return "ours"
        return "outside"

    def _scan(self, first: bool = False) -> None:
        seen: dict[tuple[str, int], tuple[str, int, int, bool]] = {}
        for entry in os.scandir(PROC):
            if entry.name.isdigit():
                stat = read_stat(entry.name)
                if stat is not None:
                    # utime + stime + cutime + cstime: a parent carries the children it reaped
                    kthread = stat.kernel_thread or entry.name == "2"
                    seen[(entry.name, stat.starttime)] = (stat.comm, stat.ppid, stat.ticks, kthread)
        # classify new processes parents first (pids grow, except after wrap-around; a parent not yet known
        # is looked up by pid among known processes)
        by_pid = {int(k[0]): p.kind for k, p in self._procs.items()}
        new = sorted((k for k in seen if k not in self._procs), key=lambda k: k[1])
        vanished = [k for k in self._procs if k not in seen]
        # a child seen before and reaped since: its parent's cutime now holds the child's final total,
        # of which ``last`` was already counted; take it off the parent's increase (through parents that
        # vanished in the same interval, to the first one still here)
        subtract: dict[int, int] = {}
        gone_ppid = {int(k[0]): self._procs[k].ppid for k in vanished}
        for key in vanished:
            proc = self._procs.pop(key)
            parent = proc.ppid
            while parent in gone_ppid:
                parent = gone_ppid[parent]
            subtract[parent] = subtract.get(parent, 0) + proc.last
            self._gone[key] = proc
        for key, (comm, ppid, ticks, _) in seen.items():
            known = self._procs.get(key)
            if known is None:
                continue
            delta = ticks - known.last - subtract.pop(int(key[0]), 0)
            if delta < 0:
                self.clamped_ticks -= delta
            known.counted += max(0, delta)
            known.last = ticks
            known.ppid = ppid
            known.comm = comm
            by_pid[int(key[0])] = known.kind
        for key in new:
            comm, ppid, ticks, kthread = seen[key]
            kind = self._kind(key[0], ppid, kthread, by_pid)
            by_pid[int(key[0])] = kind
            # not there at the first scan, so born inside the window: everything it used counts (a start
            # time compared with the window's start would miss processes born in the same clock tick)
            counted = 0 if first else ticks
            self._procs[key] = _Proc(comm, ppid, ticks, kind, counted)
        self._loads.append(loadavg_1m())
        self.samples += 1

    # --- the window -------------------------------------------------------------------------------------
    def start(self) -> HostSampler:
        cpu0 = time.thread_time()
        self._t0 = time.monotonic()
        self._cpu0 = cpu_times()
        self._scan(first=True)
        self._sampler_cpu += time.thread_time() - cpu0
        return self

    def finish(self) -> Evidence:
        cpu0 = time.thread_time()
        self._scan()
        self._cpu1 = cpu_times()
        self._t1 = time.monotonic()
        self._sampler_cpu += time.thread_time() - cpu0
        return self.evidence()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            cpu0 = time.thread_time()
            with contextlib.suppress(OSError):
                self._scan()
            self._sampler_cpu += time.thread_time() - cpu0

    # --- off the trial's path (the local backend): no scan between the runner and its trial ------------
    def start_in_thread(self, first_after_s: float = 0.25, delay_s: float = 0.1) -> HostSampler:
        """Like ``__enter__``, but the first scan runs in the thread ``delay_s`` after the call, the next one
        ``first_after_s`` later, then every ``interval_s``: neither the trial's start nor a trial shorter than
        ``delay_s`` waits for (or shares the interpreter with) a scan of every process. The window is from
        the first scan to the last."""
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._threaded, args=(first_after_s, delay_s), name="nearmetal-host-sampler", daemon=True
        )
        self._thread.start()
        return self

    def _threaded(self, first_after_s: float, delay_s: float) -> None:
        # beside a busy neighbour, or below a shielded trial, a thread at nice 0 may not get its turn before
        # the trial ends (no evidence): as root it runs at nice -10, its own thread only (~0.3% of a CPU)
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), -10)
        if self._stop.wait(delay_s):
            return
        with contextlib.suppress(OSError, ValueError):
            self.start()
        wait = min(first_after_s, self.interval_s)
        while not self._stop.wait(wait):
            cpu0 = time.thread_time()
            with contextlib.suppress(OSError, ValueError):
                self._scan()
                # the window so far ends here: a stop needs no scan of its own
                self._cpu1 = cpu_times()
                self._t1 = time.monotonic()
            self._sampler_cpu += time.thread_time() - cpu0
            wait = self.interval_s

    def stop_in_thread(self) -> Evidence | None:
        """End a ``start_in_thread`` window at its last scan, without a scan now (that would add its cost to
        every trial): None when the trial ended before a second scan (shorter than ``first_after_s``)."""
        self._stop.set()
        if self.samples < 2 or self._thread is None:
            return None  # the thread ends on its own after its scan; it holds nothing
        self._thread.join(timeout=5)
        return self.evidence()

    def __enter__(self) -> HostSampler:
        self.start()
        self._thread = threading.Thread(target=self._loop, name="nearmetal-host-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None and self._thread.ident is not None:
            self._thread.join(timeout=5)
        self.finish()

    def evidence(self) -> Evidence:
        seconds = max(self._t1 - self._t0, 1e-9)
        totals = {"ours": 0, "outside": 0, "kernel": 0}
        by_name: dict[str, list[int]] = {}
        for proc in [*self._procs.values(), *self._gone.values()]:
            totals[proc.kind] += proc.counted
            if proc.kind == "outside" and proc.counted > 0:
                entry = by_name.setdefault(proc.comm, [0, 0])
                entry[0] += proc.counted
                entry[1] += 1
        top = sorted(by_name.items(), key=lambda kv: -kv[1][0])[:TOP]
        steal = float("nan")
        if self._cpu0 and self._cpu1 and self._cpu1[0] > self._cpu0[0]:
            steal = 100.0 * (self._cpu1[2] - self._cpu0[2]) / (self._cpu1[0] - self._cpu0[0])
        loads = [v for v in self._loads if v == v]
        return Evidence(
            seconds=seconds,
            outside_cpu_s=totals["outside"] / _TICK,
            kernel_cpu_s=totals["kernel"] / _TICK,
            ours_cpu_s=totals["ours"] / _TICK,
            steal_pct=steal,
            loadavg=sum(loads) / len(loads) if loads else float("nan"),
            samples=self.samples,
            sampler_cpu_s=self._sampler_cpu,
            cpus=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1),
            top=[
                {"name": name, "processes": n, "cpu_s": round(ticks / _TICK, 2)} for name, (ticks, n) in top
            ],
        )


def busiest(sampler: HostSampler, limit: int = TOP) -> list[tuple[int, str, float]]:
    """The outside processes that used most CPU in the sampler's window: (pid, name, CPU seconds)."""
    procs = [
        (int(key[0]), proc.comm, proc.counted / _TICK)
        for key, proc in [*sampler._procs.items(), *sampler._gone.items()]
        if proc.kind == "outside" and proc.counted > 0
    ]
    return sorted(procs, key=lambda p: -p[2])[:limit]


def measure_host(seconds: float = 1.0, interval_s: float = 0.25, run_id: str | None = None) -> Evidence:
    """Outside CPU use over the next ``seconds`` (this process and its children are not outside): the
    preflight of a CPU study and ``nearmetal doctor``'s ``host-contention`` check."""
    sampler = HostSampler(interval_s=interval_s, run_id=run_id)
    with sampler:
        time.sleep(seconds)
    return sampler.evidence()
