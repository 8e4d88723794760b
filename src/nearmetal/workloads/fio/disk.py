"""What the disk behind fio's files moved during the trial (``telemetry.diskio``), as a share of the bytes fio
moved: ≈100 % is direct I/O, ≈0 % the page cache (a layer whose daemon drops O_DIRECT shows here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nearmetal.metrics import Metric
from nearmetal.telemetry import diskio
from nearmetal.workloads.fio.job import READ_PATTERNS


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
