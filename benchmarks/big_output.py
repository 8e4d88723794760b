"""The runner's memory when a workload floods its stdout (issue 26, case 9): a ``command`` workload writes
SIZE of text to stdout, then its metric line; the runner (this process, through ``nearmetal.run_plan``)
must keep its peak RSS flat in the output's size. Output goes to the trial's file as it is written; the
parser reads a bounded head and tail of it (``backends.base.read_output``).

    python benchmarks/big_output.py [--gib 2] [--workdir DIR]

Prints the output size, the trial's status and metric, and the runner's peak RSS (ru_maxrss of this
process; the writing child is not counted). Goal: < 300 MB for 2 GiB. The trial's directory is removed.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nearmetal

WRITER = """
import sys
line = ("x" * 1023 + "\\n").encode()
block = line * 1024  # 1 MiB
out = sys.stdout.buffer
for _ in range({mib}):
    out.write(block)
out.write(b"t=1.5\\n")
out.flush()
"""

PLAN = """
name: big-output
workloads:
  flood:
    kind: command
    params:
      argv: [{python!r}, {script!r}]
      metrics: [{{name: t_s, regex: 't=([0-9.]+)', direction: lower}}]
    timeout: 3600s
variants: {{bare: []}}
repeats: 1
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=2.0, help="GiB written to stdout (default 2)")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where the trial runs (default: a temp dir)"
    )
    args = parser.parse_args()
    mib = int(args.gib * 1024)
    base = Path(tempfile.mkdtemp(prefix="nearmetal-bigout-", dir=args.workdir))
    try:
        script = base / "writer.py"
        script.write_text(WRITER.format(mib=mib))
        plan = base / "plan.yaml"
        plan.write_text(PLAN.format(python=sys.executable, script=str(script)))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        started = time.monotonic()
        result = nearmetal.run_plan(plan, db=f"sqlite:///{base / 'results.db'}", workdir=base / "runs")
        took = time.monotonic() - started
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        record = result.records[-1]
        stdout = next((base / "runs").rglob("main.stdout"))
        size = stdout.stat().st_size
        metric = {m.name: m.value for m in record.metrics}.get("t_s")
        print(f"stdout written:      {size / 2**30:.2f} GiB ({size:,} bytes)")
        print(f"trial:               {record.status}, t_s = {metric} ({took:.1f} s)")
        print(f"runner peak RSS:     {peak:.0f} MB (before the run: {before:.0f} MB)")
        print(f"goal < 300 MB:       {'met' if peak < 300 else 'NOT met'}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
