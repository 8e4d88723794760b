"""Helpers shared by the standalone workload programs (standard library only at import time)."""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
from typing import Any

RESULT_PREFIX = "NEARMETAL_RESULT "
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


def allowed_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def configure_threads(threads: int | None) -> int:
    """Threads for BLAS/OpenMP: as asked, else one per CPU this process may run on (a cpuset or an affinity
    mask shrinks that). Must run before numpy or torch is imported: the libraries read it once."""
    count = threads or len(allowed_cpus())
    for name in THREAD_VARIABLES:
        os.environ[name] = str(count)
    return count


def ready() -> None:
    """Tell the runner the steady state has begun (co-located neighbours wait for this line)."""
    print("nearmetal-ready", flush=True)


def fail(message: str, code: int = 2) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def emit(program: str, result: dict[str, Any]) -> None:
    doc = {"program": program, "format": 1, **result}
    print(RESULT_PREFIX + json.dumps(doc, separators=(",", ":")), flush=True)


def host_facts() -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "cpus": allowed_cpus(),
        "python": platform.python_version(),
    }


def torch_device(torch: Any, name: str) -> Any:
    """A torch device, refusing CUDA clearly when this torch or host has none."""
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
            fail(f"device {name} asked for, but torch {torch.__version__} ({build}) sees no CUDA GPU")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            fail(f"device {name} asked for, but only {torch.cuda.device_count()} CUDA device(s) are visible")
    return device


def device_facts(torch: Any, device: Any) -> dict[str, Any]:
    if device.type != "cuda":
        return {"device": "cpu"}
    index = device.index or 0
    props = torch.cuda.get_device_properties(index)
    facts = {
        "device": f"cuda:{index}",
        "device_name": props.name,
        "sms": props.multi_processor_count,
        "memory_gib": round(props.total_memory / 2**30, 2),
        "cuda": torch.version.cuda,
        "visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
    }
    uuid = getattr(props, "uuid", None)
    if uuid is not None:
        facts["uuid"] = str(uuid)
    return facts
