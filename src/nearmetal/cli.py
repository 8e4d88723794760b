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
        app()
    except NearmetalError as exc:  # anything a command did not catch itself
        err_console.print(f"[bold red]error:[/bold red] {plain(exc)}", highlight=False)
        sys.exit(exc.exit_code)


__all__ = ["app", "main"]

if __name__ == "__main__":
    main()
