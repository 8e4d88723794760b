"""train: training a small PyTorch model on data it generates itself (seed 001's ML fine-tuning).

The seed fine-tuned bert-base-cased; this needs no download: an MLP classifier on a learnable synthetic
data set (see ``programs/train_program.py``), with the knobs the seed turned — data set size, batch size,
data-loader workers. Metrics: ``train_s`` (the measured epochs), ``samples_per_s``, ``epoch_s`` (one value
per epoch) and, as a check that it really learns, ``accuracy`` on a held-out set.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import Field

from nearmetal.metrics import Metric
from nearmetal.workloads.base import WorkloadContext, register_workload
from nearmetal.workloads.pyprogram import DeviceParams, ProgramWorkload


class ModelParams(DeviceParams):
    dataset_size: int = Field(8000, ge=1, le=100_000_000)
    batch_size: int = Field(64, ge=1, le=1_000_000)
    epochs: int = Field(2, ge=1, le=100_000, description="measured epochs")
    warmup_epochs: int = Field(1, ge=0, le=1000, description="epochs run first and not counted")
    features: int = Field(128, ge=1, le=1_000_000)
    hidden: int = Field(256, ge=1, le=1_000_000)
    layers: int = Field(2, ge=1, le=1000)
    classes: int = Field(10, ge=2, le=1_000_000)
    lr: float = Field(1e-3, gt=0, le=10)
    threads: int | None = Field(None, ge=1, le=4096, description="CPU threads (default: one per allowed CPU)")

    def longer(self, factor: float) -> dict[str, Any]:
        return {"epochs": math.ceil(self.epochs * factor)}

    def model_arguments(self) -> list[str]:
        args = [
            f"--dataset-size={self.dataset_size}",
            f"--batch-size={self.batch_size}",
            f"--epochs={self.epochs}",
            f"--warmup-epochs={self.warmup_epochs}",
            f"--features={self.features}",
            f"--hidden={self.hidden}",
            f"--layers={self.layers}",
            f"--classes={self.classes}",
            f"--lr={self.lr:g}",
            f"--device={self.device}",
            f"--seed={self.seed}",
        ]
        if self.threads:
            args.append(f"--threads={self.threads}")
        return args


class TrainParams(ModelParams):
    workers: int = Field(0, ge=0, le=1024, description="data-loader worker processes")


@register_workload
class TrainWorkload(ProgramWorkload[TrainParams]):
    kind = "train"
    Params = TrainParams
    description = "small PyTorch model trained on self-generated data: seconds and samples/s"
    primary_metric = "train_s"
    program = "train"
    uses_torch = True

    def arguments(self, params: TrainParams, ctx: WorkloadContext) -> list[str]:
        return [*params.model_arguments(), f"--workers={params.workers}"]

    def longer_params(self, params: TrainParams, factor: float) -> dict[str, Any]:
        return params.longer(factor)

    def metrics(self, doc: dict[str, Any]) -> list[Metric]:
        return [
            Metric("train_s", float(doc["train_s"]), "s", "lower"),
            Metric("samples_per_s", float(doc["samples_per_s"]), "samples/s", "higher"),
            Metric.series("epoch_s", [float(v) for v in doc["epoch_s"]], "s", "lower"),
            Metric("accuracy", float(doc["accuracy"]), "fraction", "higher"),
            Metric("final_loss", float(doc["final_loss"]), "nats", "lower"),
        ]
