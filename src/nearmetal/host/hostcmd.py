"""The one way nearmetal runs a host program (a mount helper, ``ip``, ``sbatch``, a runtime, a version
probe, a FUSE daemon, a trial's own processes): an argv list, never a shell string; a command that is waited
for always has a timeout; a missing program or a hang becomes an error that names the program and the fix.

- :func:`run`: run to completion with a timeout, output captured as text (``check``: a failure is an error);
- :func:`output`: what a short probe printed, whatever its exit status (None: missing, unstartable, hung);
- :func:`probe`: the output of a probe that succeeded (None otherwise);
- :func:`start` and :func:`stop`: a long-lived process (a daemon, a server, a trial's process group) started
  from an argv list, and stopped with a bounded wait (SIGKILL after it).

No other module imports :mod:`subprocess` (``tests/unit/test_house_hostcmd.py``): annotations use
:data:`Process` and :data:`Completed`, a bounded wait :func:`wait` or :data:`TimeoutExpired`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from nearmetal.errors import NearmetalError

Process = subprocess.Popen
Completed = subprocess.CompletedProcess
TimeoutExpired = subprocess.TimeoutExpired
DEVNULL = subprocess.DEVNULL
PIPE = subprocess.PIPE
STDOUT = subprocess.STDOUT

# a target for stdin/stdout/stderr as Popen takes it: a constant above, a descriptor, a file or None (inherit)
Stream = int | IO[Any] | None


def _argv(argv: Sequence[str | os.PathLike[str]]) -> list[str]:
    """``argv`` as a list of strings; a single string (a shell command line, or a sequence of characters to
    Popen) is refused."""
    if isinstance(argv, str | bytes):
        raise TypeError(f"a host command is an argv list, not a string: {argv!r}")
    out = [os.fspath(a) if isinstance(a, os.PathLike) else str(a) for a in argv]
    if not out:
        raise ValueError("an empty argv")
    return out


def run(
    argv: Sequence[str | os.PathLike[str]],
    timeout: float,
    *,
    check: bool = False,
    what: str = "",
    error: type[NearmetalError] = NearmetalError,
    install_fix: str | None = None,
    timeout_fix: str | None = None,
    cwd: str | Path | None = None,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` and capture its output as text. ``check``: a non-zero exit raises ``error`` with the
    last line the program wrote; ``what`` says what the command was for (in every message). A program
    that is missing raises ``error`` ("… is not installed"), one that cannot be started (no permission)
    ``error`` naming why, one that runs past ``timeout`` is killed and raises ``error``. ``env``: its
    whole environment (default: this process's)."""
    argv = _argv(argv)
    doing = f"{what}: " if what else ""
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            env=env,
            check=False,
        )
    except FileNotFoundError:
        raise error(f"{doing}{argv[0]} is not installed", fix=install_fix) from None
    except OSError as exc:  # not executable, or the working directory is gone
        raise error(f"{doing}{argv[0]} could not be started: {exc.strerror or exc}") from None
    except subprocess.TimeoutExpired:
        raise error(
            f"{doing}{' '.join(argv[:3])} did not finish within {timeout:g}s", fix=timeout_fix
        ) from None
    if check and proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        said = lines[-1] if lines else f"exit status {proc.returncode}"
        raise error(f"{doing}{' '.join(argv[:3])}{'…' if len(argv) > 3 else ''} failed: {said}")
    return proc


def output(
    argv: Sequence[str | os.PathLike[str]],
    timeout: float = 20,
    *,
    stderr: bool = False,
    cwd: str | Path | None = None,
) -> str | None:
    """What a short probe (``TOOL --version``, ``ldconfig -p``, ``ip -j …``) wrote to stdout (followed by
    stderr when ``stderr``), whatever its exit status; None when the program is missing, cannot be started
    or does not finish within ``timeout``."""
    try:
        proc = run(argv, timeout, cwd=cwd)
    except NearmetalError:
        return None
    return proc.stdout + proc.stderr if stderr else proc.stdout


def version(argv: Sequence[str | os.PathLike[str]], pattern: str, timeout: float = 20) -> str | None:
    """A tool's version from what ``argv`` (``TOOL --version``) wrote to stdout, whatever its exit status:
    group 1 of ``pattern``'s first match, stripped; None when the tool is missing, hangs or says no such
    thing."""
    text = output(argv, timeout)
    match = re.search(pattern, text) if text else None
    return match.group(1).strip() if match else None


def probe(argv: Sequence[str], timeout: float = 10, cwd: str | Path | None = None) -> str | None:
    """stdout (or stderr) of a short probe, or None when the program is missing, fails or hangs."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        proc = run(argv, timeout, cwd=cwd)
    except NearmetalError:
        return None
    if proc.returncode != 0:
        return None
    return (proc.stdout or proc.stderr).strip()


def start(
    argv: Sequence[str | os.PathLike[str]],
    *,
    stdin: Stream = DEVNULL,
    stdout: Stream = None,
    stderr: Stream = None,
    cwd: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    new_session: bool = False,
    process_group: int | None = None,
    context: str = "",
    error: type[NearmetalError] | None = NearmetalError,
    install_fix: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start a long-lived host program (a FUSE daemon, a network stack, a server, a trial's process) from
    an argv list, never a shell; its stdin is /dev/null unless given, every other descriptor closed. The
    caller bounds how long it waits for it (:func:`stop`, ``proc.wait(timeout=…)``). ``new_session``: its
    own session (a signal to its group reaches what it starts); ``process_group=0``: its own process group.
    A missing program raises ``error`` ("PROGRAM is not installed (CONTEXT)"); with ``error=None`` the
    ``FileNotFoundError`` itself (a caller that reports a missing program its own way)."""
    argv = _argv(argv)
    try:
        return subprocess.Popen(
            argv,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            cwd=cwd,
            env=env,
            start_new_session=new_session,
            process_group=process_group,
            close_fds=True,
        )
    except FileNotFoundError:
        if error is None:
            raise
        raise error(
            f"{argv[0]} is not installed" + (f" ({context})" if context else ""), fix=install_fix
        ) from None


def wait(proc: subprocess.Popen[Any], timeout: float) -> int | None:
    """``proc``'s exit status, waiting at most ``timeout`` seconds; None if it is still running."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def stop(proc: subprocess.Popen[Any], wait_s: float = 5.0, *, terminate: bool = False) -> int | None:
    """Stop a process :func:`start` began: SIGTERM first when ``terminate`` (otherwise it is expected to
    end by itself: a FUSE daemon once its mount is gone), SIGKILL when it is still there after ``wait_s``,
    then reaped (at most ``wait_s`` more). Its exit status; None if it could not be reaped."""
    if terminate and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
    if wait(proc, wait_s) is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        return wait(proc, wait_s)
    return proc.returncode
