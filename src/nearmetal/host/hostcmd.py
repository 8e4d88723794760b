"""The one way nearmetal runs a host program for itself (a mount helper, ``ip``, ``sbatch``, a runtime, a
version probe): an argv list, never a shell string; always a timeout; a missing program or a hang becomes
an error that names the program and the fix. (A trial's own processes are started by the backend.)"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from nearmetal.errors import NearmetalError


def run(
    argv: Sequence[str],
    timeout: float,
    *,
    check: bool = False,
    what: str = "",
    error: type[NearmetalError] = NearmetalError,
    install_fix: str | None = None,
    timeout_fix: str | None = None,
    cwd: str | Path | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` and capture its output as text. ``check``: a non-zero exit raises ``error`` with the
    last line the program wrote; ``what`` says what the command was for (in every message)."""
    argv = [str(a) for a in argv]
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
            check=False,
        )
    except FileNotFoundError:
        raise error(f"{doing}{argv[0]} is not installed", fix=install_fix) from None
    except subprocess.TimeoutExpired:
        raise error(
            f"{doing}{' '.join(argv[:3])} did not finish within {timeout:g}s", fix=timeout_fix
        ) from None
    if check and proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        said = lines[-1] if lines else f"exit status {proc.returncode}"
        raise error(f"{doing}{' '.join(argv[:3])}{'…' if len(argv) > 3 else ''} failed: {said}")
    return proc


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
