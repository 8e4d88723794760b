"""Refusing, before anything runs, a plan this host or backend cannot run: places it would write that are
not allowed, layers the backend cannot apply, missing tools, missing privileges, more than the machine has,
a run directory that cannot be made. Each refusal is one error naming every problem and its fix."""

from __future__ import annotations

import functools
import os
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nearmetal.backends.base import Backend
from nearmetal.errors import MissingToolError, NearmetalError, PrivilegeError
from nearmetal.host.machine import ALLOW_LARGE_FIX, TooLargeError
from nearmetal.layers import Layer, make_layer
from nearmetal.plan import Cell, LoadedPlan
from nearmetal.plan.paths import check_plan_paths
from nearmetal.workloads import get_workload
from nearmetal.workloads.base import Requirement


@dataclass(frozen=True)
class Allowances:
    """What the person running nearmetal allowed on its command line, never a plan: ``paths``
    (``--allow-path``: places outside the run's directory the plan may write), ``large`` (``--allow-large``:
    more than the machine has), ``shared_workdir`` (``--allow-shared-workdir``: a workdir below a directory
    another user can write, issue 26), ``network`` (``--allow-network``: fetch ``energy.prometheus_url``)."""

    paths: tuple[Path, ...] = ()
    large: bool = False
    shared_workdir: bool = False
    network: bool = False


def _cell_requirements(cell: Cell) -> list[Requirement]:
    reqs = list(get_workload(cell.kind).requires(cell.params))
    for config in cell.layers:
        reqs += make_layer(config).requires()
    return reqs


def missing_requirements(loaded: LoadedPlan) -> dict[Requirement, list[str]]:
    """Every tool the plan needs that is not installed, with the cells that need it."""
    missing: dict[Requirement, list[str]] = {}
    for cell in loaded.cells:
        for req in _cell_requirements(cell):
            if not req.available():
                missing.setdefault(req, []).append(cell.key)
    return missing


def skip_unavailable_cells(loaded: LoadedPlan) -> dict[str, str]:
    """Leave out of the run the cells whose only missing tools are optional ones (another image builder);
    returns cell key → the reason, which the run stores and its report shows."""
    from nearmetal.layers.rootless import NO_USER, rootless_config, trial_user

    skipped: dict[str, str] = {}
    kept = []
    for cell in loaded.cells:
        missing = [r for r in _cell_requirements(cell) if not r.available()]
        rootless = rootless_config(cell.layers)
        if missing and all(r.optional for r in missing):
            skipped[cell.key] = "; ".join(f"{r.tool} is not installed ({r.install_hint()})" for r in missing)
        elif rootless is not None and os.geteuid() == 0 and trial_user(rootless) is None:
            # a study's rootless rows, run by root with no user to run them as
            skipped[cell.key] = NO_USER
        else:
            kept.append(cell)
    if skipped and not kept:
        raise MissingToolError(
            "every cell of the plan needs a tool this machine lacks; nothing was run:\n  "
            + "\n  ".join(f"{key}: {why}" for key, why in skipped.items()),
            fix="install one of them",
        )
    loaded.cells = kept
    return skipped


def refuse_before_running(loaded: LoadedPlan, backend: Backend, run_dir: Path, allow: Allowances) -> None:
    """Every refusal a run makes before anything runs: the plan's reach (``preflight``), the workdir's
    owners, the machine's size."""
    preflight(loaded, backend, allow.paths, allow.network)
    check_workdir(run_dir, allow.shared_workdir)
    check_resources(loaded, run_dir, allow.large)


def preflight(
    loaded: LoadedPlan,
    backend: Backend | None = None,
    allow_paths: Sequence[Path] = (),
    allow_network: bool = False,
) -> None:
    """Refuse, before anything runs, a plan this machine (or backend) cannot run: places it would write
    that are not allowed, layers the backend cannot apply, missing tools, missing privileges. A remote
    backend (Slurm, Kubernetes) runs the programs on its nodes or in its image: it checks tools and
    privileges its own way (``backend.check``). Network reach by the runner itself (energy.prometheus_url)
    needs ``allow_network`` (``--allow-network``)."""
    from nearmetal.reach import check_network

    check_plan_paths(loaded, allow_paths)
    check_network(loaded, allow_network)
    backend_name = backend.name if backend is not None else "local"
    unsupported = sorted(
        {
            config.layer
            for cell in loaded.cells
            for config in cell.layers
            if (allowed := make_layer(config).backends) is not None and backend_name not in allowed
        }
    )
    if unsupported:
        raise NearmetalError(
            f"layer(s) {', '.join(unsupported)} cannot run on the {backend_name} backend; nothing was run",
            fix="run the plan with a backend that applies them (e.g. --backend kubernetes for pod)",
        )
    if backend is not None and backend.remote:
        backend.check(loaded)  # a cluster backend's own tools and privileges; its nodes' are for it to say
        return
    missing = missing_requirements(loaded)
    if missing:
        lines = []
        for req, cells in missing.items():
            cells = list(dict.fromkeys(cells))
            shown = ", ".join(cells[:3]) + (f" and {len(cells) - 3} more" if len(cells) > 3 else "")
            if req.manager in ("device", "manual"):
                lines.append(f"{req.missing_text()} (needed by {shown}); {req.install_hint()}")
            else:
                lines.append(f"{req.missing_text()} (needed by {shown}); install it: {req.install_hint()}")
        raise MissingToolError(
            "the plan needs tools this machine lacks; nothing was run:\n  " + "\n  ".join(lines),
            fix=_install_fix(list(missing)),
        )
    raise_if_root_needed(loaded)


def _install_fix(missing: list[Requirement]) -> str:
    """One command per package manager (what to paste), then what no package manager can do."""
    debian = [r.package for r in missing if r.manager == "debian"]
    pypi = [r.package for r in missing if r.manager == "pypi"]
    steps = []
    if debian:
        steps.append("apt-get install -y " + " ".join(shlex.quote(p) for p in dict.fromkeys(debian)))
    if pypi:
        steps.append("pip install " + " ".join(shlex.quote(p) for p in dict.fromkeys(pypi)))
    steps += [r.install_hint() for r in missing if r.manager in ("device", "manual")]
    return "; ".join(dict.fromkeys(steps))


def _rootless_problems(loaded: LoadedPlan) -> tuple[list[str], set[str]]:
    """What is wrong with the plan's rootless layers (placement, user), and the users root runs trials as."""
    from nearmetal.host.userns import current_user
    from nearmetal.layers.rootless import rootless_config, trial_user

    problems: dict[str, list[str]] = {}
    users: set[str] = set()
    for cell in loaded.cells:
        kinds = [config.layer for config in cell.layers]
        config = rootless_config(cell.layers)
        if config is None:
            continue
        if kinds[0] != "rootless" or kinds.count("rootless") > 1:
            problems.setdefault(
                "the rootless layer must come first in its variant, once (the other layers use its namespace)",
                [],
            ).append(cell.key)
        if os.geteuid() == 0:
            user = trial_user(config)
            if user is None:
                problems.setdefault(
                    "the rootless layer needs user: NAME when nearmetal runs as root (the ordinary user its "
                    "trials run as)",
                    [],
                ).append(cell.key)
            else:
                users.add(user)
        elif config.user not in (None, current_user()):
            problems.setdefault(
                f"the rootless layer asks for user {config.user}, but nearmetal runs as {current_user()} "
                "(only root can run a trial as another user)",
                [],
            ).append(cell.key)
        if not config.inside:
            later = [make_layer(c) for c in cell.layers if c.layer != "rootless"]
            if any(layer.rootless_form for layer in later):
                problems.setdefault(
                    "rootless inside: false makes no user namespace, and the layers after it need one "
                    "(drop inside: false)",
                    [],
                ).append(cell.key)
    lines = []
    for message, cells in problems.items():
        shown = ", ".join(dict.fromkeys(cells[:3])) + (
            f" and {len(cells) - 3} more" if len(cells) > 3 else ""
        )
        lines.append(f"{message} ({shown})")
    return lines, users


def raise_if_root_needed(loaded: LoadedPlan) -> None:
    """Layers that need root in cells that run as an ordinary user (nearmetal run as one, or a variant with
    the ``rootless`` layer), named with why, the cells that use them and what to use without root; a layer
    with a rootless form is fine after a ``rootless`` layer. As root, the users rootless trials run as must
    exist and be able to start nearmetal. Before anything runs."""
    from nearmetal.layers.rootless import rootless_config
    from nearmetal.run.asuser import check_user_can_run

    as_root = os.geteuid() == 0
    problems, users = _rootless_problems(loaded)
    needing: dict[str, list[str]] = {}
    classes: dict[str, Layer[Any]] = {}
    for cell in loaded.cells:
        rootless = rootless_config(cell.layers)
        if as_root and rootless is None:
            continue  # root runs this cell as root
        for config in cell.layers:
            layer = make_layer(config)
            if not layer.needs_root:
                continue
            if layer.rootless_form and rootless is not None and rootless.inside:
                continue
            needing.setdefault(layer.kind, []).append(cell.key)
            classes[layer.kind] = layer
    if not needing and not problems:
        for user in sorted(users):
            check_user_can_run(user)
        return
    lines = list(problems)
    for kind, cells in needing.items():
        layer = classes[kind]
        shown = ", ".join(dict.fromkeys(cells[:3])) + (
            f" and {len(cells) - 3} more" if len(cells) > 3 else ""
        )
        because = f" ({layer.root_because})" if layer.root_because else ""
        if layer.rootless_form:
            alternative = (
                f"; without root: its rootless form, in your own user namespace: list {{layer: rootless}} "
                f"first in the variant ({layer.rootless_alternative or 'nearmetal doctor --check rootless-userns'})"
            )
        elif layer.rootless_alternative:
            alternative = f"; without root: {layer.rootless_alternative}"
        else:
            alternative = "; there is no rootless form of it"
        lines.append(f"layer {kind} needs root{because}, used by {shown}{alternative}")
    who = (
        "these cells run as an ordinary user (their variant has the rootless layer)"
        if as_root
        else f"nearmetal runs as uid {os.geteuid()}, not root"
    )
    raise PrivilegeError(
        f"this plan's layers change the host and {who}; nothing was run:\n  " + "\n  ".join(lines),
        fix="drop those variants, or run them without the rootless layer"
        if as_root
        else "run nearmetal as root (sudo nearmetal …), or drop those variants",
    )


# more trials than this in one run is a typo (repeats: 100000) more often than a plan
MAX_TRIALS = 20_000


def planned_trials(loaded: LoadedPlan) -> int:
    repeats = loaded.plan.repeats
    return int(len(loaded.cells) * (loaded.plan.warmup + max(repeats.min, repeats.max or 0)))


def check_resources(loaded: LoadedPlan, workdir: Path, allow_large: bool = False) -> None:
    """Each workload's own check that the host can hold its trials (disk, memory, CPUs), and the plan's
    size; one error naming every problem, before anything runs. ``allow_large`` skips them all."""
    if allow_large:
        return
    problems: dict[str, list[str]] = {}
    fixes: list[str] = []
    trials = planned_trials(loaded)
    if trials > MAX_TRIALS:
        hours = trials * min(c.timeout for c in loaded.cells) / 3600
        problems[
            f"the plan has up to {trials:,} trials (cells × (warm-up + repeats)), more than {MAX_TRIALS:,}; "
            f"at its shortest timeout that may take up to {hours:,.0f} hours"
        ] = ["the whole plan"]
        fixes.append("lower repeats or the matrix")
    for cell in loaded.cells:
        # a workload's check, and a layer's where it has one (tmpfs: its size fits in memory)
        checks: list[Callable[[], object]] = [
            functools.partial(get_workload(cell.kind).check_resources, cell.params, workdir)
        ]
        checks += [c for c in (getattr(make_layer(x), "check_resources", None) for x in cell.layers) if c]
        for check in checks:
            try:
                check()
            except NearmetalError as exc:
                problems.setdefault(exc.message, []).append(cell.key)
                if exc.fix and exc.fix not in fixes:
                    fixes.append(exc.fix)
    if problems:
        lines = []
        for message, cells in problems.items():
            shown = ", ".join(cells[:3]) + (f" and {len(cells) - 3} more" if len(cells) > 3 else "")
            lines.append(f"{message} ({shown})")
        fixes = [f.removesuffix(f", or {ALLOW_LARGE_FIX}") for f in fixes]
        raise TooLargeError(
            "the plan needs more than this machine has; nothing was run:\n  " + "\n  ".join(lines),
            fix="; ".join([*fixes, ALLOW_LARGE_FIX]),
        )


def check_workdir(run_dir: Path, allow_shared: bool = False) -> None:
    """The run's directory can be made and written: not in a kernel filesystem (/proc, /sys, /dev), not on a
    read-only filesystem, not below a file, not below a directory another user can write or owns (unless
    ``allow_shared``: issue 26); one line, before anything runs."""
    real = Path(os.path.realpath(run_dir))
    for pseudo in (Path("/proc"), Path("/sys"), Path("/dev")):
        if real == pseudo or pseudo in real.parents:
            raise NearmetalError(
                f"the run directory {run_dir} would be in {pseudo}, a kernel filesystem; nothing was run",
                fix="give --workdir a directory on a disk",
            )
    existing = real
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise NearmetalError(
            f"the run directory {run_dir} would be below {existing}, which is not a directory; nothing was run",
            fix="give --workdir a directory",
        )
    try:
        read_only = bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    if read_only or not os.access(existing, os.W_OK | os.X_OK):
        why = "is on a read-only filesystem" if read_only else "is not writable by this user"
        raise NearmetalError(
            f"the run directory {run_dir} cannot be made: {existing} {why}; nothing was run",
            fix="give --workdir a writable directory",
        )
    if not allow_shared:
        from nearmetal.host import safefs

        try:
            safefs.check_tree(existing)
            if real.exists():
                st = real.stat()
                if st.st_uid != os.geteuid():
                    raise safefs.UnsafePathError(f"{real} is owned by uid {st.st_uid}, not by this user")
        except safefs.UnsafePathError as exc:
            raise NearmetalError(
                f"the run directory {run_dir} is not safe: {exc.message}; nothing was run",
                fix="give --workdir a directory only root or you can write (or pass --allow-shared-workdir "
                "if you trust every user who can)",
            ) from None
