"""The log protocol between a trial's container and nearmetal: the constant entry point the container runs
and the markers it writes, so that one log stream carries the program's output, the files it wrote and the
pod's own cgroup evidence (``podevidence``); ``split_log`` reads it back."""

from __future__ import annotations

import base64
import contextlib
from pathlib import Path

from nearmetal.backends.podevidence import END_MARK, EVIDENCE_SHELL, split_evidence

FILE_MARK = "=== nearmetal-file"
# the entry point's last line: a log without it was read before the runtime had written all of it
DONE_MARK = "=== nearmetal-done"

# The container's entry point: copy inputs, print the cgroup's CPU files (podevidence), run the program (argv
# as positional arguments, never interpolated; its stderr into stdout, so the log keeps one order whatever
# the runtime's two stream writers do), print them again, then print every file the program wrote as
# base64 between markers, and a closing mark with the exit status. A constant script.
ENTRYPOINT = (
    EVIDENCE_SHELL + 'cp -r "$NEARMETAL_INPUTS"/. . 2>/dev/null; ls -A > .nearmetal-inputs; '
    'nm_evidence before; "$@" 2>&1; rc=$?; nm_evidence after; '
    "for f in *; do "
    'grep -qxF "$f" .nearmetal-inputs && continue; [ -f "$f" ] || continue; '
    f'echo "{FILE_MARK} $f"; base64 "$f"; echo "{END_MARK}"; '
    f'done; echo "{DONE_MARK} $rc"; exit $rc'
)
# the container's command: the entry point, with the program's argv as its positional arguments
COMMAND = ["/bin/sh", "-c", ENTRYPOINT, "nearmetal-trial"]


def split_log(log: str) -> tuple[str, dict[str, bytes]]:
    """The container's log → (the program's own output, {file name: content}) by the entry point's markers
    (the cgroup evidence sections are left out: ``podevidence.split_evidence`` reads them)."""
    log, _ = split_evidence(log, END_MARK)
    lines = log.splitlines(keepends=True)
    out: list[str] = []
    files: dict[str, bytes] = {}
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith(FILE_MARK + " "):
            name = line[len(FILE_MARK) + 1 :].strip()
            chunk: list[str] = []
            i += 1
            while i < len(lines) and not lines[i].startswith(END_MARK):
                chunk.append(lines[i].strip())
                i += 1
            with contextlib.suppress(ValueError):
                files[Path(name).name] = base64.b64decode("".join(chunk))
        elif not line.startswith(DONE_MARK + " "):
            out.append(line)
        i += 1
    return "".join(out), files


__all__ = ["COMMAND", "DONE_MARK", "END_MARK", "ENTRYPOINT", "FILE_MARK", "split_log"]
