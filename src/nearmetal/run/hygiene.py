"""Keeping a run's host fit to measure on: a look at what else uses the CPU before a CPU study's first trial,
and no process of the run outliving its trial."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

from nearmetal.analysis.contention import TrialNoise, trial_contended
from nearmetal.host.cleanup import find_processes
from nearmetal.plan import LoadedPlan
from nearmetal.store import Store

# how long a CPU study measures the host's outside CPU use before its first trial
PREFLIGHT_S = 1.0


def contention_preflight(
    loaded: LoadedPlan,
    store: Store,
    run_id: str,
    note: Callable[[str], None] | None = None,
    shielded: bool | None = None,
) -> None:
    """A CPU study (``analysis.contention_guard``) first measures what else uses the CPU for a second: a busy
    host is named before an hour of trials, and the reading is stored as a ``contention-preflight`` event.
    The per-trial evidence (``telemetry.contention``) decides the verdicts; this only warns."""
    from nearmetal.telemetry.contention import measure_host

    if shielded is None:  # the run's record says (run.shield)
        with contextlib.suppress(Exception):
            shielded = bool((store.get_run(run_id).info or {}).get("shield"))
    try:
        evidence = measure_host(PREFLIGHT_S, run_id=run_id)
    except OSError:
        return
    threshold = loaded.plan.analysis.max_outside_cpu_pct
    busy = trial_contended(
        TrialNoise(evidence.outside_cpu_pct, evidence.steal_pct, evidence.loadavg, evidence.cpus), threshold
    )
    store.add_event(run_id, "contention-preflight", {**evidence.to_dict(), "busy": busy})
    if busy:
        wait = loaded.plan.analysis.max_cpu_wait_pct
        text = (
            f"the host is busy: {evidence.describe()}. The shield holds every trial above that work; a trial"
            f" that still waits for a CPU more than {wait:g}% of its runnable time reads 'contended'"
            if shielded
            else f"the host is busy: {evidence.describe()}. Trials whose threads wait for a CPU more than {wait:g}%"
            " of their runnable time will read 'contended — not interpretable'; run with --shield (every"
            " trial above that work), stop those programs (`nearmetal doctor --check host-contention` names"
            " them) or run on an idle host"
        )
        if note is not None:
            note(text)
        else:
            logging.getLogger(__name__).warning(text)


def sweep(store: Store, run_id: str, after: str) -> None:
    """No process of the run may outlive its trial: one that did (a layer or backend that lost track of
    it) is killed before it disturbs the next trial, and recorded as a ``leak`` event, so the bug shows in
    the run's history and in the exit-path tests instead of on the host."""
    with contextlib.suppress(Exception):
        leaked = find_processes(run_id)
        if not leaked:
            return
        for leftover in leaked:
            with contextlib.suppress(Exception):
                leftover.remove()
        store.add_event(run_id, "leak", {"after": after, "processes": [str(x) for x in leaked]})
