"""Run a trial's processes on this machine.

Each process is started from an argv list in its own process group with stdout/stderr going to files in
the trial's directory. The measured (``main``) process is waited for with ``wait4`` so its resource usage
(and that of every descendant it reaped) comes from the kernel at no cost; a timer kills its process group
at the deadline. Background processes (servers, co-located neighbours) start first, are checked for
readiness, and are stopped after the main process ends. Every started process group is killed on every
exit path, including KeyboardInterrupt.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import threading
import time
from pathlib import Path
from typing import IO

import psutil

from nearmetal.backends.base import Execution, HostBackend, ProcessResult, register_backend
from nearmetal.host import hostcmd
from nearmetal.host.interrupts import deferred
from nearmetal.host.safefs import nofollow_opener
from nearmetal.telemetry import TreeSampler, rusage_metrics
from nearmetal.telemetry.contention import DEFAULT_INTERVAL_S, HostSampler
from nearmetal.telemetry.process import _MAXRSS_TO_MIB
from nearmetal.telemetry.schedwait import DEFAULT_INTERVAL_S as WAIT_INTERVAL_S
from nearmetal.telemetry.schedwait import WaitSampler
from nearmetal.workloads.base import ProcessSpec

# Joins a process to cgroups before it execs its program. The script is a constant; the cgroup files and
# the program's argv are passed as positional arguments, never interpolated into the script.
_ENTER_CGROUPS = (
    'for f in "$@"; do shift; [ "$f" = -- ] && break; echo $$ > "$f" || exit 125; done; exec "$@"'
)
SH = "/bin/sh"
KILL_GRACE_S = 2.0


def wrap_for_cgroups(argv: list[str], procs_files: list[Path]) -> list[str]:
    if not procs_files:
        return argv
    return [SH, "-c", _ENTER_CGROUPS, "nearmetal-enter-cgroup", *map(str, procs_files), "--", *argv]


def kill_group(pid: int, grace_s: float = KILL_GRACE_S) -> None:
    """SIGTERM the process group, then SIGKILL what is left after the grace period."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.01)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def kill_tree(pid: int, grace_s: float = KILL_GRACE_S) -> None:
    """``kill_group``, and then every process that descended from ``pid`` when it was called, wherever it
    went: a child that called ``setsid`` (its own group and session) and dropped ``NEARMETAL_RUN_ID`` from
    its environment escapes both the group kill and the runner's sweep, not its ancestry. psutil checks
    each process is still the one found (no pid reuse) before it signals it."""
    try:
        descendants = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        descendants = []
    kill_group(pid, grace_s)
    for child in descendants:
        with contextlib.suppress(psutil.Error):
            child.kill()


@register_backend
class LocalBackend(HostBackend):
    """This machine: a trial's processes run here, one trial at a time."""

    summary = "this machine"

    name = "local"

    def __init__(
        self,
        sample_interval_s: float | None = 1.0,
        host_interval_s: float | None = DEFAULT_INTERVAL_S,
        wait_interval_s: float | None = WAIT_INTERVAL_S,
    ) -> None:
        self.sample_interval_s = sample_interval_s
        # what else used the CPU during the trial (telemetry.contention); None turns it off
        self.host_interval_s = host_interval_s
        # how long the trial's threads waited for a CPU (telemetry.schedwait); None turns it off
        self.wait_interval_s = wait_interval_s

    def _spawn(
        self,
        spec: ProcessSpec,
        trial_dir: Path,
        files: list[IO[bytes]],
        track: list[tuple[hostcmd.Process, ProcessResult]] | None = None,
    ) -> tuple[hostcmd.Process, ProcessResult]:
        """Start a process; ``track`` gets it the moment it exists, so an interrupt right after cannot
        leave it out of the caller's clean-up."""
        label = spec.label()
        result = ProcessResult(
            role=spec.role,
            label=label,
            argv=spec.command(),
            stdout_path=trial_dir / f"{label}.stdout",
            stderr_path=trial_dir / f"{label}.stderr",
        )
        # never through a link left in the trial directory (issue 26)
        out = open(result.stdout_path, "wb", opener=nofollow_opener)  # noqa: SIM115 - closed by the caller
        err = open(result.stderr_path, "wb", opener=nofollow_opener)  # noqa: SIM115
        files += [out, err]
        env = {**os.environ, **spec.env}
        argv = wrap_for_cgroups(spec.command(), spec.cgroup_procs)
        result.started_at = time.time()
        try:
            proc = hostcmd.start(
                argv,
                stdout=out,
                stderr=err,
                env=env,
                cwd=spec.cwd or trial_dir,
                process_group=0,
                error=None,
            )
        except FileNotFoundError:
            raise FileNotFoundError(f"program not found: {spec.argv[0]}") from None
        if track is not None:
            track.append((proc, result))
        return proc, result

    def _wait_ready(self, proc: hostcmd.Process, spec: ProcessSpec, result: ProcessResult) -> str | None:
        deadline = time.monotonic() + spec.ready_timeout_s
        if spec.ready_pattern:
            pattern = re.compile(spec.ready_pattern)
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    return (
                        f"{result.label} exited ({proc.returncode}) before it was ready: "
                        + result.stderr_tail(500).strip()
                    )
                if pattern.search(result.read_stdout()) or pattern.search(result.read_stderr()):
                    break
                time.sleep(0.01)
            else:
                return f"{result.label} did not print {spec.ready_pattern!r} within {spec.ready_timeout_s:g}s"
        if spec.ready_delay_s:
            time.sleep(spec.ready_delay_s)
        if proc.poll() is not None:
            return (
                f"{result.label} exited ({proc.returncode}) before the trial started: "
                + result.stderr_tail(500).strip()
            )
        result.ready_at = time.time()
        return None

    def execute(self, processes: list[ProcessSpec], trial_dir: Path, timeout_s: float) -> Execution:
        mains = [p for p in processes if p.role == "main"]
        if len(mains) != 1:
            raise ValueError(f"a trial needs exactly one main process, got {len(mains)}")
        main_spec = mains[0]
        background = [p for p in processes if p.role != "main"]
        files: list[IO[bytes]] = []
        started: list[tuple[hostcmd.Process, ProcessResult]] = []
        execution: Execution | None = None
        try:
            for spec in background:
                # tracked the moment it exists, and an interrupt while it starts is held until then
                with deferred():
                    proc, result = self._spawn(spec, trial_dir, files, track=started)
                problem = self._wait_ready(proc, spec, result)
                if problem:
                    main_result = ProcessResult(
                        "main",
                        main_spec.label(),
                        list(main_spec.argv),
                        trial_dir / "main.stdout",
                        trial_dir / "main.stderr",
                    )
                    return Execution(
                        main=main_result,
                        others=[r for _, r in started],
                        error=problem,
                        placement=self._placement(),
                    )
            execution = self._run_main(main_spec, trial_dir, timeout_s, files, started)
            return execution
        finally:
            for proc, result in reversed(started):
                if proc.poll() is None:
                    kill_group(proc.pid)
                with contextlib.suppress(hostcmd.TimeoutExpired):
                    proc.wait(timeout=5)
                result.returncode = proc.returncode
                result.ended_at = result.ended_at or time.time()
            for f in files:
                f.close()

    def _run_main(
        self,
        spec: ProcessSpec,
        trial_dir: Path,
        timeout_s: float,
        files: list[IO[bytes]],
        started: list[tuple[hostcmd.Process, ProcessResult]],
    ) -> Execution:
        others = [r for _, r in started]
        timed_out = threading.Event()
        proc: hostcmd.Process[bytes] | None = None
        timer: threading.Timer | None = None
        sampler: TreeSampler | None = None
        host: HostSampler | None = None
        host_evidence = None
        waiter: WaitSampler | None = None
        wait_evidence = None
        reaped = False
        # from here on an interrupt (SIGTERM to the runner right after the workload started, as a busy
        # host makes likely) must reach the finally below, or the process would outlive the run
        try:
            # an interrupt before the wait below starts is held until the process is known to the
            # `finally` that kills it (see nearmetal.host.interrupts)
            with deferred():
                if self.host_interval_s and os.path.exists("/proc/stat"):
                    # evidence, never a reason for a trial to fail (a /proc mounted hidepid, say)
                    with contextlib.suppress(OSError, ValueError):
                        host = HostSampler(self.host_interval_s).start_in_thread()
                t0 = time.perf_counter()
                proc, result = self._spawn(spec, trial_dir, files)

                def on_deadline(pid: int = proc.pid) -> None:
                    timed_out.set()
                    kill_tree(pid)

                timer = threading.Timer(timeout_s, on_deadline)
                timer.daemon = True
                timer.start()
                if self.sample_interval_s:
                    sampler = TreeSampler(proc.pid, self.sample_interval_s)
                    sampler.__enter__()
                if self.wait_interval_s and os.path.exists(f"/proc/{proc.pid}/schedstat"):
                    waiter = WaitSampler(proc.pid, self.wait_interval_s).start()
            if waiter is not None:
                # exited but not reaped: the tree's last counters are still there to read
                with contextlib.suppress(ChildProcessError):
                    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
                wall_s = time.perf_counter() - t0
                with contextlib.suppress(OSError, ValueError):
                    waiter.sample()
            _, status, usage = os.wait4(proc.pid, 0)
            reaped = True
            if waiter is None:
                wall_s = time.perf_counter() - t0
        finally:
            if timer is not None:
                timer.cancel()
            if waiter is not None:
                wait_evidence = waiter.stop()
            if sampler is not None:
                sampler.__exit__(None, None, None)
            if host is not None:
                host_evidence = host.stop_in_thread()
            if proc is not None and not reaped:
                # interrupted (Ctrl-C, SIGTERM to the runner): take the whole tree down before leaving
                kill_tree(proc.pid, grace_s=1.0)
                with contextlib.suppress(ChildProcessError):
                    os.wait4(proc.pid, 0)
                proc.returncode = -signal.SIGKILL
        result.ended_at = time.time()
        # the process is reaped: tell Popen so it never waits for it again
        proc.returncode = os.waitstatus_to_exitcode(status)
        result.returncode = proc.returncode
        result.timed_out = timed_out.is_set()
        # the main process may leave children behind in its group (daemonised helpers): end them too
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, 0)
            kill_group(proc.pid, grace_s=0.5)
        metrics = rusage_metrics(usage, wall_s)
        if sampler:
            # the summed tree is at least its largest process's own high-water mark (rusage, exact), which a
            # sample between two peaks can miss
            largest = int(usage.ru_maxrss * _MAXRSS_TO_MIB * (1 << 20))
            sampler.peak_rss_bytes = max(sampler.peak_rss_bytes, largest if sampler.samples else 0)
            metrics += sampler.metrics()
        error = None
        running_at_end: dict[str, bool] = {}
        for bproc, bresult in started:
            running_at_end[bresult.label] = bproc.poll() is None
            if bproc.poll() is not None:
                bresult.ended_at = time.time()
                if bresult.role == "neighbour":
                    error = f"{bresult.label} ended ({bproc.returncode}) before the measured process finished"
        placement = self._placement()
        if host_evidence is not None:
            metrics += host_evidence.metrics()
            placement["outside"] = host_evidence.to_dict()
        if wait_evidence is not None and wait_evidence.samples:
            wait_evidence.tree_cpu_s = usage.ru_utime + usage.ru_stime
            # beside the outside-CPU evidence: what the trial waited is the verdict, who ran the explanation
            metrics += wait_evidence.metrics()
            placement.setdefault("outside", {}).update(wait_evidence.to_dict())
        if started:
            # the evidence that every background process (a co-located neighbour) was running from
            # before the measured process started until after it ended
            placement["overlap"] = {
                "main_started_at": result.started_at,
                "main_ended_at": result.ended_at,
                "background": [
                    {
                        "label": r.label,
                        "role": r.role,
                        "started_at": r.started_at,
                        "ready_at": r.ready_at,
                        "running_when_main_ended": running_at_end[r.label],
                    }
                    for _, r in started
                ],
                "all_overlapped": all(running_at_end.values())
                and all(
                    r.ready_at is not None and r.ready_at <= (result.started_at or 0) for _, r in started
                ),
            }
        return Execution(
            main=result,
            others=others,
            wall_s=wall_s,
            metrics=metrics,
            placement=placement,
            error=error,
        )

    @staticmethod
    def _placement() -> dict:
        return {"backend": "local", "host": socket.gethostname(), "cpus": os.cpu_count()}
