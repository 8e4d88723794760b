"""The ``nearmetal`` command: a thin typer layer over the library.

The commands live in ``nearmetal.commands``, one module per subject, each registering its commands on the
one ``app`` (``commands.common``) when imported; this module imports them all and runs the app.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import nearmetal.commands
from nearmetal.commands.common import app, err_console
from nearmetal.errors import NearmetalError
from nearmetal.textsafe import plain

# help lists commands in the order they register: the main job (run, study) first, then the others by subject
importlib.import_module("nearmetal.commands.run")
for _module in pkgutil.iter_modules(nearmetal.commands.__path__, prefix="nearmetal.commands."):
    importlib.import_module(_module.name)


def main() -> None:
    try:
        app(prog_name="nearmetal")  # the same name (usage, completion) however it was started
    except NearmetalError as exc:  # anything a command did not catch itself
        err_console.print(f"[bold red]error:[/bold red] {plain(exc)}", highlight=False)
        sys.exit(exc.exit_code)
    except SystemExit as exc:
        # click turns a closed stdout (EPIPE) into exit 1 after wrapping stdout to swallow the final flush;
        # for `nearmetal report | head` that is the reader being done, not a failure
        if exc.code == 1 and type(sys.stdout).__name__ == "PacifyFlushWrapper":
            sys.exit(0)
        raise
    except BrokenPipeError:
        # `nearmetal report | head`: the reader has what it wanted; leave quietly with 0 (Python would
        # print a traceback at exit while flushing stdout, so stdout is pointed at /dev/null first)
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(0)


__all__ = ["app", "main"]

if __name__ == "__main__":
    main()
