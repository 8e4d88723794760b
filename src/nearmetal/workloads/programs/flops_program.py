"""Dense matrix-multiply throughput (TFLOPS) at one precision, timed in steady state.

numpy (its BLAS) or torch on the CPU, torch on a CUDA GPU. A warm-up phase (excluded) runs until
``--warmup`` seconds have passed; then samples are timed until ``--duration`` seconds have passed. A sample
is as many multiplications as take about 100 ms, synchronised on a GPU, so the timer's overhead stays
negligible; the throughput is all the samples' flops over all their time. Each multiplication of two n×n matrices is 2·n³ floating-point
operations.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nm_common

# long enough for a sample to span several scheduler time slices when the CPU is shared
SAMPLE_TARGET_S = 0.1
TORCH_DTYPES = {
    "fp64": "float64",
    "fp32": "float32",
    "tf32": "float32",
    "fp16": "float16",
    "bf16": "bfloat16",
}
NUMPY_DTYPES = {"fp64": "float64", "fp32": "float32"}


def numpy_step(args: argparse.Namespace):
    import numpy as np

    if args.precision not in NUMPY_DTYPES:
        nm_common.fail(f"numpy has no BLAS kernel for {args.precision}; use --backend torch")
    rng = np.random.default_rng(args.seed)
    dtype = np.dtype(NUMPY_DTYPES[args.precision])
    a = rng.standard_normal((args.size, args.size)).astype(dtype)
    b = rng.standard_normal((args.size, args.size)).astype(dtype)
    c = np.empty_like(a)

    def step(count: int) -> None:
        for _ in range(count):
            np.matmul(a, b, out=c)

    blas = ""
    try:
        config = np.show_config(mode="dicts")
        blas = str(config.get("Build Dependencies", {}).get("blas", {}).get("name", ""))
    except Exception:  # older numpy: no dict form
        pass
    return step, {"device": "cpu", "versions": {"numpy": np.__version__}, "blas": blas}


def torch_step(args: argparse.Namespace):
    import torch

    device = nm_common.torch_device(torch, args.device)
    if args.precision == "tf32" and device.type != "cuda":
        nm_common.fail("tf32 is a GPU tensor-core mode; on a CPU use fp32")
    if device.type == "cpu":
        torch.set_num_threads(args.threads_used)
    tf32 = args.precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    dtype = getattr(torch, TORCH_DTYPES[args.precision])
    generator = torch.Generator(device=device).manual_seed(args.seed)
    a = torch.randn(args.size, args.size, device=device, dtype=dtype, generator=generator)
    b = torch.randn(args.size, args.size, device=device, dtype=dtype, generator=generator)
    c = torch.empty_like(a)
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step(count: int) -> None:
        for _ in range(count):
            torch.matmul(a, b, out=c)
        synchronize()

    facts = nm_common.device_facts(torch, device)
    facts["versions"] = {"torch": torch.__version__}
    return step, facts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--precision", default="fp64", choices=sorted(TORCH_DTYPES))
    parser.add_argument("--backend", default="numpy", choices=["numpy", "torch"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: one per allowed CPU)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.size < 1 or args.duration <= 0 or args.warmup < 0:
        nm_common.fail("--size must be ≥ 1, --duration > 0 and --warmup ≥ 0")
    args.threads_used = nm_common.configure_threads(args.threads or None)

    step, facts = numpy_step(args) if args.backend == "numpy" else torch_step(args)

    # warm-up: caches, clocks, BLAS thread pools and CUDA kernels settle; also sizes a sample
    started = time.perf_counter()
    warm_iterations = 0
    while True:
        t0 = time.perf_counter()
        step(1)
        one_s = time.perf_counter() - t0
        warm_iterations += 1
        if time.perf_counter() - started >= args.warmup:
            break
    per_sample = max(1, math.ceil(SAMPLE_TARGET_S / max(one_s, 1e-9)))
    nm_common.ready()

    flops_per_sample = 2.0 * args.size**3 * per_sample
    samples: list[float] = []
    measured_from = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        step(per_sample)
        t1 = time.perf_counter()
        samples.append(t1 - t0)
        if t1 - measured_from >= args.duration and len(samples) >= 3:
            break
    elapsed = sum(samples)
    nm_common.emit(
        "flops",
        {
            "backend": args.backend,
            "precision": args.precision,
            "size": args.size,
            "threads": args.threads_used,
            "warmup_iterations": warm_iterations,
            "iterations_per_sample": per_sample,
            "iterations": per_sample * len(samples),
            "elapsed_s": elapsed,
            "tflops": flops_per_sample * len(samples) / elapsed / 1e12,
            "best_sample_s": min(samples),
            "sample_tflops": [flops_per_sample / s / 1e12 for s in samples],
            **facts,
            **{k: v for k, v in nm_common.host_facts().items() if k != "pid"},
        },
    )


if __name__ == "__main__":
    main()
