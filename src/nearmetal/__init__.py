"""nearmetal: how near to bare metal does my workload run here, and if not, why not?

The library under the ``nearmetal`` command, for notebooks and scripts::

    import nearmetal
    result = nearmetal.run_plan("plan.yaml")
    results = nearmetal.load_results(result.run_id)
    results.table()          # loss of every variant vs the baseline, with intervals
"""

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nearmetal.api import Results, load_results
    from nearmetal.run.runner import RunResult, run_plan

__all__ = ["Results", "RunResult", "__version__", "load_results", "run_plan"]

# imported on first use: `python -m nearmetal exec-trial` on a cluster node, and every CLI command that
# does not analyse, must not pay for scipy and SQLAlchemy (seconds on a busy node)
_LAZY = {
    "Results": "nearmetal.api",
    "load_results": "nearmetal.api",
    "RunResult": "nearmetal.run.runner",
    "run_plan": "nearmetal.run.runner",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nearmetal' has no attribute {name!r}")
