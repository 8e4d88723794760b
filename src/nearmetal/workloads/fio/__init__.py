"""fio (Debian ``fio``): file I/O bandwidth, IOPS and completion ("commit") latency.

The job is the seed's job file (seed 002, Kata Containers I/O) written as command-line options, so it runs
unchanged inside a container or a VM whose layer wraps the argv: ``fallocate=none`` (9p cannot fallocate),
``time_based`` with a ``runtime``, ``ioengine=libaio`` with ``iodepth``, ``direct=1``, ``invalidate=1``,
``numjobs`` = the number of clients, one file per client (``filename_format=job$jobnum.dat``),
``group_reporting`` and ``--output-format=json+``.

Where the files go: the workload reads its test directory from ``ctx.endpoints["test_dir"]`` (a filesystem
layer mounts something there; a container or VM layer names the path inside the guest), else its own
``directory`` parameter, else ``<trial dir>/fio-data``. ``ctx.endpoints["test_dir_host"]`` is the same
directory as seen from the host, used for the free-space check and for removing the files after the trial.

What the I/O really was: a job that reads gets its files laid out by ``prepare`` (random data, written and
synced); with ``drop_caches`` every file is then evicted from the page cache at the mount and at the
directory that backs it (``test_dir_backing``, set by filesystem layers), so fio starts cold through any
layer (``drop_caches_scope: host`` also drops the whole host's caches). ``prepare`` records the backing disk's byte counters (``telemetry.diskio``) and ``parse`` reads them
again: ``disk_read_share_pct`` / ``disk_write_share_pct`` are the bytes the disk moved as a share of the
bytes fio moved (≈100 % direct I/O, ≈0 % page cache; a layer whose daemon drops O_DIRECT shows here).
Boot files a VM layer read during the trial are left out (``io-excluded.json``).

The parts, one module each: ``options`` (which fio options a plan may pass through), ``job`` (the parameters
and the options they become), ``layout`` (size checks, laying out and evicting the files), ``disk`` (what the
disk moved), ``parse`` (fio's JSON from 2.x to 3.x); this module is the workload that puts them in order.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Any

from nearmetal.confine import confine
from nearmetal.host import hostcmd
from nearmetal.metrics import Metric
from nearmetal.workloads.base import (
    ProcessSpec,
    Requirement,
    TrialOutput,
    Workload,
    WorkloadContext,
    register_workload,
)
from nearmetal.workloads.fio.disk import disk_metrics, disk_record
from nearmetal.workloads.fio.job import FILE_PREFIX, FILE_SUFFIX, FioParams, job_options
from nearmetal.workloads.fio.layout import check_sizes, drop_caches, evict, lay_out
from nearmetal.workloads.fio.options import CONFINED_OPTIONS
from nearmetal.workloads.fio.parse import parse_fio_json

DATA_DIR_NAME = "fio-data"
PREPARE_RECORD = "fio-prepare.json"
# bytes a layer read from the disk during the trial that were not fio's (a VM's kernel and initramfs)
EXCLUDED_RECORD = "io-excluded.json"
JOB_RECORD = "fio-job.fio"


@register_workload
class FioWorkload(Workload[FioParams]):
    kind = "fio"
    Params = FioParams
    description = "fio file I/O: bandwidth, IOPS, completion latency percentiles"
    primary_metric = "bw_MiBps"

    def requires(self, params: FioParams) -> list[Requirement]:
        return [Requirement("fio", "fio", purpose="the I/O generator")]

    @staticmethod
    def _dirs(params: FioParams, ctx: WorkloadContext) -> tuple[str, Path]:
        """(the directory fio is told, the same directory on the host)."""
        default = (
            str(ctx.trial_dir.resolve() / DATA_DIR_NAME) if params.directory is None else params.directory
        )
        seen = str(ctx.endpoints.get("test_dir") or default)
        host = Path(str(ctx.endpoints.get("test_dir_host") or seen))
        return seen, host

    def check_resources(self, params: FioParams, workdir: Path) -> None:
        """Before a run: will the files and buffers fit? (``workdir`` is where trial directories go.)"""
        check_sizes(params, Path(params.directory) if params.directory else workdir)

    def prepare(self, params: FioParams, ctx: WorkloadContext) -> None:
        seen, host = self._dirs(params, ctx)
        host.mkdir(parents=True, exist_ok=True)
        check_sizes(params, host)
        backing = Path(str(ctx.endpoints.get("test_dir_backing") or host))
        record: dict[str, Any] = {"directory": seen, "host_directory": str(host), "direct": params.direct}
        record["laid_out_bytes"] = lay_out(params, host)
        record["drop_caches"] = "not asked"
        if params.drop_caches:
            host_drop = drop_caches() if params.drop_caches_scope == "host" else "dropped"
            evicted = evict(params, [host, backing])
            record["drop_caches"] = host_drop if evicted else "could not evict the data files"
        record["disk"] = {**disk_record(backing), "rw": params.rw}
        (ctx.trial_dir / PREPARE_RECORD).write_text(json.dumps(record, indent=1) + "\n")
        job = "[nearmetal-fio-job]\n" + "".join(
            f"{k}={v}\n" for k, v in job_options(params, seen) if k != "name"
        )
        (ctx.trial_dir / JOB_RECORD).write_text(job)
        for key, value in params.options.items():
            if key in CONFINED_OPTIONS and key != "read_iolog":  # fio does not make a log's directory
                confine(str(value), ctx.trial_dir).parent.mkdir(parents=True, exist_ok=True)

    def processes(self, params: FioParams, ctx: WorkloadContext) -> list[ProcessSpec]:
        seen, _ = self._dirs(params, ctx)
        for key, value in params.options.items():
            if key in CONFINED_OPTIONS:  # a link made after the plan check does not lead the log out
                confine(str(value), ctx.trial_dir)
        argv = ["fio", *(f"--{k}={v}" for k, v in job_options(params, seen))]
        argv.append("--output-format=json+")
        return [ProcessSpec(argv=argv, cwd=ctx.trial_dir)]

    def parse(self, output: TrialOutput, params: FioParams | None = None) -> list[Metric]:
        metrics = parse_fio_json(output.stdout)
        record = output.files.get(PREPARE_RECORD)
        if record is not None and record.exists():
            with contextlib.suppress(OSError, ValueError):
                prepared = json.loads(record.read_text())
                state = prepared.get("drop_caches", "")
                metrics.append(
                    Metric("caches_dropped", 1.0 if state == "dropped" else 0.0, "flag", "higher", "fio")
                )
                excluded: dict[str, Any] = {}
                extra = output.files.get(EXCLUDED_RECORD)
                if extra is not None and extra.exists():
                    excluded = json.loads(extra.read_text())
                metrics += disk_metrics(prepared.get("disk") or {}, excluded, metrics)
        return metrics

    def placement(self, output: TrialOutput, params: FioParams | None = None) -> dict[str, Any]:
        """What holds fio's files: {"fio_data": {"kind": "disk"|"memory"|"unknown", "device", "fstype"}}."""
        record = output.files.get(PREPARE_RECORD)
        try:
            disk = json.loads(record.read_text()).get("disk") if record is not None else None
        except (OSError, ValueError):
            return {}
        if not isinstance(disk, dict):
            return {}
        return {"fio_data": {k: disk[k] for k in ("kind", "device", "fstype") if disk.get(k)}}

    def parse_file(self, path: Path) -> list[Metric]:
        return parse_fio_json(path.read_text(errors="replace"))

    def cleanup(self, params: FioParams, ctx: WorkloadContext) -> None:
        """Remove the data files this trial made (a layer's teardown removes its own mounts)."""
        _, host = self._dirs(params, ctx)
        if not host.is_dir():
            return
        for job in range(params.numjobs):
            with contextlib.suppress(OSError):
                (host / f"{FILE_PREFIX}{job}{FILE_SUFFIX}").unlink()
        if host.name == DATA_DIR_NAME:
            with contextlib.suppress(OSError):
                host.rmdir()

    def tool_versions(self) -> dict[str, str]:
        if not shutil.which("fio"):
            return {}
        out = hostcmd.output(["fio", "--version"], 20) or ""
        return {"fio": out.strip().removeprefix("fio-")} if out.strip() else {}
