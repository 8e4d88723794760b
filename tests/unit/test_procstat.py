"""The one /proc/PID/stat parser (nearmetal.host.procstat): a command name with spaces and parentheses, a
text cut short, a kernel thread, and this very process."""

from __future__ import annotations

import os

from nearmetal.host.procstat import PF_KTHREAD, parse_stat, read_stat


def _line(comm: str, state: str = "S", ppid: int = 1, pgrp: int = 7, flags: int = 0x400000) -> bytes:
    # proc(5): pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
    # cutime cstime priority nice threads itrealvalue starttime …
    rest = f"{state} {ppid} {pgrp} 7 0 -1 {flags} 10 0 0 0 11 12 13 14 20 0 1 0 987654 1000 50"
    return f"4242 ({comm}) {rest}\n".encode()


def test_fields_are_read_after_the_last_parenthesis() -> None:
    stat = parse_stat(_line("evil) R 1 2 (x"))
    assert stat is not None
    assert stat.comm == "evil) R 1 2 (x"
    assert (stat.state, stat.ppid, stat.pgrp) == ("S", 1, 7)
    assert (stat.utime, stat.stime, stat.cutime, stat.cstime, stat.starttime) == (11, 12, 13, 14, 987654)
    assert stat.own_ticks == 23 and stat.ticks == 50
    assert not stat.kernel_thread and not stat.gone


def test_kernel_threads_and_zombies() -> None:
    kthread = parse_stat(_line("kworker/0:1", flags=PF_KTHREAD))
    assert kthread is not None and kthread.kernel_thread
    child_of_kthreadd = parse_stat(_line("ksoftirqd/0", ppid=2))
    assert child_of_kthreadd is not None and child_of_kthreadd.kernel_thread
    for state in ("Z", "X"):
        stat = parse_stat(_line("defunct", state=state))
        assert stat is not None and stat.gone


def test_a_text_cut_short_or_malformed_is_none() -> None:
    whole = _line("sleep")
    assert parse_stat(whole[: whole.index(b" 11 12")]) is None
    assert parse_stat(b"4242 sleep S 1") is None
    assert parse_stat(whole.replace(b" 11 12", b" x 12")) is None


def test_this_process() -> None:
    stat = read_stat(os.getpid())
    assert stat is not None
    assert stat.ppid == os.getppid() and stat.pgrp == os.getpgrp() and stat.state == "R"
    again = read_stat(str(os.getpid()))  # a pid as /proc lists it
    assert again is not None and again.starttime == stat.starttime and again.ticks >= stat.ticks
    assert read_stat(2**22 + 12345) is None  # above pid_max: no such process
