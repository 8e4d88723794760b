"""Process-tree telemetry: rusage after the trial, optional sampling during it."""

from __future__ import annotations

import resource
import sys
import threading

import psutil

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


class TreeSampler:
    """Samples the summed RSS and thread count of a process tree every ``interval_s`` in a thread.

    Reads /proc only; at the default 1 s interval its cost is below the noise of any trial (see
    benchmarks/overhead.py)."""

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
        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        total = 0
        for proc in procs:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
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
