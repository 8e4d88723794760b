"""Training a small model on data it generates itself: seconds and samples per second.

The seed fine-tuned bert-base-cased with the Hugging Face Trainer; this stand-in needs no download: an MLP
classifier trained with AdamW on a synthetic, learnable data set (see nm_model.py), with the parameters the
seed varied — data set size, batch size and data-loader workers. ``--warmup-epochs`` epochs run first and
are not counted (lazy initialisation, data-loader start-up, allocator warm-up).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nm_common
import nm_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset-size", type=int, default=8000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0, help="data-loader worker processes")
    parser.add_argument("--epochs", type=int, default=2, help="measured epochs")
    parser.add_argument("--warmup-epochs", type=int, default=1)
    parser.add_argument("--features", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: one per allowed CPU)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if min(args.dataset_size, args.batch_size, args.epochs, args.features, args.hidden, args.classes) < 1:
        nm_common.fail("sizes and --epochs must be ≥ 1")
    threads = nm_common.configure_threads(args.threads or None)

    import torch

    device = nm_common.torch_device(torch, args.device)
    torch.set_num_threads(threads)
    dataset = nm_model.make_dataset(torch, args.dataset_size, args.features, args.classes, args.seed)
    held_out = nm_model.make_dataset(torch, 2000, args.features, args.classes, args.seed, split=1)
    model = nm_model.make_model(torch, args.features, args.hidden, args.layers, args.classes, args.seed)
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
        pin_memory=device.type == "cuda",
        worker_init_fn=nm_model.one_thread_per_worker if args.workers else None,
        generator=torch.Generator().manual_seed(args.seed),
    )
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    epoch_seconds: list[float] = []
    losses: list[float] = []
    total_epochs = args.warmup_epochs + args.epochs
    for epoch in range(total_epochs):
        t0 = time.perf_counter()
        running, batches = 0.0, 0
        for inputs, labels in loader:
            inputs = inputs.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(inputs), labels)
            loss.backward()
            optimizer.step()
            running += float(loss.detach())
            batches += 1
            if epoch == 0 and batches == 1:
                nm_common.ready()
        synchronize()
        epoch_seconds.append(time.perf_counter() - t0)
        losses.append(running / max(batches, 1))
    measured = epoch_seconds[args.warmup_epochs :]
    train_s = sum(measured)
    facts = nm_common.device_facts(torch, device)
    nm_common.emit(
        "train",
        {
            "dataset_size": args.dataset_size,
            "batch_size": args.batch_size,
            "workers": args.workers,
            "threads": threads,
            "epochs": args.epochs,
            "warmup_epochs": args.warmup_epochs,
            "parameters": sum(p.numel() for p in model.parameters()),
            "train_s": train_s,
            "epoch_s": measured,
            "warmup_epoch_s": epoch_seconds[: args.warmup_epochs],
            "samples_per_s": args.dataset_size * len(measured) / train_s,
            "final_loss": losses[-1],
            "accuracy": nm_model.accuracy(torch, model, held_out, device),
            "versions": {"torch": torch.__version__},
            **facts,
            **{k: v for k, v in nm_common.host_facts().items() if k != "pid"},
        },
    )


if __name__ == "__main__":
    main()
