"""A compute-intensive particle-tracking simulation in the spirit of simpletrack (seed 001 parts 3–5).

Particles (x, px, y, py, zeta, delta) go round a ring for ``--turns`` turns. Each turn they cross
``--elements`` FODO cells — a drift, then a thin quadrupole (alternately focusing and defocusing) with a
sextupole component — and one RF cavity; particles outside the aperture are lost. Every particle is
independent, as in simpletrack where one GPU thread tracks one particle: on a CPU the particles are split
into chunks small enough to stay in cache (so the work is bound by arithmetic, not memory) and the chunks
are shared among ``--workers`` processes; on a GPU torch tracks them all at once. The timer covers the
tracking only (not start-up, imports or the initial distribution).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nm_common

DRIFT_M = 1.0
QUAD_K = 1.0  # 1/f of the thin quadrupoles (stable FODO: drift < 2f)
SEXTUPOLE_K = 0.5
RF_VOLTAGE = 1e-3
RF_WAVENUMBER = 10.0
SLIP = 1.0
APERTURE_M = 0.02


def chunk_sizes(particles: int, chunk: int) -> list[int]:
    return [min(chunk, particles - start) for start in range(0, particles, chunk)]


def initial(seed: int, index: int, count: int):
    """Gaussian beam of one chunk; a chunk's particles depend only on (seed, index), so every backend and
    every number of workers tracks exactly the same particles."""
    import numpy as np

    rng = np.random.default_rng([seed, index])
    sigmas = (1e-3, 1e-4, 1e-3, 1e-4, 5e-2, 1e-4)
    return [rng.normal(0.0, s, count) for s in sigmas]


def track(xp, coords, turns: int, elements: int):
    """Track in place; returns the alive mask. Generic over numpy and torch (operators and xp.sin)."""
    x, px, y, py, zeta, delta = coords
    alive = x * 0 == 0  # all True, same type and device as x
    for _ in range(turns):
        for element in range(elements):
            x += px * DRIFT_M
            y += py * DRIFT_M
            k1 = QUAD_K if element % 2 == 0 else -QUAD_K
            sext = SEXTUPOLE_K * (x * x - y * y)
            px -= k1 * x + sext
            py += k1 * y + 2.0 * SEXTUPOLE_K * x * y
        delta -= RF_VOLTAGE * xp.sin(RF_WAVENUMBER * zeta)
        zeta -= SLIP * delta
        alive &= x * x + y * y < APERTURE_M * APERTURE_M
    return alive


def numpy_chunk(job: tuple[int, int, int, int, int]) -> tuple[int, float]:
    import numpy as np

    seed, index, count, turns, elements = job
    coords = initial(seed, index, count)
    alive = track(np, coords, turns, elements)
    x = coords[0]
    return int(alive.sum()), float((x[alive] ** 2).sum())


def run_numpy(args: argparse.Namespace, workers: int) -> tuple[float, int, float]:
    chunks = [
        (args.seed, index, count, args.turns, args.elements)
        for index, count in enumerate(chunk_sizes(args.particles, args.chunk))
    ]
    if workers > 1:
        import multiprocessing

        context = multiprocessing.get_context("fork")
        with context.Pool(workers) as pool:
            pool.map(_noop, range(workers))  # workers exist (numpy imported) before the clock starts
            nm_common.ready()
            t0 = time.perf_counter()
            results = pool.map(numpy_chunk, chunks, chunksize=1)
            seconds = time.perf_counter() - t0
    else:
        nm_common.ready()
        t0 = time.perf_counter()
        results = [numpy_chunk(c) for c in chunks]
        seconds = time.perf_counter() - t0
    return seconds, sum(r[0] for r in results), sum(r[1] for r in results)


def _noop(_: int) -> None:
    import numpy  # noqa: F401


def run_torch(args: argparse.Namespace) -> tuple[float, int, float, dict]:
    import torch

    device = nm_common.torch_device(torch, args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads_used)
    import numpy as np

    parts = [initial(args.seed, i, n) for i, n in enumerate(chunk_sizes(args.particles, args.chunk))]
    coords = [torch.as_tensor(np.concatenate(column), device=device) for column in zip(*parts, strict=True)]
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    synchronize()
    nm_common.ready()
    t0 = time.perf_counter()
    alive = track(torch, coords, args.turns, args.elements)
    synchronize()
    seconds = time.perf_counter() - t0
    x = coords[0]
    facts = nm_common.device_facts(torch, device)
    facts["versions"] = {"torch": torch.__version__}
    return seconds, int(alive.sum().item()), float((x[alive] ** 2).sum().item()), facts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--particles", type=int, default=100_000)
    parser.add_argument("--turns", type=int, default=100)
    parser.add_argument("--elements", type=int, default=16, help="FODO cells per turn")
    parser.add_argument("--chunk", type=int, default=8192, help="particles per chunk on a CPU")
    parser.add_argument("--workers", type=int, default=0, help="CPU processes (0: one per allowed CPU)")
    parser.add_argument("--backend", default="numpy", choices=["numpy", "torch"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if min(args.particles, args.turns, args.elements, args.chunk) < 1:
        nm_common.fail("--particles, --turns, --elements and --chunk must be ≥ 1")
    workers = args.workers or len(nm_common.allowed_cpus())
    # each worker is single-threaded: parallelism comes from the workers, as from GPU threads
    args.threads_used = nm_common.configure_threads(1 if args.backend == "numpy" else None)

    if args.backend == "numpy":
        import numpy as np

        seconds, survived, checksum = run_numpy(args, workers)
        facts = {"device": "cpu", "workers": workers, "versions": {"numpy": np.__version__}}
    else:
        seconds, survived, checksum, facts = run_torch(args)
    particle_turns = args.particles * args.turns
    nm_common.emit(
        "particles",
        {
            "backend": args.backend,
            "particles": args.particles,
            "turns": args.turns,
            "elements": args.elements,
            "chunk": args.chunk,
            "tracking_s": seconds,
            "particle_turns_per_s": particle_turns / seconds,
            "survived": survived,
            "checksum": checksum if math.isfinite(checksum) else None,
            **facts,
            **{k: v for k, v in nm_common.host_facts().items() if k != "pid"},
        },
    )


if __name__ == "__main__":
    main()
