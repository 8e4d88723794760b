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

The parser reads fio's JSON from 2.x to 3.x: latencies in µs under ``clat``/``lat`` (2.x) or in ns under
``clat_ns``/``lat_ns`` (3.x), ``io_bytes`` in KiB (2.x) or bytes (3.x, with ``io_kbytes``), ``bw`` always in
KiB/s, percentile keys as strings (``"99.900000"``), duplicate keys (fio 3.1 repeated ``"0.00"`` in an empty
side's percentiles; any fio repeats ``filename`` in ``job options``), one entry per job or one per group
(``group_reporting``), ``read``/``write``/``trim`` sides or ``mixed`` (``unified_rw_reporting``),
``client_stats`` (client/server mode), and json+ latency histograms (``bins``), which make exact
percentiles when several jobs are merged. Groups run one after another (``stonewall``, ``new_group``) are
reported per group, ``g<groupid>_…`` (see ``parse_fio_json``).

What the I/O really was: a job that reads gets its files laid out by ``prepare`` (random data, written and
synced); with ``drop_caches`` every file is then evicted from the page cache at the mount and at the
directory that backs it (``test_dir_backing``, set by filesystem layers), so fio starts cold through any
layer (``drop_caches_scope: host`` also drops the whole host's caches). ``prepare`` records the backing disk's byte counters (``telemetry.diskio``) and ``parse`` reads them
again: ``disk_read_share_pct`` / ``disk_write_share_pct`` are the bytes the disk moved as a share of the
bytes fio moved (≈100 % direct I/O, ≈0 % page cache; a layer whose daemon drops O_DIRECT shows here).
Boot files a VM layer read during the trial are left out (``io-excluded.json``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from nearmetal.errors import NearmetalError
from nearmetal.host import hostcmd
from nearmetal.metrics import Metric
from nearmetal.telemetry import diskio
from nearmetal.units import mem_available_bytes, parse_size
from nearmetal.workloads.base import (
    ParseError,
    ProcessSpec,
    Requirement,
    TrialOutput,
    Workload,
    WorkloadContext,
    WorkloadParams,
    register_workload,
)

OPTION_KEY_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_SHELL = "fio runs its value as a shell command"
_FILES = "it names files or devices fio writes; nearmetal chooses where fio writes (fio.directory)"
_OWN = "it has a parameter of its own, which the size checks see"
_HOST = "it makes fio connect to, or listen for, another host"
_OUTPUT = "it redirects fio's output, which nearmetal reads"
# Options nearmetal passes through `options` only when they are here: they shape the I/O (pattern, rate,
# buffers, syncing, timing, reporting) and name no file, host, command or output. Anything else is refused
# (an allow-list: fio has ~400 options and its command line also takes --output, --client, --server...).
ALLOWED_OPTIONS: frozenset[str] = frozenset(
    [
        "allrandrepeat",
        "atomic",
        "blockalign",
        "ba",
        "blocksize_range",
        "bsrange",
        "blocksize_unaligned",
        "bs_unaligned",
        "bssplit",
        "buffer_compress_chunk",
        "buffer_compress_percentage",
        "buffer_pattern",
        "buffered",
        "clat_percentiles",
        "clocksource",
        "continue_on_error",
        "create_on_open",
        "create_only",
        "create_serialize",
        "dedupe_percentage",
        "disable_bw_measurement",
        "disable_clat",
        "disable_lat",
        "disable_slat",
        "do_verify",
        "end_fsync",
        "exitall",
        "exitall_on_error",
        "fadvise_hint",
        "fdatasync",
        "file_append",
        "file_service_type",
        "fixedbufs",
        "fsync",
        "fsync_on_close",
        "gtod_reduce",
        "hipri",
        "ignore_error",
        "invalidate",
        "iodepth_batch",
        "iodepth_batch_complete",
        "iodepth_batch_complete_max",
        "iodepth_batch_complete_min",
        "iodepth_batch_submit",
        "iodepth_low",
        "kb_base",
        "lat_percentiles",
        "latency_percentile",
        "latency_target",
        "latency_window",
        "lockfile",
        "log_avg_msec",
        "log_hist_coarseness",
        "log_hist_msec",
        "log_max_value",
        "log_offset",
        "loops",
        "max_latency",
        "new_group",
        "norandommap",
        "number_ios",
        "offset",
        "offset_align",
        "offset_increment",
        "overwrite",
        "percentage_random",
        "percentile_list",
        "pre_read",
        "random_distribution",
        "random_generator",
        "randrepeat",
        "randseed",
        "rate",
        "rate_cycle",
        "rate_ignore_thinktime",
        "rate_iops",
        "rate_iops_min",
        "rate_min",
        "rate_process",
        "refill_buffers",
        "registerfiles",
        "rwmixwrite",
        "rw_sequencer",
        "scramble_buffers",
        "significant_figures",
        "sqthread_poll",
        "ss",
        "ss_dur",
        "ss_ramp",
        "startdelay",
        "steadystate",
        "steadystate_duration",
        "steadystate_ramp_time",
        "stonewall",
        "sync",
        "thinktime",
        "thinktime_blocks",
        "thinktime_spin",
        "time_based",
        "trim_backlog",
        "trim_percentage",
        "uncached",
        "unified_rw_reporting",
        "unit_base",
        "unlink",
        "unlink_each_loop",
        "userspace_reap",
        "verify",
        "verify_backlog",
        "verify_fatal",
        "verify_interval",
        "verify_offset",
        "verify_pattern",
        "wait_for_previous",
        "write_barrier",
        "zero_buffers",
        "nice",
        "prio",
        "prioclass",
        "cpus_allowed",
        "cpus_allowed_policy",
        "cpumask",
    ]
)
# Options that name a file fio writes (a log's prefix) or reads: passed only as a relative path that stays in
# the trial's directory (plan.paths: checked at plan load, and again with links resolved when the trial runs).
CONFINED_OPTIONS: frozenset[str] = frozenset(
    {"write_bw_log", "write_lat_log", "write_iops_log", "write_hist_log", "write_iolog", "read_iolog"}
)
# Why some well-known options are refused (the error names the reason; any other option not allowed is refused
# as unknown). See SECURITY.md.
FORBIDDEN_OPTIONS: dict[str, str] = {
    "exec_prerun": _SHELL,
    "exec_postrun": _SHELL,
    "trigger": _SHELL,
    "trigger_cmd": _SHELL,
    "trigger_file": _SHELL,
    "trigger_timeout": _SHELL,
    "filename": _FILES,
    "directory": _FILES,
    "opendir": _FILES,
    "filename_format": _FILES,
    "unique_filename": _FILES,
    "replay_redirect": _FILES,
    "merge_blktrace_file": _FILES,
    "verify_dump": _FILES,
    "verify_state_save": _FILES,
    "verify_state_load": _FILES,
    "output": _OUTPUT,
    "output_format": _OUTPUT,
    "append_terse": _OUTPUT,
    "minimal": _OUTPUT,
    "client": _HOST,
    "server": _HOST,
    "daemonize": "fio would keep running after the trial",
    "hostname": _HOST,
    "port": _HOST,
    "mem": "a path after mmap/mmaphuge/mmapshared makes fio create that file",
    "iomem": "a path after mmap/mmaphuge/mmapshared makes fio create that file",
    "ioengine": "external:/path loads a shared object; " + _OWN,
    "cgroup": "fio would create cgroups on the host; use a nearmetal layer",
    "cgroup_weight": "fio would create cgroups on the host; use a nearmetal layer",
    "cgroup_nodelete": "fio would leave cgroups on the host",
    "ioscheduler": "fio would change the host's I/O scheduler for the device",
    "fill_device": "it fills the whole filesystem or device",
    "fill_fs": "it fills the whole filesystem or device",
    "size": _OWN,
    "filesize": _OWN,
    "io_size": _OWN,
    "io_limit": _OWN,
    "numjobs": _OWN,
    "nrfiles": "it multiplies the files fio writes past the size checks",
}
# characters that would end an option (in the recorded job file, a new line is a new option) or the argument
_BAD_VALUE_CHARS = {"\n": "a line break", "\r": "a carriage return", "\0": "a NUL byte"}


def option_problem(key: str, value: object) -> str | None:
    """Why ``key: value`` cannot pass through to fio, or None."""
    if not OPTION_KEY_RE.match(key):
        return f"{key!r} is not a fio option name (lower case letters, digits, _)"
    if key in FORBIDDEN_OPTIONS:
        return f"fio option {key!r} is not allowed in a plan: {FORBIDDEN_OPTIONS[key]}"
    if key not in ALLOWED_OPTIONS and key not in CONFINED_OPTIONS:
        return (
            f"fio option {key!r} is not one nearmetal passes through: only options known to name no file, "
            "host, command or output are (nearmetal.workloads.fio.ALLOWED_OPTIONS; log files: "
            + ", ".join(sorted(CONFINED_OPTIONS))
            + ")"
        )
    text = str(value)
    for char, name in _BAD_VALUE_CHARS.items():
        if char in text:
            return f"fio option {key!r}: the value contains {name}, which would start another option"
    if key in CONFINED_OPTIONS:
        from nearmetal.plan.paths import path_problem

        if not text or Path(text).is_absolute():
            return (
                f"fio option {key!r} names a file fio writes: give a relative path, which stays in the "
                "trial's directory"
            )
        if path_problem(text, []):
            return f"fio option {key!r}: {text!r} climbs out of the trial's directory ('..')"
    return None


DATA_DIR_NAME = "fio-data"
FILE_PREFIX = "job"
FILE_SUFFIX = ".dat"
PREPARE_RECORD = "fio-prepare.json"
# bytes a layer read from the disk during the trial that were not fio's (a VM's kernel and initramfs)
EXCLUDED_RECORD = "io-excluded.json"
READ_PATTERNS = frozenset({"read", "randread", "randrw", "readwrite", "rw"})
LAYOUT_CHUNK = 1024 * 1024
JOB_RECORD = "fio-job.fio"
# percentiles the metrics carry: (fio's key as a number, metric name suffix)
PERCENTILES: list[tuple[float, str]] = [(50.0, "p50"), (95.0, "p95"), (99.0, "p99"), (99.9, "p99_9")]
SIDES = ("read", "write", "trim", "mixed")


class FioParams(WorkloadParams):
    rw: Literal["read", "randread", "write", "randwrite", "randrw", "readwrite", "rw"] = Field(
        "randread", description="I/O pattern (the seed's FIO_RW)"
    )
    bs: str = Field("64k", description="block size (the seed: 65536)")
    iodepth: int = Field(8, ge=1, le=4096, description="I/Os in flight per client (libaio)")
    ioengine: Literal["libaio", "psync", "io_uring", "posixaio", "sync", "auto"] = Field(
        "auto", description="auto = libaio when this fio has it, else psync (then iodepth is 1)"
    )
    direct: bool = Field(True, description="O_DIRECT: bypass the page cache (the seed: direct=1)")
    numjobs: int = Field(1, ge=1, le=1024, description="clients: one process and one file each")
    size: str = Field("64m", description="file size per client (the seed: 32g)")
    runtime: float = Field(5.0, gt=0, le=86400, description="seconds of I/O (time_based)")
    ramp_time: float = Field(0.0, ge=0, le=3600, description="seconds not counted at the start")
    time_based: bool = True
    fallocate: Literal["none", "posix", "keep", "native", "default"] = Field(
        "none", description="none: not every filesystem (9p) can fallocate"
    )
    invalidate: bool = True
    group_reporting: bool = True
    rwmixread: int | None = Field(None, ge=0, le=100, description="read share of randrw/readwrite, %")
    directory: str | None = Field(
        None, description="test directory when no layer sets one (default: <trial dir>/fio-data)"
    )
    drop_caches: bool = Field(
        True,
        description="start every trial cold: drop the data files' pages from the page cache, at the mount "
        "and at the directory behind it (a FUSE daemon's or an overlay's files)",
    )
    drop_caches_scope: Literal["files", "host"] = Field(
        "files",
        description="files: the data files only; host: also write 3 to /proc/sys/vm/drop_caches where "
        "permitted (every process on the host then re-reads its files from the disk during the trial, "
        "which blurs disk_read_share_pct on a shared host)",
    )
    options: dict[str, str | int | float] = Field(
        default_factory=dict, description="more fio options, e.g. {norandommap: 1}"
    )

    @field_validator("bs", "size")
    @classmethod
    def _size(cls, value: str) -> str:
        parse_size(value)
        return value

    @field_validator("directory")
    @classmethod
    def _directory(cls, value: str | None) -> str | None:
        if value is not None and any(c in value for c in _BAD_VALUE_CHARS):
            raise ValueError("a directory cannot contain a line break or a NUL byte")
        return value

    @field_validator("options")
    @classmethod
    def _options(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key, item in value.items():
            problem = option_problem(key, item)
            if problem:
                raise ValueError(problem)
        return value

    @property
    def size_bytes(self) -> int:
        return parse_size(self.size)

    @property
    def bs_bytes(self) -> int:
        return parse_size(self.bs)


@cache
def fio_engines(fio: str = "fio") -> frozenset[str]:
    """The I/O engines this fio binary was built with (``fio --enghelp``)."""
    out = hostcmd.output([fio, "--enghelp"], 20) or ""
    return frozenset(line.strip() for line in out.splitlines()[1:] if line.strip())


def resolve_engine(params: FioParams) -> str:
    if params.ioengine != "auto":
        return params.ioengine
    engines = fio_engines()
    return "libaio" if not engines or "libaio" in engines else "psync"


def job_options(params: FioParams, directory: str) -> list[tuple[str, str]]:
    """The seed's job file as (option, value) pairs, in the order fio's documentation lists them."""
    engine = resolve_engine(params)
    opts: list[tuple[str, str]] = [
        # fio takes a job name that names an existing file in its working directory as that job's file
        # (inside a container the working directory is / and /nearmetal exists): keep the name unusual
        ("name", "nearmetal-fio-job"),
        ("directory", directory),
        # a value that starts with "$" is taken for an environment variable by some fio builds/environments:
        # a prefix keeps $jobnum working everywhere
        ("filename_format", FILE_PREFIX + "$jobnum" + FILE_SUFFIX),
        ("rw", params.rw),
        ("bs", params.bs),
        ("ioengine", engine),
        ("iodepth", str(params.iodepth if engine in ("libaio", "io_uring", "posixaio") else 1)),
        ("direct", "1" if params.direct else "0"),
        ("invalidate", "1" if params.invalidate else "0"),
        ("fallocate", params.fallocate),
        ("numjobs", str(params.numjobs)),
        ("size", params.size),
        ("filesize", params.size),
        # milliseconds: fio reads a bare "0.5" as 0 seconds
        ("runtime", f"{round(params.runtime * 1000)}ms"),
        ("ramp_time", f"{round(params.ramp_time * 1000)}ms"),
        ("group_reporting", "1" if params.group_reporting else "0"),
    ]
    if params.time_based:
        opts.append(("time_based", "1"))
    if params.rwmixread is not None:
        opts.append(("rwmixread", str(params.rwmixread)))
    opts += [(k, str(v)) for k, v in params.options.items()]
    return opts


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _nearest_dir(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_sizes(params: FioParams, data_dir: Path) -> None:
    """Refuse a job whose files cannot fit where they go, or whose buffers cannot fit in memory."""
    # files already laid out at full size (a read-only image, a previous trial's) need no more space
    needed = 0
    for job in range(params.numjobs):
        try:
            have = (data_dir / f"{FILE_PREFIX}{job}{FILE_SUFFIX}").stat().st_size
        except OSError:
            have = 0
        needed += max(0, params.size_bytes - have)
    free = free_bytes(_nearest_dir(data_dir))
    # leave 5% of what is free for everything else on that filesystem
    if needed > free * 0.95:
        raise NearmetalError(
            f"fio needs {needed / 1024**2:,.0f} MiB ({params.numjobs} clients × {params.size}) in {data_dir}, "
            f"which has {free / 1024**2:,.0f} MiB free",
            fix="lower fio size or numjobs, or point fio.directory (or the layer's base_dir) at a larger "
            "filesystem",
        )
    buffers = params.numjobs * params.iodepth * params.bs_bytes
    available = mem_available_bytes()
    if available is not None and buffers > available // 2:
        raise NearmetalError(
            f"fio's I/O buffers need {buffers / 1024**2:,.0f} MiB (numjobs × iodepth × bs) but only "
            f"{available / 1024**2:,.0f} MiB of memory is available",
            fix="lower fio numjobs, iodepth or bs",
        )


def lay_out(params: FioParams, directory: Path) -> int:
    """Write the files a reading job reads (what fio would lay out at its start), so their pages can be
    dropped before fio starts; files already at full size (a read-only image's) are left alone. Returns
    the bytes written."""
    if params.rw not in READ_PATTERNS:
        return 0
    written = 0
    block = os.urandom(LAYOUT_CHUNK)  # not zeros: a thin-provisioned disk would not store them
    for job in range(params.numjobs):
        path = directory / f"{FILE_PREFIX}{job}{FILE_SUFFIX}"
        try:
            have = path.stat().st_size
        except OSError:
            have = 0
        if have >= params.size_bytes:
            continue
        with open(path, "r+b" if have else "wb") as f:
            f.seek(have)
            left = params.size_bytes - have
            while left > 0:
                left -= f.write(block[: min(LAYOUT_CHUNK, left)])
            written += params.size_bytes - have
            f.flush()
            os.fsync(f.fileno())
    return written


def evict(params: FioParams, directories: list[Path]) -> bool:
    """Drop the data files' pages from the page cache, at the mount and at the directory behind it (a FUSE
    daemon's file underneath is another inode with pages of its own). Dirty pages are written first (a
    page is dropped only when clean). False when a file that is there could not be evicted."""
    ok = True
    for directory in dict.fromkeys(directories):
        for job in range(params.numjobs):
            path = directory / f"{FILE_PREFIX}{job}{FILE_SUFFIX}"
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # a writing job's file fio has not made yet
            except OSError:
                ok = False
                continue
            try:
                with contextlib.suppress(OSError):
                    os.fdatasync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            except OSError:
                ok = False
            finally:
                os.close(fd)
    return ok


def disk_record(backing_dir: Path) -> dict[str, Any]:
    """What holds the data and its disk's counters now (``telemetry.diskio``)."""
    backing = diskio.backing_of(backing_dir)
    record: dict[str, Any] = backing.to_dict()
    if backing.kind == "disk":
        now = diskio.counters(backing.majmin)
        if now is not None:
            record.update(read_bytes=now[0], write_bytes=now[1], boot_id=diskio.boot_id())
    return record


def disk_metrics(record: dict[str, Any], excluded: dict[str, Any], metrics: list[Metric]) -> list[Metric]:
    """The disk's bytes during the trial as shares of fio's (``disk_read_share_pct`` …); [] when the
    record is from another boot or host, or the data is not on a disk."""
    if (
        record.get("kind") != "disk"
        or "read_bytes" not in record
        or record.get("boot_id") != diskio.boot_id()
    ):
        return []
    now = diskio.counters(str(record.get("majmin", "")))
    if now is None:
        return []
    by_name = {m.name: m.value for m in metrics}
    if "read_io_MiB" in by_name or "write_io_MiB" in by_name:
        read_mib, write_mib = by_name.get("read_io_MiB"), by_name.get("write_io_MiB")
    else:  # one direction did all the I/O: the job's pattern says which
        io_mib = by_name.get("io_MiB")
        read_mib, write_mib = (io_mib, None) if record.get("rw") in READ_PATTERNS else (None, io_mib)
    skip = excluded if excluded.get("device") == record.get("device") else {}
    disk_read = max(0, now[0] - int(record["read_bytes"]) - int(skip.get("read_bytes", 0)))
    disk_write = max(0, now[1] - int(record["write_bytes"]) - int(skip.get("write_bytes", 0)))
    out = [
        Metric("disk_read_MiB", disk_read / 1024**2, "MiB", "lower", "diskstats"),
        Metric("disk_write_MiB", disk_write / 1024**2, "MiB", "lower", "diskstats"),
    ]
    # the share of fio's bytes the disk moved: ~100 = direct I/O, ~0 = the page cache served it
    if read_mib:
        out.append(
            Metric("disk_read_share_pct", 100.0 * disk_read / 1024**2 / read_mib, "%", "higher", "diskstats")
        )
    if write_mib:
        out.append(
            Metric(
                "disk_write_share_pct", 100.0 * disk_write / 1024**2 / write_mib, "%", "higher", "diskstats"
            )
        )
    return out


def drop_caches() -> str:
    """Write back dirty pages and drop the page cache, dentries and inodes; says what happened."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return "dropped"
    except OSError as exc:
        return f"not permitted ({exc.strerror or exc})"


@register_workload
class FioWorkload(Workload):
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
        from nearmetal.plan.paths import confine

        for key, value in params.options.items():
            if key in CONFINED_OPTIONS and key != "read_iolog":  # fio does not make a log's directory
                confine(str(value), ctx.trial_dir).parent.mkdir(parents=True, exist_ok=True)

    def processes(self, params: FioParams, ctx: WorkloadContext) -> list[ProcessSpec]:
        seen, _ = self._dirs(params, ctx)
        from nearmetal.plan.paths import confine

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


# --- parsing ----------------------------------------------------------------------------------------------


def _first_wins(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """fio sometimes repeats a key in one object (``"0.00"`` in empty percentiles, ``filename`` in job
    options); the first value is the one fio meant for that position, later ones are noise."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        out.setdefault(key, value)
    return out


def load_fio_json(text: str) -> dict[str, Any]:
    """The JSON document in fio's output, skipping anything fio (or a console) printed around it."""
    text = text.replace("\r\n", "\n")
    decoder = json.JSONDecoder(object_pairs_hook=_first_wins)
    for match in re.finditer(r"^\s*\{", text, flags=re.MULTILINE):
        start = text.index("{", match.start())
        try:
            doc, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            continue
        if isinstance(doc, dict) and ("jobs" in doc or "client_stats" in doc):
            return doc
    if "{" not in text:
        raise ParseError("no JSON in fio's output (run fio with --output-format=json or json+)")
    raise ParseError("fio's output has no complete JSON document with 'jobs' (was the run cut short?)")


@dataclass
class SideStats:
    """One direction (read, write, …) summed over the job entries of a run."""

    io_bytes: float = 0.0
    bw_kibps: float = 0.0
    iops: float = 0.0
    ios: float = 0.0
    # (mean µs, weight) per job entry, and percentile µs per job entry
    clat_means: list[tuple[float, float]] = field(default_factory=list)
    lat_means: list[tuple[float, float]] = field(default_factory=list)
    percentiles: list[tuple[dict[float, float], float]] = field(default_factory=list)
    bins_us: dict[float, float] = field(default_factory=dict)
    bins_complete: bool = True

    @property
    def active(self) -> bool:
        return self.io_bytes > 0 or self.iops > 0


def _latency_block(side: dict[str, Any]) -> tuple[dict[str, Any] | None, float]:
    """The completion-latency block and its scale to µs: ``clat_ns`` (3.x) or ``clat`` in µs (2.x);
    total latency (``lat_ns``/``lat``) when fio reported no completion latency."""
    for key, scale in (("clat_ns", 1e-3), ("clat", 1.0), ("clat_us", 1.0), ("lat_ns", 1e-3), ("lat", 1.0)):
        block = side.get(key)
        if isinstance(block, dict) and block:
            return block, scale
    return None, 1.0


def _io_bytes(side: dict[str, Any], version: tuple[int, ...]) -> float:
    if "io_kbytes" in side:  # fio 3.x: io_bytes is bytes and io_kbytes KiB
        return float(side.get("io_bytes", float(side["io_kbytes"]) * 1024))
    raw = float(side.get("io_bytes", 0))
    # fio 2.x wrote io_bytes in KiB
    return raw * 1024 if version and version[0] < 3 else raw


def _fio_version(doc: dict[str, Any]) -> tuple[int, ...]:
    match = re.search(r"(\d+)\.(\d+)", str(doc.get("fio version", "")))
    return (int(match.group(1)), int(match.group(2))) if match else ()


def _accumulate(stats: SideStats, side: dict[str, Any], version: tuple[int, ...]) -> None:
    io = _io_bytes(side, version)
    if io <= 0 and float(side.get("iops", 0) or 0) <= 0:
        return
    stats.io_bytes += io
    stats.bw_kibps += float(side.get("bw", 0) or 0)
    stats.iops += float(side.get("iops", 0) or 0)
    block, scale = _latency_block(side)
    ios = float(side.get("total_ios", 0) or 0) or (float(block.get("N", 0)) if block else 0.0) or 1.0
    stats.ios += ios
    if block is not None:
        if "mean" in block:
            stats.clat_means.append((float(block["mean"]) * scale, ios))
        pct = block.get("percentile")
        if isinstance(pct, dict) and pct:
            stats.percentiles.append(
                ({float(k): float(v) * scale for k, v in pct.items() if _is_number(k)}, ios)
            )
        bins = block.get("bins")
        if isinstance(bins, dict) and bins:
            for k, v in bins.items():
                if _is_number(k):
                    stats.bins_us[float(k) * scale] = stats.bins_us.get(float(k) * scale, 0.0) + float(v)
        else:
            stats.bins_complete = False
    for key, scale in (("lat_ns", 1e-3), ("lat", 1.0)):
        lat = side.get(key)
        if isinstance(lat, dict) and "mean" in lat:
            stats.lat_means.append((float(lat["mean"]) * scale, ios))
            break


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _weighted(pairs: list[tuple[float, float]]) -> float | None:
    total = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs) / total if total else None


def _histogram_percentile(bins: dict[float, float], pct: float) -> float:
    """The smallest latency at or below which ``pct`` % of I/Os completed (fio's own definition)."""
    total = sum(bins.values())
    target = math.ceil(total * pct / 100.0 - 1e-9)
    running = 0.0
    for latency in sorted(bins):
        running += bins[latency]
        if running >= target:
            return latency
    return max(bins)


def _side_percentiles(stats: SideStats) -> dict[str, float]:
    """p50…p99.9 in µs. One entry: fio's own figures. Several (jobs without group_reporting): exact from the
    merged json+ histograms when every entry has them, else the I/O-weighted mean of each entry's figure."""
    out: dict[str, float] = {}
    if len(stats.percentiles) == 1 or (stats.percentiles and not (stats.bins_complete and stats.bins_us)):
        for pct, suffix in PERCENTILES:
            pairs = [(table[pct], w) for table, w in stats.percentiles if pct in table]
            value = _weighted(pairs)
            if value is not None:
                out[suffix] = value
        return out
    if stats.bins_us:
        for pct, suffix in PERCENTILES:
            out[suffix] = _histogram_percentile(stats.bins_us, pct)
    return out


def _side_metrics(stats: SideStats, prefix: str) -> list[Metric]:
    metrics = [
        Metric(f"{prefix}bw_MiBps", stats.bw_kibps / 1024.0, "MiB/s", "higher", "fio"),
        Metric(f"{prefix}iops", stats.iops, "IO/s", "higher", "fio"),
        Metric(f"{prefix}io_MiB", stats.io_bytes / 1024.0**2, "MiB", "higher", "fio"),
    ]
    mean = _weighted(stats.clat_means)
    if mean is not None:
        metrics.append(Metric(f"{prefix}clat_mean_us", mean, "µs", "lower", "fio"))
    lat = _weighted(stats.lat_means)
    if lat is not None:
        metrics.append(Metric(f"{prefix}lat_mean_us", lat, "µs", "lower", "fio"))
    for suffix, value in _side_percentiles(stats).items():
        metrics.append(Metric(f"{prefix}clat_{suffix}_us", value, "µs", "lower", "fio"))
    return metrics


def _combined(active: dict[str, SideStats]) -> SideStats:
    total = SideStats()
    for stats in active.values():
        total.io_bytes += stats.io_bytes
        total.bw_kibps += stats.bw_kibps
        total.iops += stats.iops
        total.ios += stats.ios
        total.clat_means += stats.clat_means
        total.lat_means += stats.lat_means
        total.percentiles += stats.percentiles
        total.bins_complete = total.bins_complete and stats.bins_complete
        for k, v in stats.bins_us.items():
            total.bins_us[k] = total.bins_us.get(k, 0.0) + v
    if len(active) > 1:
        # a percentile over reads and writes together is not any mean of their two percentiles: it comes
        # from their merged json+ histograms, or there is none (read_… and write_… percentiles remain)
        total.percentiles = []
        if not total.bins_complete:
            total.bins_us = {}
    return total


def _group_metrics(jobs: list[dict[str, Any]], version: tuple[int, ...], prefix: str) -> list[Metric]:
    """The metrics of one group's job entries (``prefix`` names the group when there are several)."""
    sides = {name: SideStats() for name in SIDES}
    usr, sys_cpu, ctx_switches = [], [], 0.0
    for job in jobs:
        for name in SIDES:
            side = job.get(name)
            if isinstance(side, dict):
                _accumulate(sides[name], side, version)
        if "usr_cpu" in job:
            usr.append(float(job["usr_cpu"]))
            sys_cpu.append(float(job.get("sys_cpu", 0)))
        ctx_switches += float(job.get("ctx", 0) or 0)
    active = {name: s for name, s in sides.items() if s.active}
    if not active:
        return []
    metrics = _side_metrics(_combined(active), prefix)
    if len(active) > 1:
        for name, stats in active.items():
            metrics += _side_metrics(stats, f"{prefix}{name}_")
    if usr:
        # per client, as fio reports it (a group_reporting entry averages its jobs)
        metrics.append(Metric(f"{prefix}fio_usr_cpu_pct", sum(usr) / len(usr), "%", "lower", "fio"))
        metrics.append(Metric(f"{prefix}fio_sys_cpu_pct", sum(sys_cpu) / len(sys_cpu), "%", "lower", "fio"))
        metrics.append(Metric(f"{prefix}fio_ctx_switches", ctx_switches, "switches", "lower", "fio"))
    return metrics


def _groupid(job: dict[str, Any]) -> int:
    try:
        return int(job.get("groupid", 0))
    except (TypeError, ValueError):
        return 0


def parse_fio_json(text: str) -> list[Metric]:
    """fio's JSON or json+ output (fio 2.x–3.x) → bandwidth, IOPS, latency and CPU metrics.

    One group (every job of nearmetal's own runs): the unprefixed metrics (``bw_MiBps``, ``iops``,
    ``clat_p99_us``…) cover every direction that did I/O; when reads and writes both did, ``read_…`` and
    ``write_…`` metrics follow for each side, and the unprefixed percentiles come from the merged json+
    histograms of both sides, or are left out (json without ``bins``): two directions' percentiles are not
    averaged into one.

    Several groups (``stonewall``/``new_group`` job files: groups run one after another, each its own
    measurement): every metric of a group is named ``g<groupid>_…`` (``g1_bw_MiBps``,
    ``g2_read_clat_p99_us``), fio's own group numbers, and nothing is summed or averaged across groups."""
    doc = load_fio_json(text)
    version = _fio_version(doc)
    jobs = doc.get("jobs") or []
    if not jobs and doc.get("client_stats"):
        # client/server mode: the "All clients" entry sums the others when there are several
        clients = doc["client_stats"]
        jobs = [c for c in clients if c.get("jobname") == "All clients"] or clients
    if not jobs:
        raise ParseError("fio's JSON has no jobs (did every job fail to start?)")
    errors = [f"{j.get('jobname', '?')}: error {j['error']}" for j in jobs if j.get("error")]
    groups: dict[int, list[dict[str, Any]]] = {}
    for job in jobs:
        groups.setdefault(_groupid(job), []).append(job)
    if len(groups) == 1:
        metrics = _group_metrics(jobs, version, "")
    else:
        metrics = []
        for gid, group_jobs in sorted(groups.items()):
            metrics += _group_metrics(group_jobs, version, f"g{gid}_")
    if not metrics:
        detail = f" ({'; '.join(errors)})" if errors else ""
        raise ParseError(f"fio did no I/O in any direction{detail}")
    direct = _option(doc, jobs, "direct")
    if direct is not None:
        metrics.append(
            Metric("direct_io", 1.0 if direct not in ("0", "false") else 0.0, "flag", "higher", "fio")
        )
    if errors:
        raise ParseError(f"fio reported errors: {'; '.join(errors)}")
    return metrics


def _option(doc: dict[str, Any], jobs: list[dict[str, Any]], name: str) -> str | None:
    for job in jobs:
        value = (job.get("job options") or {}).get(name)
        if value is not None:
            return str(value).strip().lower()
    value = (doc.get("global options") or {}).get(name)
    return None if value is None else str(value).strip().lower()
