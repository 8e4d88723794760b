"""Process-tree telemetry: rusage after the trial, optional sampling during it."""

from __future__ import annotations

import os
import resource
import sys
import threading

from nearmetal.metrics import Metric

# ru_maxrss is KiB on Linux, bytes on macOS
_MAXRSS_TO_MIB = 1 / 1024 if sys.platform != "darwin" else 1 / (1024 * 1024)


def rusage_metrics(usage: resource.struct_rusage, wall_s: float) -> list[Metric]:
    cpu_s = usage.ru_utime + usage.ru_stime
    metrics = [
        Metric("wall_s", wall_s, "s", "lower", source="telemetry"),
        Metric("cpu_s", cpu_s, "s", "lower", source="telemetry"),
        Metric("cpu_user_s", usage.ru_utime, "s", "lower", source="telemetry"),
        Metric("cpu_sys_s", usage.ru_stime, "s", "lower", source="telemetry"),
        Metric("max_rss_MiB", usage.ru_maxrss * _MAXRSS_TO_MIB, "MiB", "lower", source="telemetry"),
        Metric("ctx_switches_invol", usage.ru_nivcsw, "switches", "lower", source="telemetry"),
    ]
    if wall_s > 0:
        # 100% = one CPU busy for the whole trial; two busy ranks give 200%
        metrics.append(Metric("cpu_util_pct", 100.0 * cpu_s / wall_s, "%", "higher", source="telemetry"))
    return metrics


_PAGE = resource.getpagesize()
MAX_TREE = 4096  # a fork bomb in a trial must not turn a sampler into one


def tree_pids(root: int) -> list[int]:
    """``root`` and its descendants, from ``/proc/<pid>/task/<tid>/children`` (empty when root is gone)."""
    if not os.path.isdir(f"/proc/{root}"):
        return []
    if not os.path.exists(f"/proc/{root}/task/{root}/children"):
        # a kernel without CONFIG_PROC_CHILDREN: psutil's scan of every process's parent
        import psutil

        try:
            return [root, *(c.pid for c in psutil.Process(root).children(recursive=True))]
        except psutil.Error:
            return []
    out: list[int] = []
    todo = [root]
    while todo and len(out) < MAX_TREE:
        pid = todo.pop()
        out.append(pid)
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                    todo.extend(int(c) for c in f.read().split())
            except (OSError, ValueError):
                continue
    return out


class TreeSampler:
    """Samples the summed RSS and thread count of a process tree every ``interval_s`` in a thread.

    Reads /proc only (the tree's own files); at the default 1 s interval its cost is below the noise of any
    trial (see benchmarks/overhead.py)."""

    def __init__(self, pid: int, interval_s: float = 1.0) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.peak_rss_bytes = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"nearmetal-sampler-{pid}", daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        # a signal (Ctrl-C, SIGTERM) can arrive between the backend's __enter__ call and the thread's start
        if self._thread.ident is not None:
            self._thread.join(timeout=5)

    def _sample(self) -> None:
        # the tree from /proc/<pid>/task/<tid>/children and each process's resident pages from statm: a few
        # small files per process, not a scan of every process on the host (psutil's children())
        pids = tree_pids(self.pid)
        if not pids:
            return
        total = 0
        for pid in pids:
            try:
                with open(f"/proc/{pid}/statm", "rb") as f:
                    total += int(f.read().split()[1]) * _PAGE
            except (OSError, ValueError, IndexError):
                continue
        self.peak_rss_bytes = max(self.peak_rss_bytes, total)
        self.samples += 1

    def _loop(self) -> None:
        # the first samples come a little after start and then every 0.05, 0.1, 0.2 … s up to the interval:
        # a trial of a few seconds (a small image build) gets its peak sampled, not one or two points
        wait = min(0.05, self.interval_s)
        if self._stop.wait(wait):
            return
        while True:
            self._sample()
            wait = min(wait * 2, self.interval_s)
            if self._stop.wait(wait):
                return

    def metrics(self) -> list[Metric]:
        if not self.samples:
            return []
        return [
            Metric("tree_rss_peak_MiB", self.peak_rss_bytes / (1 << 20), "MiB", "lower", source="telemetry")
        ]
