"""Execute one trial here and write its outcome as JSON: what a batch job runs on its node.

    python -m nearmetal.run.exec_trial SPEC.json OUT.json
    python -m nearmetal.run.exec_trial --task-list TASKS   # job arrays: line $SLURM_ARRAY_TASK_ID

(``nearmetal exec-trial`` is the same behind the CLI.) This module imports only what executing a trial needs,
so a job on a busy node starts in a fraction of a second. SIGTERM (scancel, the job's time limit) and SIGHUP
become KeyboardInterrupt, so every layer tears down on the node before the job ends.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

SPEC_NAME = "spec.json"
OUTCOME_NAME = "outcome.json"


def exec_trial(spec_path: Path, out_path: Path) -> int:
    from nearmetal.backends.slurm import placement_from_env
    from nearmetal.run.trial import TrialOutcome, TrialSpec, execute_trial

    spec = TrialSpec.read(spec_path)
    caught: dict[str, str] = {}

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        caught["signal"] = signal.Signals(signum).name
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, on_signal)
    started = time.time()
    # a job on several nodes: their addresses and every interface's counters before and after, on each node
    network = None
    with contextlib.suppress(Exception):
        from nearmetal.host.slurmnodes import NodeNetwork

        network = NodeNetwork.of_job()
        if network is not None:
            network.start()
    try:
        outcome = execute_trial(spec)
    except KeyboardInterrupt:
        name = caught.get("signal", "SIGINT")
        outcome = TrialOutcome(
            status="cancelled",
            wall_s=time.time() - started,
            error=f"stopped by {name} (scancel, the job's time limit, or Ctrl-C); the layers were torn down",
            started_at=started,
            ended_at=time.time(),
            output_dir=spec.trial_dir,
        )
    # where it ran, as the scheduler describes it (node list, CPUs and GPUs per node)
    with contextlib.suppress(Exception):
        outcome.placement = {**outcome.placement, **placement_from_env()}
    if network is not None:
        with contextlib.suppress(Exception):
            outcome.placement["network"] = network.finish()
    outcome.write(out_path)
    return 0


def paths_from_task_list(task_list: Path, index: int | None = None) -> tuple[Path, Path]:
    if index is None:
        index = int(os.environ.get("SLURM_ARRAY_TASK_ID", "0"))
    trial_dir = Path(task_list.read_text().splitlines()[index])
    return trial_dir / SPEC_NAME, trial_dir / OUTCOME_NAME


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nearmetal exec-trial", description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", type=Path)
    parser.add_argument("out", nargs="?", type=Path)
    parser.add_argument("--task-list", type=Path)
    args = parser.parse_args(argv)
    if args.task_list is not None:
        spec, out = paths_from_task_list(args.task_list)
    elif args.spec is not None and args.out is not None:
        spec, out = args.spec, args.out
    else:
        parser.error("give SPEC.json OUT.json, or --task-list FILE")
    return exec_trial(spec, out)


if __name__ == "__main__":
    sys.exit(main())
