"""runtime-class → ``spec.runtimeClassName``: which runtime handler of the node's CRI runs the pod (runc,
crun, kata-qemu, gvisor …); seed 002's runtime comparison at the pod level."""

from __future__ import annotations

from typing import Any

from nearmetal.backends.podmaps import PodShape, maps_layer
from nearmetal.errors import NearmetalError


@maps_layer("runtime-class")
def map_runtime_class(config: Any, shape: PodShape) -> None:
    if shape.runtime_class not in (None, config.name):
        raise NearmetalError(
            f"a trial asks for two runtime classes ({shape.runtime_class} and {config.name})",
            fix="keep one runtime-class layer (or the pod layer's runtime_class) per variant",
        )
    shape.runtime_class = config.name
