"""ddp: the train workload's model with DistributedDataParallel over N ranks (seed 001 part 6).

``torchrun --standalone --nproc-per-node N`` starts the ranks; gloo all-reduces on CPUs, nccl on GPUs.
The metric is time per epoch (``epoch_s``, one value per measured epoch — the within-job level of the
seed's topology analysis). ``pin`` places rank i on CPU pin[i]: on one host that is a topology (how many
ranks share each CPU), the CPU analog of how many GPUs a job used on each node. The trial's placement
records every rank's host, pid, device and CPUs, and the job's topology.
"""

from __future__ import annotations

import sys
from typing import Any, Literal

from pydantic import Field, model_validator

from nearmetal.metrics import Metric
from nearmetal.topology import topology_of
from nearmetal.workloads.base import TrialOutput, WorkloadContext, register_workload
from nearmetal.workloads.pyprogram import ProgramWorkload
from nearmetal.workloads.train import ModelParams


class DdpParams(ModelParams):
    workers: int = Field(2, ge=1, le=4096, description="ranks (world size)")
    epochs: int = Field(3, ge=1, le=100_000, description="measured epochs")
    threads: int | None = Field(1, ge=1, le=4096, description="CPU threads per rank")
    backend: Literal["auto", "gloo", "nccl"] = Field("auto", description="auto: nccl on GPUs, gloo on CPUs")
    pin: list[int] | None = Field(None, description="the CPU of each rank, e.g. [0, 0, 1, 1]")

    @model_validator(mode="after")
    def _pin(self) -> DdpParams:
        if self.pin is not None:
            if len(self.pin) != self.workers:
                raise ValueError(
                    f"pin lists {len(self.pin)} CPUs for {self.workers} workers: give one per rank"
                )
            if any(cpu < 0 for cpu in self.pin):
                raise ValueError("pin: CPU numbers start at 0")
        if self.backend == "nccl" and not self.on_gpu:
            raise ValueError("nccl all-reduces between GPUs: use backend gloo (or auto) on a CPU")
        return self


def rank_nodes(ranks: list[dict[str, Any]], level: str = "auto") -> list[str]:
    """The "node" of each rank for a topology: its host when the job spans hosts, else its CPU set (ranks
    pinned to CPUs of one host), else its host."""
    hosts = [str(r.get("host", "?")) for r in ranks]
    if level == "host" or (level == "auto" and len(set(hosts)) > 1):
        return hosts
    cpus = [",".join(str(c) for c in r.get("cpus", [])) for r in ranks]
    if level == "cpu" or (level == "auto" and all(len(r.get("cpus", [])) == 1 for r in ranks)):
        return [f"{h}/cpu{c}" for h, c in zip(hosts, cpus, strict=True)]
    return hosts


@register_workload
class DdpWorkload(ProgramWorkload[DdpParams]):
    kind = "ddp"
    Params = DdpParams
    description = "DistributedDataParallel training over N ranks (gloo CPU, nccl GPU): time per epoch"
    primary_metric = "epoch_s"
    program = "ddp"
    uses_torch = True

    def launcher(self, params: DdpParams) -> list[str]:
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={params.workers}",
        ]

    def arguments(self, params: DdpParams, ctx: WorkloadContext) -> list[str]:
        args = [*params.model_arguments(), f"--backend={params.backend}"]
        if params.pin is not None:
            args.append("--pin=" + ",".join(str(c) for c in params.pin))
        return args

    def longer_params(self, params: DdpParams, factor: float) -> dict[str, Any]:
        return params.longer(factor)

    def metrics(self, doc: dict[str, Any]) -> list[Metric]:
        out = [
            Metric.series("epoch_s", [float(v) for v in doc["epoch_s"]], "s", "lower"),
            Metric("samples_per_s", float(doc["samples_per_s"]), "samples/s", "higher"),
            Metric("final_loss", float(doc["final_loss"]), "nats", "lower"),
        ]
        if doc.get("warmup_epoch_s"):
            out.append(Metric("first_epoch_s", float(doc["warmup_epoch_s"][0]), "s", "lower"))
        return out

    def placement(self, output: TrialOutput, params: Any | None = None) -> dict[str, Any]:
        doc = self.result(output)
        ranks = list(doc.get("ranks") or [])
        out: dict[str, Any] = {
            "ddp": {"world_size": doc.get("world_size"), "backend": doc.get("backend"), "ranks": ranks}
        }
        if ranks:
            out["ddp"]["topology"] = topology_of(rank_nodes(ranks))
            out["ddp"]["topology_hosts"] = topology_of(rank_nodes(ranks, "host"))
        return out
