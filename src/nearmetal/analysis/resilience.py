"""Availability and recovery of a service (or a mount) while a fault is injected: pure functions over a
per-request log and the faults' times, no I/O.

A *request log* has one row per request (or I/O operation): when it started (epoch seconds), how long it took,
its outcome (``ok`` or an error kind such as ``refused``, ``http_503``, ``timeout``, ``enotconn``) and which
backend answered. *Faults* are the injection (and optional healing) times the fault layer recorded with the
same clock. From these:

- **availability** = successful / all requests (per phase too);
- **phases**: *before* the first injection, *during* (until the last healing, or until steady state returned
  when nothing healed), *after*;
- **time to detect** = from the injection to the *sending* of the first request that failed (0 for a request
  already in flight when the fault hit): when the fault became visible to traffic. Timed by sending, not by
  completion, so the timeline reads in order (detect ≤ recover): a request sent just before the fault that
  times out after the client's timeout completes long after the surviving path took over (issue 17:
  failover read "detect 0.511 s, recover 0.376 s"). When the client *saw* the first error (its completion,
  timeouts included) is kept as ``first_error_seen_s``;
- **time to recover** = from the injection to the completion of the first success that starts an error-free
  stretch of ``stable_s`` (the surviving path took over, or the fault healed); 0 when nothing failed;
- **time to steady state** = from the injection to the start of the first window of ``stable_s`` whose
  success ratio, throughput and p99 latency are back to the pre-fault level (and, once every fault healed,
  in which every backend that served before the fault serves again);
- **requests lost** = what the pre-fault rate would have completed between the injection and steady state
  (or the end), minus what succeeded then: failures plus requests never sent while clients waited.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

OK = "ok"
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


@dataclass
class RequestLog:
    """Columns of a request log; ``start`` in epoch seconds, ``latency_s`` until the outcome was known."""

    start: np.ndarray
    latency_s: np.ndarray
    outcome: np.ndarray
    backend: np.ndarray

    @classmethod
    def of(
        cls,
        start: Any,
        latency_s: Any,
        outcome: Any,
        backend: Any | None = None,
    ) -> RequestLog:
        start = np.asarray(start, dtype=float)
        order = np.argsort(start, kind="stable")
        outcome_arr = np.asarray(outcome, dtype=object)
        backend_arr = (
            np.asarray(backend, dtype=object)
            if backend is not None
            else np.full(start.size, "", dtype=object)
        )
        return cls(
            start[order],
            np.asarray(latency_s, dtype=float)[order],
            outcome_arr[order],
            backend_arr[order],
        )

    def __len__(self) -> int:
        return int(self.start.size)

    @property
    def end(self) -> np.ndarray:
        return np.asarray(self.start + self.latency_s)

    @property
    def ok(self) -> np.ndarray:
        return np.asarray(self.outcome == OK)


@dataclass(frozen=True)
class Fault:
    injected_at: float
    healed_at: float | None = None
    action: str = ""
    target: str = ""


@dataclass
class Timeline:
    """Requests per bin (by start time), relative to ``t0``: what the report's timeline plot draws."""

    t0: float
    bin_s: float
    ok: list[int]
    errors: dict[str, list[int]]
    p50_ms: list[float | None]
    p99_ms: list[float | None]
    by_backend: dict[str, list[int]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "t0": self.t0,
            "bin_s": self.bin_s,
            "ok": self.ok,
            "errors": self.errors,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "by_backend": self.by_backend,
        }


@dataclass
class ResilienceSummary:
    requests: int
    ok: int
    availability_pct: float
    errors_by_kind: dict[str, int]
    rate_before_rps: float | None
    phases: dict[str, tuple[float, float]]
    phase_requests: dict[str, int]
    phase_availability_pct: dict[str, float | None]
    latency_us: dict[str, dict[str, float]]  # phase ("all", "before", …) -> percentile name -> µs
    served_by: dict[str, dict[str, int]]  # phase -> backend -> successful requests
    detect_s: float | None = None
    recover_s: float | None = None
    # when the first failed request completed (a client timeout counts when it expires); may come after
    # recover_s, which is why detect_s is timed by sending
    first_error_seen_s: float | None = None
    steady_s: float | None = None
    requests_failed: int | None = None
    requests_lost: int | None = None
    faulted: bool = False
    span_s: float = 0.0  # first to last request start
    timeline: Timeline | None = None
    notes: list[str] = field(default_factory=list)


def percentile_name(q: float) -> str:
    """50 → p50, 99.9 → p99_9 (the metric naming the report's percentile curve reads)."""
    whole, _, frac = f"{q:g}".partition(".")
    return f"p{whole}" + (f"_{frac}" if frac else "")


def latency_percentiles(latency_s: np.ndarray) -> dict[str, float]:
    if latency_s.size == 0:
        return {}
    values = np.percentile(latency_s * 1e6, PERCENTILES)
    out = {percentile_name(q): float(v) for q, v in zip(PERCENTILES, values, strict=True)}
    out["mean"] = float(latency_s.mean() * 1e6)
    return out


def _after(t: float) -> float:
    """The next float after ``t``: the end of a half-open phase that must still hold a request started at
    ``t`` (adding a tiny constant to an epoch time in seconds does nothing at double precision)."""
    return float(np.nextafter(t, math.inf))


def _phase_bounds(
    log: RequestLog, faults: list[Fault], steady_at: float | None
) -> dict[str, tuple[float, float]]:
    t_start = float(log.start[0])
    t_end = _after(float(log.start[-1]))
    if not faults:
        return {"before": (t_start, t_end)}
    inject = min(f.injected_at for f in faults)
    heals = [f.healed_at for f in faults if f.healed_at is not None]
    if heals and len(heals) == len(faults):
        during_end = max(heals)
    elif steady_at is not None:
        during_end = steady_at
    else:
        during_end = t_end
    during_end = min(max(during_end, inject), t_end)
    bounds = {"before": (t_start, max(t_start, inject)), "during": (inject, during_end)}
    if during_end < t_end:
        bounds["after"] = (during_end, t_end)
    return bounds


def _in(log: RequestLog, bounds: tuple[float, float]) -> np.ndarray:
    return (log.start >= bounds[0]) & (log.start < bounds[1])


def _recovery_time(log: RequestLog, inject: float, stable_s: float) -> tuple[float | None, float | None]:
    """(time of recovery, start of the stretch), or (None, None) when no error-free stretch of ``stable_s``
    followed the first failure."""
    ok = log.ok
    failed_after = np.flatnonzero(~ok & (log.end >= inject))
    if failed_after.size == 0:
        return inject, inject
    first = failed_after[0]
    last_start = float(log.start[-1])
    fail_starts = log.start[~ok]
    for i in range(first + 1, len(log)):
        if not ok[i]:
            continue
        t = float(log.start[i])
        if t + stable_s > last_start:
            return None, None
        # any failure that starts inside [t, t + stable_s]?
        j = np.searchsorted(fail_starts, t, side="left")
        if j < fail_starts.size and fail_starts[j] <= t + stable_s:
            continue
        return float(log.end[i]), t
    return None, None


def _windows(
    log: RequestLog, t_from: float, t_to: float, width: float, step: float
) -> list[tuple[float, np.ndarray]]:
    out = []
    t = t_from
    while math.isfinite(t) and t + width <= t_to + 1e-6:
        out.append((t, (log.start >= t) & (log.start < t + width)))
        t += step
    return out


def summarize(
    log: RequestLog,
    faults: list[Fault] | None = None,
    stable_s: float = 1.0,
    latency_factor: float = 3.0,
    latency_slack_s: float = 0.005,
    bin_s: float | None = None,
    max_bins: int = 600,
) -> ResilienceSummary:
    """Everything the report and the metrics need from one trial's request log and its faults."""
    faults = sorted(faults or [], key=lambda f: f.injected_at)
    if len(log) == 0:
        raise ValueError("the request log is empty: no request was sent")
    ok = log.ok
    kinds, counts = np.unique(log.outcome[~ok].astype(str), return_counts=True)
    errors_by_kind = {str(k): int(c) for k, c in zip(kinds, counts, strict=True)}
    inject = faults[0].injected_at if faults else None

    before = (float(log.start[0]), inject if inject is not None else _after(float(log.start[-1])))
    before_mask = _in(log, before)
    span = max(before[1] - before[0], 1e-9)
    rate_before = float(ok[before_mask].sum()) / span if before_mask.any() else None
    before_ok = ok[before_mask]
    before_ratio = float(before_ok.mean()) if before_ok.size else 1.0
    before_p99 = (
        float(np.percentile(log.latency_s[before_mask & ok], 99)) if (before_mask & ok).any() else None
    )

    detect_s = recover_s = steady_s = first_error_seen_s = None
    steady_at = None
    requests_failed = requests_lost = None
    notes: list[str] = []
    if inject is not None:
        after_inject = log.end >= inject
        failed = ~ok & after_inject
        requests_failed = int(failed.sum())
        if requests_failed:
            # the same first failure _recovery_time starts from (first by sending time), so detect ≤ recover
            detect_s = max(0.0, float(log.start[failed].min() - inject))
            first_error_seen_s = float(log.end[failed].min() - inject)
        recovered_at, stretch_start = _recovery_time(log, inject, stable_s)
        if recovered_at is None:
            notes.append(f"no error-free stretch of {stable_s:g}s after the first failure: not recovered")
        else:
            recover_s = max(0.0, recovered_at - inject)
            # steady state: a window of stable_s as good as before the fault (success ratio, throughput,
            # p99 latency within max(factor × before, before + slack))
            latency_limit = (
                max(before_p99 * latency_factor, before_p99 + latency_slack_s) if before_p99 else math.inf
            )
            heal_times = [f.healed_at for f in faults if f.healed_at is not None]
            t_from = max([stretch_start or inject, *heal_times])
            # once every fault healed, steady also means every backend that served before serves again
            # (a cluster scaled back up and taken back by the load balancer)
            if heal_times and len(heal_times) == len(faults):
                healed = max(heal_times)
                for backend in {str(b) for b in log.backend[before_mask & ok] if b}:
                    back = ok & (log.backend == backend) & (log.start >= healed)
                    # never back: no steady state (the window search below starts past the end)
                    t_from = max(t_from, float(log.start[back][0]) if back.any() else math.inf)
            step = min(0.05, stable_s / 4)
            for t, mask in _windows(log, t_from, float(log.start[-1]), stable_s, step):
                n = int(mask.sum())
                if n == 0:
                    continue
                good = ok[mask]
                ratio = float(good.mean())
                rate = float(good.sum()) / stable_s
                lat = log.latency_s[mask & ok]
                p99 = float(np.percentile(lat, 99)) if lat.size else math.inf
                if (
                    ratio >= min(before_ratio, 1.0) - 1e-9
                    and (rate_before is None or rate >= 0.9 * rate_before)
                    and p99 <= latency_limit
                ):
                    steady_at = t
                    steady_s = max(0.0, t - inject)
                    break
            if steady_s is None:
                notes.append("throughput, errors or latency never came back to the pre-fault level")
        if rate_before is not None:
            window_end = steady_at if steady_at is not None else float(log.start[-1])
            in_window = (log.start >= inject) & (log.start < window_end)
            expected = rate_before * max(0.0, window_end - inject)
            requests_lost = max(0, round(expected - float(ok[in_window].sum())))
            # failures are lost even when an open-loop client sent more than the pre-fault rate
            requests_lost = max(requests_lost, int((~ok & in_window).sum()))

    bounds = _phase_bounds(log, faults, steady_at)
    latency = {"all": latency_percentiles(log.latency_s[ok])}
    phase_requests: dict[str, int] = {}
    phase_availability: dict[str, float | None] = {}
    served_by: dict[str, dict[str, int]] = {}
    for phase, bound in bounds.items():
        mask = _in(log, bound)
        phase_requests[phase] = int(mask.sum())
        phase_availability[phase] = float(ok[mask].mean() * 100) if mask.any() else None
        latency[phase] = latency_percentiles(log.latency_s[mask & ok])
        names, counts = np.unique(log.backend[mask & ok].astype(str), return_counts=True)
        served_by[phase] = {str(k): int(c) for k, c in zip(names, counts, strict=True) if k}

    return ResilienceSummary(
        requests=len(log),
        ok=int(ok.sum()),
        availability_pct=float(ok.mean() * 100),
        errors_by_kind=errors_by_kind,
        rate_before_rps=rate_before,
        phases=bounds,
        phase_requests=phase_requests,
        phase_availability_pct=phase_availability,
        latency_us=latency,
        served_by=served_by,
        detect_s=detect_s,
        recover_s=recover_s,
        first_error_seen_s=first_error_seen_s,
        steady_s=steady_s,
        requests_failed=requests_failed,
        requests_lost=requests_lost,
        faulted=inject is not None,
        span_s=float(log.start[-1] - log.start[0]),
        timeline=timeline(log, bin_s=bin_s, max_bins=max_bins),
        notes=notes,
    )


def timeline(
    log: RequestLog, t0: float | None = None, bin_s: float | None = None, max_bins: int = 600
) -> Timeline:
    """Per-bin counts of successes, errors by kind and successes by backend, and p50/p99 latency (ms) of
    the successes, by start time."""
    t0 = float(log.start[0]) if t0 is None else t0
    span = float(log.start[-1]) - t0
    if bin_s is None:
        bin_s = max(0.1, round(span / max_bins, 3))
    n_bins = max(1, int(span // bin_s) + 1)
    index = np.clip(((log.start - t0) / bin_s).astype(np.int64), 0, n_bins - 1)
    ok = log.ok
    ok_counts = np.bincount(index[ok], minlength=n_bins)
    errors = {}
    for kind in sorted(set(log.outcome[~ok].astype(str))):
        mask = log.outcome == kind
        errors[kind] = np.bincount(index[mask], minlength=n_bins).astype(int).tolist()
    by_backend = {}
    names, n = np.unique(log.backend[ok].astype(str), return_counts=True)
    for name in [str(x) for x, _ in sorted(zip(names, n, strict=True), key=lambda p: -p[1]) if x][:8]:
        mask = ok & (log.backend == name)
        by_backend[name] = np.bincount(index[mask], minlength=n_bins).astype(int).tolist()
    p50: list[float | None] = [None] * n_bins
    p99: list[float | None] = [None] * n_bins
    ok_idx = index[ok]
    ok_lat = log.latency_s[ok]
    order = np.argsort(ok_idx, kind="stable")
    ok_idx, ok_lat = ok_idx[order], ok_lat[order]
    edges = np.searchsorted(ok_idx, np.arange(n_bins + 1))
    for b in range(n_bins):
        chunk = ok_lat[edges[b] : edges[b + 1]]
        if chunk.size:
            q = np.percentile(chunk, [50, 99]) * 1e3
            p50[b], p99[b] = round(float(q[0]), 3), round(float(q[1]), 3)
    return Timeline(
        t0=t0,
        bin_s=bin_s,
        ok=ok_counts.astype(int).tolist(),
        errors=errors,
        p50_ms=p50,
        p99_ms=p99,
        by_backend=by_backend,
    )


def faults_from_events(events: list[dict[str, Any]]) -> list[Fault]:
    """Fault windows from the fault layer's events (``fault-injected`` / ``fault-healed``, matched by the
    fault's ``id``)."""
    injected: dict[str, dict[str, Any]] = {}
    healed: dict[str, float] = {}
    for event in sorted(events, key=lambda e: e.get("time", 0.0)):
        detail = event.get("detail") or {}
        fault_id = str(detail.get("id", ""))
        if event.get("kind") == "fault-injected" and fault_id not in injected:
            injected[fault_id] = {"time": float(event["time"]), **detail}
        elif event.get("kind") == "fault-healed" and fault_id in injected and fault_id not in healed:
            healed[fault_id] = float(event["time"])
    return [
        Fault(
            injected_at=info["time"],
            healed_at=healed.get(fault_id),
            action=str(info.get("action", "")),
            target=str(info.get("target", "")),
        )
        for fault_id, info in injected.items()
    ]
