"""Where fio's files go and what state they start in: the size checks (files vs free space, buffers vs
memory), laying out the files a reading job reads, and evicting them from the page cache so every trial
starts cold through any layer."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from nearmetal.errors import NearmetalError
from nearmetal.units import mem_available_bytes
from nearmetal.workloads.fio.job import FILE_PREFIX, FILE_SUFFIX, READ_PATTERNS, FioParams

# bytes written per call when laying out a file
LAYOUT_CHUNK = 1024 * 1024


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


def drop_caches() -> str:
    """Write back dirty pages and drop the page cache, dentries and inodes; says what happened."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return "dropped"
    except OSError as exc:
        return f"not permitted ({exc.strerror or exc})"
