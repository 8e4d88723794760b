"""The fio job: the workload's parameters and the command-line options they become (the seed's job file,
seed 002: ``fallocate=none``, ``time_based``, libaio with ``iodepth``, ``direct=1``, one file per client)."""

from __future__ import annotations

from functools import cache
from typing import Any, Literal

from pydantic import Field, field_validator

from nearmetal.host import hostcmd
from nearmetal.units import parse_size
from nearmetal.workloads.base import WorkloadParams
from nearmetal.workloads.fio.options import BAD_VALUE_CHARS, option_problem

# a client's data file: job<N>.dat (fio's filename_format; the layout, eviction and clean-up find it so)
FILE_PREFIX = "job"
FILE_SUFFIX = ".dat"
# patterns that read: their files are laid out (and evicted) before fio starts
READ_PATTERNS = frozenset({"read", "randread", "randrw", "readwrite", "rw"})


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
        if value is not None and any(c in value for c in BAD_VALUE_CHARS):
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
