"""A metric is a named number from a trial, with its unit and which direction is better."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Direction = Literal["higher", "lower"]

# the longest metric name and unit the store keeps (its columns are made from these; a plan's metric rule
# is refused at load beyond them, not after its trials ran)
NAME_MAX_CHARS = 128
UNIT_MAX_CHARS = 32


@dataclass(frozen=True, slots=True)
class Metric:
    """One measured value. ``values`` holds several samples when a trial yields more than one
    (epochs, windows, iterations); ``value`` is then their mean."""

    name: str
    value: float
    unit: str
    direction: Direction
    source: str = "workload"
    values: tuple[float, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.direction not in ("higher", "lower"):
            raise ValueError(
                f"metric {self.name}: direction must be 'higher' or 'lower', not {self.direction!r}"
            )

    @classmethod
    def series(
        cls, name: str, values: list[float], unit: str, direction: Direction, source: str = "workload"
    ) -> Metric:
        vals = tuple(float(v) for v in values)
        if not vals:
            raise ValueError(f"metric {name}: a series needs at least one value")
        return cls(name, sum(vals) / len(vals), unit, direction, source, vals)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "direction": self.direction,
            "source": self.source,
        }
        if self.values:
            out["values"] = list(self.values)
        return out
