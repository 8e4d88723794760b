"""The one parser of ``/proc/PID/stat`` (proc(5)): the contention sampler (``telemetry.contention``), the pod
trial's node evidence (``backends.podnoise``), process-group and zombie checks read it here.

The command name (field 2) is in parentheses and may itself hold spaces and ``)``: the fields after it are
found after the *last* ``)``. A leaf module (standard library only); cheap, since the samplers read a few
hundred of these files every second.
"""

from __future__ import annotations

from typing import NamedTuple

PF_KTHREAD = 0x00200000  # flags (field 9): a kernel thread
KTHREADD_PID = 2


class ProcStat(NamedTuple):
    """The fields of ``/proc/PID/stat`` nearmetal reads (times in clock ticks, ``os.sysconf("SC_CLK_TCK")``)."""

    comm: str
    state: str  # R, S, D, Z (zombie), X (dead) …
    ppid: int
    pgrp: int
    flags: int
    utime: int
    stime: int
    cutime: int  # of the children it reaped
    cstime: int
    starttime: int  # ticks after boot

    @property
    def own_ticks(self) -> int:
        """CPU time of the process itself (utime + stime)."""
        return self.utime + self.stime

    @property
    def ticks(self) -> int:
        """utime + stime + cutime + cstime: a long-lived parent carries the short-lived children it reaped."""
        return self.utime + self.stime + self.cutime + self.cstime

    @property
    def kernel_thread(self) -> bool:
        """A kernel thread: PF_KTHREAD set, or a child of kthreadd (the pid 2 itself is the caller's to tell)."""
        return bool(self.flags & PF_KTHREAD) or self.ppid == KTHREADD_PID

    @property
    def gone(self) -> bool:
        """A zombie or a dead process."""
        return self.state in ("Z", "X")


def parse_stat(raw: bytes) -> ProcStat | None:
    """The fields of one ``/proc/PID/stat`` text; None when it is cut short or malformed."""
    close = raw.rfind(b")")
    if close < 0:
        return None
    comm = raw[raw.find(b"(") + 1 : close].decode(errors="replace")
    # fields[0] is field 3 of proc(5) (state): ppid 4, pgrp 5, flags 9, utime 14 … cstime 17, starttime 22
    fields = raw[close + 2 :].split()
    try:
        return ProcStat(
            comm,
            fields[0].decode(errors="replace"),
            int(fields[1]),
            int(fields[2]),
            int(fields[6]),
            int(fields[11]),
            int(fields[12]),
            int(fields[13]),
            int(fields[14]),
            int(fields[19]),
        )
    except (IndexError, ValueError):
        return None


def read_stat(pid: int | str, proc: str = "/proc") -> ProcStat | None:
    """``/proc/PID/stat`` parsed; None when the process is gone (or the text is malformed)."""
    try:
        with open(f"{proc}/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return parse_stat(raw)


__all__ = ["PF_KTHREAD", "ProcStat", "parse_stat", "read_stat"]
