"""CLI commands of each area, in their own modules so areas grow without crowding ``cli.py``.

Each module imports ``app`` from ``nearmetal.cli`` and registers its commands on it; ``cli.py`` imports
every module listed here at its end.
"""
