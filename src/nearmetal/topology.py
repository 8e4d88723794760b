"""A job's topology: how many devices (or ranks) it used on each node, canonicalised as seed 001 writes it.

A leaf module: the ddp workload records the topology of each trial it ran, ``analysis.sharing`` groups jobs
by it; neither imports the other.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable


def canonical_topology(counts: Iterable[int] | str) -> str:
    """How many devices (or ranks) a job used on each node, as the seed writes it: nodes are alike, so
    order and idle nodes do not matter — "0 0 2 1 1 1 3" and "3 2 1 1 1" are both "1 1 1 2 3"."""
    if isinstance(counts, str):
        parts = counts.replace(",", " ").split()
        try:
            numbers = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"{counts!r} is not a topology such as '3 2 1 1 1'") from None
    else:
        numbers = [int(c) for c in counts]
    if any(n < 0 for n in numbers):
        raise ValueError(f"a topology counts devices per node and cannot be negative: {counts!r}")
    used = sorted(n for n in numbers if n > 0)
    if not used:
        raise ValueError(f"topology {counts!r} uses no device at all")
    return " ".join(str(n) for n in used)


def topology_of(node_of_each_rank: Iterable[str]) -> str:
    """The canonical topology of a job from the node (host, or CPU set) each rank ran on."""
    return canonical_topology(Counter(node_of_each_rank).values())
