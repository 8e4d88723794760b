"""gpu: the trial uses one GPU or one MIG instance, selected with CUDA_VISIBLE_DEVICES.

``device`` is a GPU index ("0"), a MIG device as "GPU:MIG" ("0:2", the indices ``nvidia-smi -L`` prints),
a UUID ("GPU-…" or "MIG-…"), or ``auto``: the first device whose profile fits ``profile`` (a whole GPU
when profile is "disabled" or not given; "3g" matches any card's 3-slice profile, so one plan serves
A100-40GB, A100-80GB and H100). The selected device is passed to every process of the trial (neighbours
included) by UUID, the form CUDA accepts for MIG instances; the workload then uses ``device: cuda``. A
single CUDA process can enumerate only one MIG device (seed 001 part 5), and a GPU in MIG mode cannot be
used whole, so selecting such a GPU by index is refused with the list of its MIG devices. The placement
records the model, UUIDs, the MIG profile and, from ``gpu_profiles``, its SMs and compute slices;
``profile`` makes a plan refuse to run on a partition of another size.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Literal

from pydantic import Field, field_validator

from nearmetal.errors import NearmetalError
from nearmetal.layers.base import Layer, LayerConfig, TrialContext, register_layer
from nearmetal.workloads.base import ProcessSpec, Requirement


class GpuConfig(LayerConfig):
    layer: Literal["gpu"] = "gpu"
    device: str | int = Field(
        "auto",
        description="GPU index, 'GPU:MIG' indices, a GPU-/MIG- UUID, or auto (the first that fits profile)",
    )
    profile: str | None = Field(
        None,
        description="the MIG profile the device must have: 3g.20gb, or 3g for any card's 3-slice profile, or "
        "'disabled' for a whole GPU",
    )

    @field_validator("profile")
    @classmethod
    def _profile(cls, value: str | None) -> str | None:
        if value is None or value == "disabled":
            return value
        if re.fullmatch(r"[1-7]g", value.strip().lower()):
            return value.strip().lower()
        from nearmetal.host.gpu_profiles import normalise_profile

        return normalise_profile(value)


def profile_matches(actual: str | None, wanted: str) -> bool:
    """``wanted`` is a full profile name, a compute size ("3g": any card's 3-slice profile) or "disabled"."""
    if wanted == "disabled":
        return actual is None
    if actual is None:
        return False
    if wanted.endswith("g"):
        return actual.split(".")[0] == wanted
    return actual == wanted


@dataclass
class Selection:
    visible_devices: str
    gpu_index: int
    gpu_name: str
    gpu_uuid: str
    mig_profile: str | None = None
    mig_uuid: str | None = None
    mig_index: int | None = None
    sms: int | None = None
    compute_slices: int | None = None


def select_device(gpus: list[Any], device: str | int, profile: str | None = None) -> Selection:
    """Resolve ``device`` against ``nearmetal.host.gpu.parse_gpu_list`` output; errors say what exists."""
    from nearmetal.host.gpu_profiles import gpu_model

    if not gpus:
        raise NearmetalError("no NVIDIA GPU is listed by nvidia-smi -L on this host", fix="run on a GPU host")
    text = str(device).strip()
    gpu, mig = None, None
    if text == "auto":
        wanted = profile or "disabled"
        for g in gpus:
            if wanted == "disabled" and not g.mig_devices:
                gpu = g
            else:
                mig = next((m for m in g.mig_devices if profile_matches(m.profile, wanted)), None)
                gpu = g if mig else None
            if gpu is not None:
                break
        if gpu is None:
            have = ", ".join(
                f"{g.index}: " + (", ".join(m.profile for m in g.mig_devices) or "whole GPU") for g in gpus
            )
            raise NearmetalError(
                f"no GPU or MIG device here has profile {wanted}",
                fix=f"create one (nvidia-smi mig -cgi …) or change the plan; devices here: {have}",
            )
    elif text.startswith("MIG-"):
        for g in gpus:
            mig = next((m for m in g.mig_devices if m.uuid == text), None)
            if mig:
                gpu = g
                break
    elif text.startswith("GPU-"):
        gpu = next((g for g in gpus if g.uuid == text), None)
    else:
        gpu_part, _, mig_part = text.partition(":")
        if not gpu_part.isdigit() or (mig_part and not mig_part.isdigit()):
            raise NearmetalError(
                f"gpu.device {text!r} is not an index ('0'), 'GPU:MIG' ('0:1') or a GPU-/MIG- UUID",
                fix="see nvidia-smi -L",
            )
        gpu = next((g for g in gpus if g.index == int(gpu_part)), None)
        if gpu is not None and mig_part:
            mig = next((m for m in gpu.mig_devices if m.index == int(mig_part)), None)
            if mig is None:
                raise NearmetalError(
                    f"GPU {gpu.index} has no MIG device {mig_part}",
                    fix="MIG devices: "
                    + (", ".join(f"{gpu.index}:{m.index} ({m.profile})" for m in gpu.mig_devices) or "none"),
                )
    if gpu is None:
        listing = ", ".join(f"{g.index}: {g.name} ({g.uuid})" for g in gpus)
        raise NearmetalError(f"no GPU {text!r} on this host", fix=f"GPUs here: {listing}")
    if mig is None and gpu.mig_devices:
        listing = ", ".join(f"{gpu.index}:{m.index} ({m.profile}, {m.uuid})" for m in gpu.mig_devices)
        raise NearmetalError(
            f"GPU {gpu.index} is in MIG mode and cannot be used whole; CUDA sees only its MIG devices",
            fix=f"select one: {listing}",
        )
    model = gpu_model(gpu.name)
    selection = Selection(
        visible_devices=mig.uuid if mig else gpu.uuid,
        gpu_index=gpu.index,
        gpu_name=gpu.name,
        gpu_uuid=gpu.uuid,
        mig_profile=mig.profile if mig else None,
        mig_uuid=mig.uuid if mig else None,
        mig_index=mig.index if mig else None,
    )
    if mig is not None and model is not None:
        try:
            found = model.profile(mig.profile)
            selection.sms, selection.compute_slices = found.sms, found.compute_slices
        except KeyError:
            pass
    elif model is not None:
        selection.sms, selection.compute_slices = model.full_sms, 7
    if profile is not None and not profile_matches(selection.mig_profile, profile):
        actual = selection.mig_profile or "disabled"
        raise NearmetalError(
            f"gpu.profile {profile} asked for, but device {text} is {actual}",
            fix="select a device with that profile, or change profile",
        )
    return selection


@register_layer
class GpuLayer(Layer[GpuConfig]):
    kind = "gpu"
    family = "partition"
    Config = GpuConfig
    description = "one GPU or MIG instance for the trial (CUDA_VISIBLE_DEVICES), its profile recorded"
    needs_root = False

    def __init__(self, config: GpuConfig) -> None:
        super().__init__(config)
        self.selection: Selection | None = None

    def requires(self) -> list[Requirement]:
        return [Requirement("nvidia-smi", "nvidia-smi", purpose="lists the GPUs and MIG devices")]

    def setup(self, ctx: TrialContext) -> None:
        from nearmetal.host.gpu import list_gpus

        self.selection = select_device(list_gpus(), self.config.device, self.config.profile)
        ctx.placement["gpu"] = asdict(self.selection)

    def wrap(self, process: ProcessSpec, ctx: TrialContext) -> ProcessSpec:
        assert self.selection is not None
        process.env["CUDA_VISIBLE_DEVICES"] = self.selection.visible_devices
        return process
