"""The OSU micro-benchmarks' point-to-point and collective measurements in mpi4py, with OSU's output shape.

    mpiexec -n 2 python -m nearmetal.tools.osu --benchmarks latency,bw,allreduce -m 8:1048576 -i 1000 -x 100

The OSU micro-benchmarks (osu_latency, osu_bw, osu_allreduce) are not packaged in Debian; this follows their
method so results read alike and ``nearmetal parse osu`` reads both:
- latency: ping-pong between ranks 0 and 1; one-way latency = round-trip time / 2, averaged over iterations;
- bw: rank 0 posts a window of 64 non-blocking sends, rank 1 the receives, then a 4-byte acknowledgement;
  MB/s = bytes × window × iterations / time / 1e6;
- allreduce: MPI_Allreduce of size/4 floats (sum), average time per call over iterations, averaged over
  ranks.
Messages above 8 KiB use the large-message iteration and skip counts, as OSU does. Each benchmark prints
``# OSU MPI <Name> Test`` then ``# Size  <column>`` and one line per size (OSU's mean). Latency and allreduce
also time every iteration (rank 0) and print, after each size's line, a comment OSU readers skip:
``# nearmetal-iterations {json}`` with the iterations' p50, p99, mean, min, max and bimodality
(``nearmetal.tools.iterstats``): a rank that loses its CPU for a scheduler slice makes a few iterations
1000× slower, which moves the mean and not the median.

``--pin`` (the default) puts rank r on the r-th CPU it may use (``sched_getaffinity``, so a cpuset is
respected): with two CPUs, one each; with one, both share it. Ranks of MPICH busy-poll while they wait, so
two ranks left to the scheduler on one CPU take turns by time slices (ms) instead of µs. The line
``# nearmetal-ranks {json}`` says where each rank ran.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys

from nearmetal.tools.iterstats import summarize

LARGE_MESSAGE = 8192
WINDOW = 64
VERSION = "v7.3-compatible (nearmetal mpi4py)"


def sizes(spec: str, floor: int = 1) -> list[int]:
    """``MIN:MAX`` → the powers of two between (OSU's -m); ``a,b,c`` → exactly those sizes."""
    if "," in spec or ":" not in spec:
        return [s for s in (int(x) for x in spec.split(",") if x) if s >= floor] or [floor]
    lo_s, _, hi_s = spec.partition(":")
    lo, hi = max(int(lo_s), floor), int(hi_s or lo_s)
    out, size = [], 1
    while size <= hi:
        if size >= lo:
            out.append(size)
        size *= 2
    return out


def counts(size: int, args: argparse.Namespace) -> tuple[int, int]:
    if size > LARGE_MESSAGE:
        return args.large_iterations, args.large_skip
    return args.iterations, args.skip


def print_iterations(test: str, size: int, values: list[float]) -> None:
    """The per-iteration summary line of one size (µs), after OSU's own line."""
    stats = {k: round(v, 4) for k, v in summarize(values).items()}
    print(f"# nearmetal-iterations {json.dumps({'test': test, 'size': size, **stats})}", flush=True)


def pin(rank: int) -> list[int]:
    """Rank r onto the r-th allowed CPU (modulo their number); returns the CPUs it may now use."""
    allowed = sorted(os.sched_getaffinity(0))
    cpu = allowed[rank % len(allowed)]
    os.sched_setaffinity(0, {cpu})
    return sorted(os.sched_getaffinity(0))


def latency(comm, args: argparse.Namespace) -> None:  # type: ignore[no-untyped-def]
    from mpi4py import MPI

    rank = comm.Get_rank()
    if rank == 0:
        print(f"# OSU MPI Latency Test {VERSION}\n# Size          Latency (us)", flush=True)
    wtime = MPI.Wtime
    for size in sizes(args.message_size):
        iters, skip = counts(size, args)
        buf = bytearray(size)
        comm.Barrier()
        if rank == 1:
            # rank 0 decides when to stop (--seconds): the first byte of its message says "more follow"
            while True:
                comm.Recv(buf, source=0, tag=1)
                comm.Send(buf, dest=0, tag=1)
                if buf[0] == 0:
                    break
            continue
        if rank != 0:
            continue
        one_way: list[float] = []  # each iteration's round trip / 2, µs
        t0 = 0.0
        i = 0
        while True:
            if i == skip:
                t0 = wtime()
            last = i + 1 >= iters + skip and (not args.seconds or wtime() - t0 >= args.seconds)
            buf[0] = 0 if last else 1
            start = wtime()
            comm.Send(buf, dest=1, tag=1)
            comm.Recv(buf, source=1, tag=1)
            if i >= skip:
                one_way.append((wtime() - start) * 0.5e6)
            i += 1
            if last:
                break
        elapsed = wtime() - t0
        print(f"{size:<10d}{elapsed * 1e6 / (2 * len(one_way)):>18.2f}", flush=True)
        print_iterations("latency", size, one_way)


def bandwidth(comm, args: argparse.Namespace) -> None:  # type: ignore[no-untyped-def]
    from mpi4py import MPI

    rank = comm.Get_rank()
    if rank == 0:
        print(f"# OSU MPI Bandwidth Test {VERSION}\n# Size      Bandwidth (MB/s)", flush=True)
    ack = bytearray(4)
    for size in sizes(args.message_size):
        iters, skip = counts(size, args)
        bufs = [bytearray(size) for _ in range(WINDOW)]
        comm.Barrier()
        t0 = 0.0
        for i in range(iters + skip):
            if i == skip:
                t0 = MPI.Wtime()
            if rank == 0:
                MPI.Request.Waitall([comm.Isend(b, dest=1, tag=100) for b in bufs])
                comm.Recv(ack, source=1, tag=101)
            elif rank == 1:
                MPI.Request.Waitall([comm.Irecv(b, source=0, tag=100) for b in bufs])
                comm.Send(ack, dest=0, tag=101)
        elapsed = MPI.Wtime() - t0
        if rank == 0:
            print(f"{size:<10d}{size * WINDOW * iters / elapsed / 1e6:>20.2f}", flush=True)


def allreduce(comm, args: argparse.Namespace) -> None:  # type: ignore[no-untyped-def]
    import numpy as np
    from mpi4py import MPI

    rank = comm.Get_rank()
    if rank == 0:
        print(f"# OSU MPI Allreduce Latency Test {VERSION}\n# Size       Avg Latency(us)", flush=True)
    for size in sizes(args.message_size, floor=4):
        iters, skip = counts(size, args)
        send = np.ones(size // 4, dtype=np.float32)
        recv = np.empty_like(send)
        comm.Barrier()
        total = 0.0
        calls = [0.0] * iters  # each call's time, µs (rank 0's view)
        for i in range(iters + skip):
            t0 = MPI.Wtime()
            comm.Allreduce(send, recv, op=MPI.SUM)
            if i >= skip:
                took = MPI.Wtime() - t0
                total += took
                calls[i - skip] = took * 1e6
        mine = np.array([total * 1e6 / iters])
        avg = np.zeros(1)
        comm.Reduce(mine, avg, op=MPI.SUM, root=0)
        if rank == 0:
            print(f"{size:<10d}{avg[0] / comm.Get_size():>18.2f}", flush=True)
            print_iterations("allreduce", size, calls)


BENCHMARKS = {"latency": latency, "bw": bandwidth, "allreduce": allreduce}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nearmetal.tools.osu", description=__doc__.split("\n")[0])
    parser.add_argument("--benchmarks", default="latency,bw,allreduce")
    parser.add_argument(
        "-m", "--message-size", default="1:1048576", help="MIN:MAX bytes (powers of two), or a list a,b,c"
    )
    parser.add_argument("-i", "--iterations", type=int, default=1000)
    parser.add_argument("-x", "--skip", type=int, default=100)
    parser.add_argument("--large-iterations", type=int, default=100)
    parser.add_argument("--large-skip", type=int, default=10)
    parser.add_argument(
        "--seconds", type=float, default=0.0, help="latency: measure each size for at least this long"
    )
    parser.add_argument(
        "--pin", action=argparse.BooleanOptionalAction, default=True, help="one allowed CPU per rank"
    )
    args = parser.parse_args(argv)
    names = [b for b in args.benchmarks.split(",") if b]
    unknown = [b for b in names if b not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; use {', '.join(BENCHMARKS)}")
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    if comm.Get_size() < 2:
        print("error: the OSU point-to-point benchmarks need 2 ranks (mpiexec -n 2)", file=sys.stderr)
        return 2
    rank = comm.Get_rank()
    cpus = pin(rank) if args.pin else sorted(os.sched_getaffinity(0))
    where = comm.gather(
        {"rank": rank, "host": socket.gethostname(), "pid": os.getpid(), "cpus": cpus}, root=0
    )
    if rank == 0:
        ranks = {"pinned": args.pin, "ranks": where, "load_avg": [round(x, 2) for x in os.getloadavg()]}
        print(f"# nearmetal-ranks {json.dumps(ranks)}", flush=True)
    for name in names:
        BENCHMARKS[name](comm, args)
    if rank == 0:
        print(
            f"# nearmetal-load {json.dumps({'load_avg': [round(x, 2) for x in os.getloadavg()]})}", flush=True
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
