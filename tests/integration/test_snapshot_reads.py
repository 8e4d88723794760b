"""Reading a run while it is written (issue 18, item 6): ``nearmetal report RUN`` during a run raised
``IndexError`` in the analysis, because the trials and their metrics were read in separate statements and
trials stored in between had metrics but no trial row. The reader now takes one snapshot."""

from __future__ import annotations

import io
import os
import subprocess
import time
from pathlib import Path

from conftest import nearmetal_argv
from helpers import write_plan
from rich.console import Console

from nearmetal.api import load_results
from nearmetal.report.terminal import print_report
from nearmetal.store import Store


def test_reports_of_a_run_being_written_never_fail(tmp_path: Path, db_url: str) -> None:
    plan = write_plan(
        tmp_path,
        """
        name: busy
        workloads:
          e:
            kind: command
            params:
              argv: [echo, "x 1 y 2 z 3"]
              metrics:
                - {name: x, regex: 'x (\\d)', direction: higher}
                - {name: y, regex: 'y (\\d)', direction: higher}
                - {name: z, regex: 'z (\\d)', direction: higher}
        variants: {a: [], b: [], c: []}
        repeats: 200
        order: interleaved
        """,
    )
    env = {**os.environ, "NEARMETAL_DB": db_url}
    writer = subprocess.Popen(
        [*nearmetal_argv(), "run", str(plan), "-q", "--no-html", "--run-id", "busy-run"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    reads = 0
    try:
        store = None
        deadline = time.monotonic() + 300
        while writer.poll() is None and time.monotonic() < deadline:
            if store is None:
                try:
                    store = Store(db_url)
                    store.get_run("busy-run")
                except Exception:
                    store = None
                    time.sleep(0.05)
                    continue
            results = load_results("busy-run", store=store)
            print_report(results, Console(file=io.StringIO(), width=200))
            reads += 1
    finally:
        if writer.poll() is None:
            writer.kill()
        _, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err
    assert reads >= 5, f"only {reads} reports were read while the run was written"
