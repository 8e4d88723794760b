"""CLI commands of each area, in their own modules so areas grow without crowding ``cli.py``.

Each module here does ``from nearmetal.cli import app`` and registers its commands with ``@app.command()``;
``cli.py`` ends with ``from nearmetal.commands import *``, which imports every module named in ``__all__``
(one line per module, so areas added in parallel merge cleanly).
"""

__all__: list[str] = [
    "advise",
    "backends",
    "check",
    "net",
    "reports",
    "resume",
    "stats",
]
