"""Ctrl-C, SIGTERM and SIGHUP as exceptions, and the few moments where one must wait.

During a run the three signals raise ``KeyboardInterrupt`` in the main thread, so every layer's teardown and
the backend's process-group kills run as the exception unwinds. Between starting a process and recording
it for those kills there is a moment where an exception would leave the process behind (found by the
exit-path tests: a neighbour started by the colocate layer outlived a SIGTERM). Code that starts processes
does it inside ``deferred()``: a signal arriving there is held and raised when the block ends, by which time
the process is on the list of what to kill.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

_defer_depth = 0
_pending: int | None = None
_installed = False
_caught: dict[str, str] = {}


def _raise(signum: int) -> None:
    _caught["signal"] = signal.Signals(signum).name
    raise KeyboardInterrupt


def _handler(signum: int, _frame: Any) -> None:
    global _pending
    if _defer_depth:
        if _pending is None:
            _pending = signum
        return
    _raise(signum)


@contextlib.contextmanager
def interrupts_as_exceptions() -> Iterator[dict[str, str]]:
    """Within the block, SIGINT/SIGTERM/SIGHUP raise KeyboardInterrupt (deferred inside ``deferred()``);
    the yielded dict gets ``signal`` (the signal's name) when one arrived."""
    global _installed, _pending
    _caught.clear()
    previous: dict[signal.Signals, Any] = {}
    try:
        for sig in SIGNALS:
            previous[sig] = signal.signal(sig, _handler)
    except ValueError:  # not the main thread: leave signals alone
        for sig, old in previous.items():
            signal.signal(sig, old)
        previous.clear()
    outer = _installed
    _installed = _installed or bool(previous)
    try:
        yield _caught
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        _installed = outer
        _pending = None


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP until the block ends (start a process and record it, in one step).

    Without ``interrupts_as_exceptions`` active (a library caller's own handlers) this changes nothing."""
    global _defer_depth, _pending
    _defer_depth += 1
    try:
        yield
    finally:
        _defer_depth -= 1
        if _defer_depth == 0 and _pending is not None:
            signum, _pending = _pending, None
            _raise(signum)
