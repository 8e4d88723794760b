"""MIG partition profiles per GPU model: compute slices, memory, and streaming multiprocessors (SMs).

One table for everything that reasons about GPU partitions: the partitions study (ideal ratios between
neighbouring partitions, the theoretical loss of "MIG enabled with one full-size instance"), ``doctor``'s MIG
check and the GPU-sharing advisor. SM counts are what ``nvidia-smi mig -lgip`` prints for each profile
(column ``SM``); ``full_sms`` is the card with MIG disabled. Seed 001 part 5: an A100-40GB has 108 SMs and
its 7g.40gb instance 98 — "enabling MIG loses 10 SMs (9.25%)". Memory bandwidth follows memory slices
(1/8 of the card each), compute follows compute slices (1/7 each).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PROFILE_PATTERN = re.compile(r"^(?:MIG[ -])?(?P<compute>\d+)g\.(?P<memory>\d+)gb(?P<extra>\+me)?$", re.I)


@dataclass(frozen=True)
class MigProfile:
    name: str  # "3g.20gb"
    compute_slices: int  # of 7
    memory_gb: int
    sms: int
    memory_slices: int  # of 8; memory bandwidth scales with these
    max_instances: int


@dataclass(frozen=True)
class GpuModel:
    name: str  # "A100-40GB"
    match: tuple[str, ...]  # lower-case substrings of NVML/nvidia-smi product names that mean this model
    full_sms: int  # MIG disabled
    memory_gb: int
    profiles: tuple[MigProfile, ...]
    source: str

    def profile(self, name: str) -> MigProfile:
        key = normalise_profile(name)
        for p in self.profiles:
            if p.name == key:
                return p
        known = ", ".join(p.name for p in self.profiles)
        raise KeyError(f"{self.name} has no MIG profile {name!r} (profiles: {known})")

    @property
    def full_profile(self) -> MigProfile:
        """The one instance that takes the whole card (7g.*)."""
        return max(self.profiles, key=lambda p: (p.compute_slices, p.memory_gb))

    @property
    def mig_sm_loss(self) -> float:
        """Fraction of SMs lost by enabling MIG and creating the one full-size instance."""
        return 1.0 - self.full_profile.sms / self.full_sms


GPU_MODELS: dict[str, GpuModel] = {
    m.name: m
    for m in [
        GpuModel(
            "A100-40GB",
            ("a100-sxm4-40gb", "a100-pcie-40gb", "a100 40gb", "a100-40gb"),
            108,
            40,
            (
                MigProfile("7g.40gb", 7, 40, 98, 8, 1),
                MigProfile("4g.20gb", 4, 20, 56, 4, 1),
                MigProfile("3g.20gb", 3, 20, 42, 4, 2),
                MigProfile("2g.10gb", 2, 10, 28, 2, 3),
                MigProfile("1g.10gb", 1, 10, 14, 2, 4),
                MigProfile("1g.5gb", 1, 5, 14, 1, 7),
            ),
            "seed 001 parts 1 and 5 (nvidia-smi mig -lgip on an A100 40GB PCIe)",
        ),
        GpuModel(
            "A100-80GB",
            ("a100-sxm4-80gb", "a100 80gb", "a100-80gb", "a100-pcie-80gb", "a100 80gb pcie"),
            108,
            80,
            (
                MigProfile("7g.80gb", 7, 80, 98, 8, 1),
                MigProfile("4g.40gb", 4, 40, 56, 4, 1),
                MigProfile("3g.40gb", 3, 40, 42, 4, 2),
                MigProfile("2g.20gb", 2, 20, 28, 2, 3),
                MigProfile("1g.20gb", 1, 20, 14, 2, 4),
                MigProfile("1g.10gb", 1, 10, 14, 1, 7),
            ),
            "nvidia-smi mig -lgip on an A100 80GB",
        ),
        GpuModel(
            "H100-SXM5-80GB",
            ("h100 80gb hbm3", "h100-sxm5-80gb", "h100 sxm", "h100-sxm"),
            132,
            80,
            (
                MigProfile("7g.80gb", 7, 80, 132, 8, 1),
                MigProfile("4g.40gb", 4, 40, 64, 4, 1),
                MigProfile("3g.40gb", 3, 40, 60, 4, 2),
                MigProfile("2g.20gb", 2, 20, 32, 2, 3),
                MigProfile("1g.20gb", 1, 20, 26, 2, 4),
                MigProfile("1g.10gb", 1, 10, 16, 1, 7),
            ),
            "nvidia-smi mig -lgip on an H100 80GB HBM3 (SXM5)",
        ),
        GpuModel(
            "H100-PCIE-80GB",
            ("h100 pcie", "h100-pcie"),
            114,
            80,
            (
                MigProfile("7g.80gb", 7, 80, 114, 8, 1),
                MigProfile("4g.40gb", 4, 40, 62, 4, 1),
                MigProfile("3g.40gb", 3, 40, 46, 4, 2),
                MigProfile("2g.20gb", 2, 20, 30, 2, 3),
                MigProfile("1g.20gb", 1, 20, 14, 2, 4),
                MigProfile("1g.10gb", 1, 10, 14, 1, 7),
            ),
            "nvidia-smi mig -lgip on an H100 PCIe 80GB",
        ),
    ]
}


def normalise_profile(name: str) -> str:
    """``"MIG 3g.20gb"``, ``"mig-3g.20gb"``, ``"3G.20GB"`` → ``"3g.20gb"`` (``+me`` media extensions kept)."""
    text = name.strip()
    text = re.sub(r"^(?:nvidia\.com/)?mig[- ]", "", text, flags=re.I)
    match = PROFILE_PATTERN.match(text)
    if not match:
        raise ValueError(f"{name!r} is not a MIG profile name such as 3g.20gb")
    return f"{int(match['compute'])}g.{int(match['memory'])}gb" + ("+me" if match["extra"] else "")


def compute_slices(profile: str) -> int:
    """The number of compute slices (sevenths of the card) a profile name says it has: 3g.20gb → 3."""
    match = PROFILE_PATTERN.match(normalise_profile(profile))
    assert match is not None
    return int(match["compute"])


def gpu_model(product_name: str) -> GpuModel | None:
    """The table entry for an NVML/nvidia-smi product name ("NVIDIA A100-PCIE-40GB"), or None."""
    text = product_name.lower()
    if text in (m.lower() for m in GPU_MODELS):
        return next(m for k, m in GPU_MODELS.items() if k.lower() == text)
    for model in GPU_MODELS.values():
        if any(s in text for s in model.match):
            return model
    return None


def ideal_ratio(bigger: str, smaller: str) -> float:
    """What the seed calls the ideal scale between two partitions: the ratio of their compute slices."""
    return compute_slices(bigger) / compute_slices(smaller)


def theoretical_mig_loss(model: str) -> float:
    """Fraction of SMs lost by "MIG enabled with one full-size instance" on a card (A100-40GB: 10/108)."""
    found = gpu_model(model)
    if found is None:
        raise KeyError(f"no MIG profile table for {model!r} (known: {', '.join(GPU_MODELS)})")
    return found.mig_sm_loss


# --- which sets of instances fit on one card ----------------------------------------------------------
# A GPU instance occupies consecutive memory slices (8 per card) starting at one of a few positions; these
# are the placements ``nvidia-smi mig -lgipp`` lists on A100 and H100 (the same layout on both), keyed by
# (compute slices, memory slices). Compute slices may not exceed 7 in total either.
PLACEMENT_STARTS: dict[tuple[int, int], tuple[int, ...]] = {
    (7, 8): (0,),
    (4, 4): (0,),
    (3, 4): (0, 4),
    (2, 2): (0, 2, 4),
    (1, 2): (0, 2, 4, 6),
    (1, 1): (0, 1, 2, 3, 4, 5, 6),
}
MEMORY_SLOTS = 8
COMPUTE_SLOTS = 7


def place_instances(model: GpuModel, counts: dict[str, int]) -> list[tuple[str, int]] | None:
    """A placement (profile, first memory slice) for every requested instance, or None when the set
    cannot be created on one card. Raises KeyError for a profile the card does not have."""
    wanted: list[MigProfile] = []
    for name, count in counts.items():
        if count < 0:
            raise ValueError(f"{name}: a count cannot be negative")
        profile = model.profile(name)
        if count > profile.max_instances:
            return None
        wanted += [profile] * count
    if sum(p.compute_slices for p in wanted) > COMPUTE_SLOTS:
        return None
    # biggest first: the backtracking then tries the few fixed positions of big instances before the many
    # of small ones
    wanted.sort(key=lambda p: (p.memory_slices, p.compute_slices), reverse=True)
    used = [False] * MEMORY_SLOTS
    chosen: list[tuple[str, int]] = []

    def fit(i: int) -> bool:
        if i == len(wanted):
            return True
        profile = wanted[i]
        starts = PLACEMENT_STARTS.get((profile.compute_slices, profile.memory_slices), ())
        for start in starts:
            span = range(start, start + profile.memory_slices)
            if span.stop <= MEMORY_SLOTS and not any(used[s] for s in span):
                for s in span:
                    used[s] = True
                chosen.append((profile.name, start))
                if fit(i + 1):
                    return True
                chosen.pop()
                for s in span:
                    used[s] = False
        return False

    return chosen if fit(0) else None


def layout_problem(model: GpuModel, counts: dict[str, int]) -> str | None:
    """None when the instances fit on one card, else a sentence saying why not."""
    try:
        placed = place_instances(model, counts)
    except KeyError as exc:
        return str(exc.args[0])
    if placed is not None:
        return None
    total_compute = sum(model.profile(n).compute_slices * c for n, c in counts.items())
    total_memory = sum(model.profile(n).memory_slices * c for n, c in counts.items())
    over = [n for n, c in counts.items() if c > model.profile(n).max_instances]
    if over:
        return f"{model.name} allows at most {model.profile(over[0]).max_instances} × {over[0]}"
    if total_compute > COMPUTE_SLOTS:
        return f"{total_compute} compute slices requested, a {model.name} has {COMPUTE_SLOTS}"
    return (
        f"these instances need {total_memory} of {MEMORY_SLOTS} memory slices but cannot be placed side by "
        f"side on a {model.name} (instances start only at fixed memory slices)"
    )
