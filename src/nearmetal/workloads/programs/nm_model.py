"""The small model and the self-generated data set the train and ddp programs use (torch only).

No downloads: the data set is drawn from a fixed random "teacher" network, so it is learnable (accuracy
rises during training, a check that the job really trains) and the same for every seed on every host.
"""

from __future__ import annotations

from typing import Any


def make_dataset(torch: Any, size: int, features: int, classes: int, seed: int, split: int = 0) -> Any:
    """``size`` samples labelled by the teacher network of ``seed``; ``split`` picks other inputs for the
    same teacher (a held-out set)."""
    teacher = torch.Generator().manual_seed(seed)
    teacher_hidden = torch.randn(features, 64, generator=teacher) / features**0.5
    teacher_out = torch.randn(64, classes, generator=teacher) / 8.0
    inputs = torch.randn(size, features, generator=torch.Generator().manual_seed(seed * 1009 + split + 1))
    labels = (torch.tanh(inputs @ teacher_hidden) @ teacher_out).argmax(dim=1)
    return torch.utils.data.TensorDataset(inputs, labels)


def make_model(torch: Any, features: int, hidden: int, layers: int, classes: int, seed: int) -> Any:
    torch.manual_seed(seed)
    modules: list[Any] = []
    width = features
    for _ in range(layers):
        modules += [torch.nn.Linear(width, hidden), torch.nn.LayerNorm(hidden), torch.nn.GELU()]
        width = hidden
    modules.append(torch.nn.Linear(width, classes))
    return torch.nn.Sequential(*modules)


def accuracy(torch: Any, model: Any, dataset: Any, device: Any) -> float:
    inputs, labels = dataset.tensors
    with torch.no_grad():
        predicted = model(inputs.to(device)).argmax(dim=1).cpu()
    return float((predicted == labels).float().mean().item())


def one_thread_per_worker(_: int) -> None:
    """DataLoader workers: one thread each, so workers × threads does not oversubscribe the CPUs."""
    import torch

    torch.set_num_threads(1)
