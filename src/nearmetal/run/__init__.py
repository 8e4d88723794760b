"""The write side of nearmetal: running a plan and storing every trial.

``runner`` orchestrates; this package holds its parts, one concept a module: ``records`` (what a run
returns and reports as it goes), ``preflight`` (refusing, before anything runs, a plan this host or backend
cannot run), ``schedule`` (trial order), ``repeats`` (adaptive repeats and the stop rule, an object that
owns its state), ``writer`` (a trial's outcome into the store), ``resume`` (what a resumed run knows and
checks) and ``workdir`` (the run's directory and environment). Nothing here imports the read side
(``api``, ``report``)."""
