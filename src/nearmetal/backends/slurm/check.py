"""What Slurm would never start, refused before anything is submitted: no client commands, no controller,
an unknown partition, a time limit above its MaxTime, a request no node can satisfy (``sbatch
--test-only``)."""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

from nearmetal.backends.slurm.commands import SlurmError, _minutes_of, _run, parse_scontrol
from nearmetal.backends.slurm.script import SlurmScripts
from nearmetal.backends.spec import TrialSpec

if TYPE_CHECKING:
    from nearmetal.plan import LoadedPlan


class SlurmCheck(SlurmScripts):
    """The Slurm backend's check before a run."""

    def check(self, loaded: LoadedPlan) -> None:
        """Refuse, before any job is submitted, what Slurm would never start: no cluster, an unknown
        partition, a time limit above its MaxTime, a request no node can satisfy (``sbatch --test-only``)."""
        from nearmetal.backends.spec import resources_for

        for tool in ("sbatch", "squeue", "scontrol", "scancel"):
            if shutil.which(tool) is None:
                raise SlurmError(
                    f"{tool} is not installed: the Slurm backend needs the Slurm client commands",
                    fix="apt-get install -y slurm-client (and point SLURM_CONF at your cluster's slurm.conf)",
                )
        ping = _run(["scontrol", "ping"], timeout=30)
        if ping.returncode != 0 or "UP" not in ping.stdout:
            raise SlurmError(
                f"no Slurm controller answers: {(ping.stdout + ping.stderr).strip()[:300]}",
                fix="start Slurm (bash scripts/services/slurm.sh start) or set SLURM_CONF",
            )
        partition = self.options.partition
        max_minutes: float | None = None
        if partition:
            part = _run(["scontrol", "show", "partition", "-o", partition])
            if part.returncode != 0:
                raise SlurmError(
                    f"Slurm has no partition {partition!r}: {part.stderr.strip()}",
                    fix="pick one of `sinfo -h -o %P`",
                )
            max_minutes = _minutes_of(parse_scontrol(part.stdout).get("MaxTime", ""))
        problems: dict[tuple[str, ...], list[str]] = {}
        for cell in loaded.cells:
            spec = TrialSpec(
                run_id="check",
                trial_key=cell.cell_id,
                trial_dir="/",
                workload=cell.workload,
                kind=cell.kind,
                variant=cell.variant,
                point=cell.point,
                params={},
                layers=[],
                timeout=cell.timeout,
                is_baseline=cell.is_baseline,
                index=0,
                warmup=False,
                block=0,
                seed=0,
                resources=resources_for(cell, loaded.plan),
            )
            opts = tuple(self.sbatch_options(spec))
            if opts in problems:
                if problems[opts]:
                    problems[opts].append(cell.key)
                continue
            reason = None
            minutes = _minutes_of(self.time_limit(spec))
            if max_minutes is not None and minutes is not None and minutes > max_minutes:
                reason = (
                    f"time limit {self.time_limit(spec)} is above partition {partition}'s MaxTime "
                    f"({max_minutes:g} min)"
                )
            else:
                test = _run(["sbatch", "--test-only", *opts, "--wrap", "true"])
                said = f"{test.stderr}\n{test.stdout}".strip()
                # --test-only answers "Job N to start at …" when the request can be satisfied
                if test.returncode != 0 and "to start at" not in said:
                    reason = (
                        said.replace("sbatch: error: ", "") or f"sbatch --test-only exited {test.returncode}"
                    )
            if reason:
                problems[opts] = [f"{reason} [{' '.join(opts)}]", cell.key]
            else:
                problems[opts] = []
        refused = {k: v for k, v in problems.items() if v}
        if refused:
            lines = [f"{v[0]}: {', '.join(v[1:4])}{' …' if len(v) > 4 else ''}" for v in refused.values()]
            raise SlurmError(
                "Slurm can never start these cells' jobs as asked; nothing was submitted:\n  "
                + "\n  ".join(lines),
                fix="lower the plan's resources or time, or pick another --partition",
            )
