"""Data-parallel training with torch.distributed DistributedDataParallel: time per epoch over N ranks.

Started by ``torchrun`` (``python -m torch.distributed.run``), which sets RANK, WORLD_SIZE, LOCAL_RANK and
the rendezvous. Each rank trains the model of nm_model.py on its share of the self-generated data set
(DistributedSampler; ``--batch-size`` is per rank, as in the seed's PyTorchJob), gradients are all-reduced
by gloo on CPUs or nccl on GPUs. An epoch is timed between two barriers, so its time is the slowest
rank's. ``--pin`` puts rank i on CPU pin[i] (a topology on one host: how many ranks share each CPU).
Rank 0 prints the result with every rank's placement (host, pid, device, CPUs).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nm_common
import nm_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset-size", type=int, default=8000)
    parser.add_argument("--batch-size", type=int, default=64, help="per rank")
    parser.add_argument("--epochs", type=int, default=3, help="measured epochs")
    parser.add_argument("--warmup-epochs", type=int, default=1)
    parser.add_argument("--features", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (rank i uses local GPU i)")
    parser.add_argument("--backend", default="auto", choices=["auto", "gloo", "nccl"])
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per rank")
    parser.add_argument("--pin", default="", help="comma-separated CPU for each rank")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    try:
        rank = int(os.environ["RANK"])
        world = int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
    except KeyError:
        nm_common.fail("RANK/WORLD_SIZE are not set: start this program with torchrun")
    if args.pin:
        cpus = [int(c) for c in args.pin.split(",")]
        if len(cpus) != world:
            nm_common.fail(f"--pin names {len(cpus)} CPUs for {world} ranks")
        # before torch starts its thread pools, which inherit the affinity
        os.sched_setaffinity(0, {cpus[rank]})
    threads = nm_common.configure_threads(args.threads or None)

    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(threads)
    device_name = args.device
    if args.device.startswith("cuda"):
        device_name = f"cuda:{local_rank}"
    device = nm_common.torch_device(torch, device_name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = args.backend if args.backend != "auto" else ("nccl" if device.type == "cuda" else "gloo")
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=300))

    dataset = nm_model.make_dataset(torch, args.dataset_size, args.features, args.classes, args.seed)
    sampler: Any = torch.utils.data.distributed.DistributedSampler(
        dataset, num_replicas=world, rank=rank, shuffle=True, seed=args.seed
    )
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, sampler=sampler)
    model = nm_model.make_model(torch, args.features, args.hidden, args.layers, args.classes, args.seed)
    model = DistributedDataParallel(
        model.to(device), device_ids=[device.index] if device.type == "cuda" else None
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    epoch_seconds: list[float] = []
    losses: list[float] = []
    for epoch in range(args.warmup_epochs + args.epochs):
        sampler.set_epoch(epoch)
        dist.barrier()
        t0 = time.perf_counter()
        running, batches = 0.0, 0
        for inputs, labels in loader:
            inputs, labels = inputs.to(device), labels.to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(inputs), labels)
            loss.backward()
            optimizer.step()
            running += float(loss.detach())
            batches += 1
            if epoch == 0 and batches == 1 and rank == 0:
                nm_common.ready()
        synchronize()
        dist.barrier()
        epoch_seconds.append(time.perf_counter() - t0)
        losses.append(running / max(batches, 1))

    placement = {
        "rank": rank,
        "local_rank": local_rank,
        "threads": threads,
        **nm_common.host_facts(),
        **nm_common.device_facts(torch, device),
    }
    placements: list = [None] * world
    dist.all_gather_object(placements, placement)
    if rank == 0:
        measured = epoch_seconds[args.warmup_epochs :]
        nm_common.emit(
            "ddp",
            {
                "world_size": world,
                "backend": backend,
                "dataset_size": args.dataset_size,
                "batch_size": args.batch_size,
                "epochs": args.epochs,
                "warmup_epochs": args.warmup_epochs,
                "epoch_s": measured,
                "warmup_epoch_s": epoch_seconds[: args.warmup_epochs],
                "samples_per_s": args.dataset_size * len(measured) / sum(measured),
                "final_loss": losses[-1],
                "ranks": sorted(placements, key=lambda p: p["rank"]),
                "versions": {"torch": torch.__version__},
            },
        )
    # every rank leaves gloo together: a rank that tears its pairs down while another still reads them
    # aborts ("terminate called without an active exception") after its result was printed
    dist.barrier()
    dist.destroy_process_group()
    # gloo's worker threads can still hold tensors when the interpreter finalises, and tearing those down
    # then aborts the process (SIGABRT, pytorch/pytorch#179291) after a good result: skip finalisation
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
