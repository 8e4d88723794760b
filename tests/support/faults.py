"""Test-only fault injection: make the k-th host-changing call inside a layer's ``setup`` fail.

A layer's setup is a sequence of host changes (a mkdir in the cgroup tree, an ``ip`` command, a mount, a
daemon started); a failure can come between any two of them. Counting those calls during a normal setup
and then failing each one in turn checks that ``teardown`` undoes every partial setup. Only the outermost
call counts (``subprocess.run`` starting a ``Popen`` is one call).
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import os
import pathlib
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from typing import Any

# (module or class, attribute) of every call that changes the host or starts a program
PRIMITIVES: list[tuple[Any, str]] = [
    (subprocess, "run"),
    (subprocess, "check_call"),
    (subprocess, "check_output"),
    (subprocess, "call"),
    (subprocess.Popen, "__init__"),
    (os, "mkdir"),
    (os, "makedirs"),
    (os, "symlink"),
    (os, "open"),
    (pathlib.Path, "mkdir"),
    (pathlib.Path, "write_text"),
    (pathlib.Path, "write_bytes"),
    (pathlib.Path, "symlink_to"),
    (shutil, "copytree"),
    (shutil, "copy2"),
]


def _optional_primitives() -> list[tuple[Any, str]]:
    """Netlink calls, when a layer uses pyroute2 rather than the ``ip`` command."""
    out: list[tuple[Any, str]] = []
    with contextlib.suppress(ImportError):
        pyroute2 = importlib.import_module("pyroute2")
        for name in ("link", "addr", "route"):
            if hasattr(pyroute2.IPRoute, name):
                out.append((pyroute2.IPRoute, name))
        netns = importlib.import_module("pyroute2.netns")
        if hasattr(netns, "create"):
            out.append((netns, "create"))
    return out


class InjectedFault(OSError):
    def __init__(self, call: str, index: int) -> None:
        super().__init__(errno.EIO, f"fault injected into call {index} of the layer's setup ({call})")


class CallCounter:
    """Counts outermost primitive calls while active; raises at call ``fail_at`` (1-based) when set, or once
    the whole setup has run when ``fail_after`` (the layer's last step failing after all its changes)."""

    def __init__(self, fail_at: int | None = None, fail_after: bool = False) -> None:
        self.fail_at = fail_at
        self.fail_after = fail_after
        self.calls: list[str] = []
        self.active = False
        self._local = threading.local()

    def wrap(self, owner: Any, name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        label = f"{getattr(owner, '__name__', owner)}.{name}"

        def counted(*args: Any, **kwargs: Any) -> Any:
            nested = getattr(self._local, "depth", 0)
            if not self.active or nested:
                return original(*args, **kwargs)
            self.calls.append(label)
            if self.fail_at is not None and len(self.calls) == self.fail_at:
                raise InjectedFault(label, self.fail_at)
            self._local.depth = nested + 1
            try:
                return original(*args, **kwargs)
            finally:
                self._local.depth = nested

        return counted


@contextlib.contextmanager
def faulty_setup(layer_cls: type, counter: CallCounter) -> Iterator[CallCounter]:
    """Patch the primitives and the layer's ``setup`` so the counter is active only inside that setup."""
    patched: list[tuple[Any, str, Any]] = []
    for owner, name in [*PRIMITIVES, *_optional_primitives()]:
        original = getattr(owner, name)
        patched.append((owner, name, original))
        setattr(owner, name, counter.wrap(owner, name, original))
    original_setup = layer_cls.setup

    def setup(self: Any, ctx: Any) -> None:
        counter.active = True
        try:
            original_setup(self, ctx)
        finally:
            counter.active = False
        if counter.fail_after:
            raise InjectedFault("after the whole setup", len(counter.calls) + 1)

    own = "setup" in vars(layer_cls)
    layer_cls.setup = setup
    try:
        yield counter
    finally:
        if own:
            layer_cls.setup = original_setup
        else:
            del layer_cls.setup
        for owner, name, original in reversed(patched):
            setattr(owner, name, original)
