"""nearmetal: how near to bare metal does my workload run here, and if not, why not?

The library under the ``nearmetal`` command, for notebooks and scripts::

    import nearmetal
    result = nearmetal.run_plan("plan.yaml")
    results = nearmetal.load_results(result.run_id)
    results.table()          # loss of every variant vs the baseline, with intervals
"""

__version__ = "0.1.0"

from nearmetal.api import Results, load_results
from nearmetal.runner import RunResult, run_plan

__all__ = ["Results", "RunResult", "__version__", "load_results", "run_plan"]
