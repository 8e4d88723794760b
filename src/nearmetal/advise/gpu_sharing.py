"""Which GPU-sharing mechanism for which use, after seed 001's "How To Choose" tables (Efficient Access to
Shared GPU Resources, part 1), with the losses parts 4 and 5 measured and, when the result store has them,
the losses measured here."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from nearmetal.host.gpu_profiles import GPU_MODELS, GpuModel, gpu_model

MECHANISMS = ("time-slicing", "vgpu", "mig")
MECHANISM_TITLES = {"time-slicing": "Time slicing", "vgpu": "vGPU", "mig": "MIG"}

# seed 001 part 1, "How To Choose" → Features
FEATURES: list[tuple[str, dict[str, str]]] = [
    ("Max partitions", {"time-slicing": "Unlimited", "vgpu": "Variable (flavor and card)", "mig": "7"}),
    ("Partition type", {"time-slicing": "Temporal", "vgpu": "Temporal & Physical (VMs)", "mig": "Physical"}),
    ("Memory bandwidth QoS", {"time-slicing": "No", "vgpu": "Yes", "mig": "Yes"}),
    ("Telemetry", {"time-slicing": "No", "vgpu": "Yes", "mig": "Yes"}),
    ("Hardware isolation", {"time-slicing": "No", "vgpu": "No", "mig": "Yes"}),
    ("Predictable performance", {"time-slicing": "No", "vgpu": "Possible¹", "mig": "Yes"}),
    ("Reconfiguration", {"time-slicing": "Not applicable", "vgpu": "Not applicable", "mig": "When idle"}),
]
FOOTNOTES = {
    "¹": "when using the fixed share scheduler",
    "²": "independent workloads can trigger OOM errors between each other; needs an external mechanism to "
    "control memory usage (similar to kubelet CPU memory checks)",
}


@dataclass(frozen=True)
class UseCase:
    name: str
    title: str
    examples: str
    verdicts: dict[str, str]  # mechanism → the table's cell
    # the order the advisor prefers among mechanisms the table allows, and why
    preference: tuple[str, ...]
    why: str


# seed 001 part 1, "How To Choose" → Use Cases
USE_CASES: dict[str, UseCase] = {
    u.name: u
    for u in [
        UseCase(
            "latency-sensitive",
            "Latency-sensitive",
            "CAD, engineering applications",
            {"time-slicing": "No", "vgpu": "Possible¹", "mig": "Yes"},
            ("mig", "vgpu"),
            "time slicing makes every process wait for the others' slices (inappropriate for latency-sensitive "
            "work); MIG partitions are isolated in hardware and predictable",
        ),
        UseCase(
            "notebooks",
            "Interactive",
            "notebooks",
            {"time-slicing": "Yes²", "vgpu": "Yes", "mig": "Yes"},
            ("time-slicing", "mig", "vgpu"),
            "notebooks are spiky and mostly idle: time slicing packs many users per card (unlimited "
            "partitions) and an idle user costs the others nothing; MIG when users must not see each other's "
            "memory",
        ),
        UseCase(
            "simulation",
            "Performance intensive",
            "simulation",
            {"time-slicing": "No", "vgpu": "No", "mig": "Yes"},
            ("mig",),
            "time-sliced processes run one at a time with context-switch cost (seed: ×2 sharing took 34-39% "
            "longer than two runs in turn); MIG partitions run side by side and scale linearly with their "
            "size",
        ),
        UseCase(
            "ci-runners",
            "Low priority",
            "CI runners",
            {"time-slicing": "Yes", "vgpu": "Yes (but not cost-effective)", "mig": "Yes"},
            ("time-slicing", "mig", "vgpu"),
            "CI jobs are short, low priority and tolerant of slowdown: time slicing gives the most runners per "
            "card with no licence and no reconfiguration",
        ),
    ]
}

# what seed 001 measured (parts 4 and 5), shown when this store has no measurement of its own
PUBLISHED = {
    "time-slicing": [
        "shared ×1 vs passthrough: 0.1-0.5% slower (FLOPS), 0.4-2.5% (simulation) — enabling costs ~nothing",
        "simulation shared ×2: 34-39% longer than the two processes one after the other (context switching); "
        "×4 and ×8 add ~0% more",
    ],
    "mig": [
        "MIG enabled with one full 7g.40gb instance on an A100-40GB: 10 of 108 SMs lost (9.25%); measured "
        "8.7% fewer fp32 TFLOPS and ~9% longer simulation — never enable MIG without partitioning",
        "partitions scale linearly with their slices (2g.10gb ≈ 2 × 1g.5gb)",
    ],
    "vgpu": [
        "not measured in the seed: partitions are time-sliced under a hypervisor, plus virtualization loss"
    ],
}


@dataclass(frozen=True)
class MeasuredLoss:
    run_id: str
    plan: str
    workload: str
    variant: str
    metric: str
    loss_pct: float
    low_pct: float | None
    high_pct: float | None
    mechanism: str

    def line(self) -> str:
        interval = (
            f" [{self.low_pct:+.1f}, {self.high_pct:+.1f}]"
            if self.low_pct is not None and self.high_pct is not None
            else ""
        )
        return (
            f"run {self.run_id} ({self.plan}): {self.workload}/{self.variant} {self.metric} loss "
            f"{self.loss_pct:+.1f}%{interval}"
        )


@dataclass
class Recommendation:
    use_case: str
    card: str
    mechanism: str | None  # None: no mechanism the table allows fits this card; use whole GPUs
    reasons: list[str]
    caveats: list[str] = field(default_factory=list)
    alternatives: list[tuple[str, str]] = field(default_factory=list)  # (mechanism, why not first)
    evidence: list[str] = field(default_factory=list)  # measured here, else published
    mig_layout: dict[str, int] | None = None
    replicas: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "use_case": self.use_case,
            "card": self.card,
            "mechanism": self.mechanism,
            "reasons": self.reasons,
            "caveats": self.caveats,
            "alternatives": [{"mechanism": m, "why_not": w} for m, w in self.alternatives],
            "evidence": self.evidence,
            "mig_layout": self.mig_layout,
            "replicas": self.replicas,
        }


CARD_ALIASES = {"h100": "H100-SXM5-80GB", "h100-80gb": "H100-SXM5-80GB", "a100": "A100-40GB"}


def resolve_card(card: str) -> GpuModel | None:
    """The MIG table entry for a card name (``A100-40GB``, ``A100-80GB``, ``H100``, an NVML product name),
    or None for a card without MIG (T4, V100, L4, A10 …)."""
    key = card.strip().lower()
    if key in CARD_ALIASES:
        return GPU_MODELS[CARD_ALIASES[key]]
    return gpu_model(card)


def equal_layout(model: GpuModel, instances: int) -> dict[str, int]:
    """The biggest profile of which ``instances`` fit on one card (7 → 7 × 1g, 3 → 3 × 2g, 2 → 2 × 3g)."""
    from nearmetal.host.gpu_profiles import place_instances

    candidates = sorted(model.profiles, key=lambda p: (p.compute_slices, p.memory_gb), reverse=True)
    for profile in candidates:
        if place_instances(model, {profile.name: instances}) is not None:
            return {profile.name: instances}
    raise ValueError(f"{instances} MIG instances do not fit on a {model.name} (at most 7)")


def recommend(
    use_case: str,
    card: str,
    users_per_gpu: int = 4,
    mig_layout: dict[str, int] | None = None,
    measured: list[MeasuredLoss] | None = None,
) -> Recommendation:
    """A mechanism for ``use_case`` on ``card`` with the reasons, the seed's numbers, and what this store
    measured. ``users_per_gpu`` sizes time-slicing replicas and the default MIG layout."""
    from nearmetal.host.gpu_profiles import layout_problem

    if use_case not in USE_CASES:
        raise ValueError(f"unknown use case {use_case!r}; use one of: {', '.join(USE_CASES)}")
    if users_per_gpu < 1:
        raise ValueError("users per GPU must be at least 1")
    case = USE_CASES[use_case]
    model = resolve_card(card)
    allowed = [m for m in case.preference if not case.verdicts[m].startswith("No")]
    unavailable: dict[str, str] = {}
    if model is None:
        unavailable["mig"] = f"{card} has no MIG (MIG needs an A100, A30, H100 or newer)"
    elif users_per_gpu > 7:
        unavailable["mig"] = f"MIG makes at most 7 instances, {users_per_gpu} users per GPU were asked for"
    if use_case != "latency-sensitive":
        # vGPU is an enterprise licence plus a hypervisor: the seed reaches for it only where nothing else
        # gives predictable latency
        unavailable.setdefault("vgpu", "needs an NVIDIA vGPU licence, its hypervisor driver and VMs")
    chosen = next((m for m in allowed if m not in unavailable), None)
    rec = Recommendation(use_case, model.name if model else card, chosen, [case.why])
    for mechanism in MECHANISMS:
        if mechanism == chosen:
            continue
        verdict = case.verdicts[mechanism]
        if verdict.startswith("No"):
            rec.alternatives.append(
                (mechanism, f"the seed's table says {verdict} for {case.title.lower()} use")
            )
        elif mechanism in unavailable:
            rec.alternatives.append((mechanism, unavailable[mechanism]))
        else:
            rec.alternatives.append((mechanism, f"table: {verdict}; ranked after {chosen}"))
    if chosen is None:
        rec.reasons.append(
            f"no mechanism the table allows for {case.title.lower()} use fits {card}: give each workload a "
            "whole GPU"
        )
        return rec
    rec.reasons.append(
        f"seed table for {case.title.lower()} ({case.examples}): "
        + ", ".join(f"{MECHANISM_TITLES[m]} {case.verdicts[m]}" for m in MECHANISMS)
    )
    if chosen == "time-slicing":
        rec.replicas = users_per_gpu
        rec.caveats += [
            "no memory isolation: one process can take all GPU memory and OOM the others; run a watchdog "
            "that kills processes over their share (seed 001 part 2) or cap frameworks' memory",
            "no per-process telemetry; every process waits for the others' slices",
        ]
    elif chosen == "mig":
        assert model is not None
        layout = mig_layout or equal_layout(model, users_per_gpu)
        problem = layout_problem(model, layout)
        if problem:
            raise ValueError(f"MIG layout {layout} is not valid: {problem}")
        rec.mig_layout = layout
        rec.caveats += [
            f"enabling MIG costs {model.mig_sm_loss * 100:.1f}% of the SMs on the {model.name} "
            f"({model.full_sms} → {model.full_profile.sms}) even before partitioning; never enable it with one "
            "full-size instance",
            "reconfiguring the layout needs every process on the card evicted; nvidia-smi reports no "
            "utilization per MIG device (use DCGM)",
            "a CUDA process sees one MIG device only",
        ]
    elif chosen == "vgpu":
        rec.caveats += ["use the fixed share scheduler: only it makes vGPU performance predictable"]
    mine = [m for m in measured or [] if m.mechanism == chosen]
    if mine:
        rec.evidence += ["measured here: " + m.line() for m in mine]
    rec.evidence += ["seed 001: " + line for line in PUBLISHED[chosen]]
    return rec


def _mechanism_of(text: str) -> str | None:
    lowered = text.lower()
    if "mig" in lowered or "partition" in lowered:
        return "mig"
    if "slic" in lowered or "shared" in lowered or "mps" in lowered:
        return "time-slicing"
    if "vgpu" in lowered:
        return "vgpu"
    return None


def measured_sharing_losses(db: str | None = None, limit: int = 50) -> list[MeasuredLoss]:
    """Losses of GPU-sharing variants in the stored runs (runs of the time-slicing and partitions studies,
    or any run whose variants stack a GPU-sharing layer), newest runs first."""
    from nearmetal.api import load_results
    from nearmetal.store import Store

    store = Store(db)
    out: list[MeasuredLoss] = []
    for summary in store.list_runs(limit):
        try:
            results = load_results(summary.id, store=store)
        except Exception:  # a run that cannot be analysed (no trials yet) says nothing
            continue
        layer_kinds = {
            str(config.get("layer", ""))
            for trial in results.trials
            for config in (trial.layers or [])
            if isinstance(config, dict)
        }
        run_mechanism = _mechanism_of(summary.name) or next(
            (m for k in layer_kinds if (m := _mechanism_of(k))), None
        )
        if run_mechanism is None and not any("gpu" in k for k in layer_kinds):
            continue
        for row in results.table():
            if row["baseline"] or row.get("loss_pct") is None:
                continue
            mechanism = _mechanism_of(row["variant"]) or run_mechanism
            if mechanism is None:
                continue
            out.append(
                MeasuredLoss(
                    summary.id,
                    summary.name,
                    row["workload"],
                    row["variant"],
                    row["metric"],
                    row["loss_pct"],
                    row.get("ci_low_pct"),
                    row.get("ci_high_pct"),
                    mechanism,
                )
            )
    return out


def parse_layout(text: str) -> dict[str, int]:
    """``"2x2g.10gb,3x1g.5gb"`` (or ``-`` between parts, as in the seed's names) → ``{profile: count}``."""
    layout: dict[str, int] = {}
    for part in re.split(r"[,\s]+|-(?=\d+x)", text.strip()):
        if not part:
            continue
        match = re.fullmatch(r"(?:(\d+)x)?(.+)", part)
        assert match is not None
        count = int(match.group(1) or 1)
        layout[match.group(2)] = layout.get(match.group(2), 0) + count
    return layout
