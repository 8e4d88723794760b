"""The CLI's commands, one module per subject (run, results, host, plans, stats, net, advise, check, resume,
backends). Each module registers its commands on ``common.app`` with ``@app.command()`` when imported;
``nearmetal.cli`` imports every module of this package. Shared options and helpers are in ``common``.
"""
