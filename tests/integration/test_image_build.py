"""The image-build workload: the parser on recorded outputs of buildah and podman, the Containerfile it
writes, the quick image-builds study run for real (buildah overlay/vfs, podman; kaniko skipped with the
reason), per-trial container storage removed after every trial, and nearmetal cleanup finding the storage a
killed run left (with a mount inside)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import needs_root, needs_tool
from paths import DATA

import nearmetal
from nearmetal.host.cleanup import cleanup, find_leftovers
from nearmetal.studies import study_path
from nearmetal.workloads import get_workload
from nearmetal.workloads.base import ParseError, TrialOutput, WorkloadContext
from nearmetal.workloads.image_build import (
    RUNROOT_RECORD,
    ImageBuildParams,
    containerfile,
    runroot_dir,
    storage_dir,
)


@pytest.mark.parametrize(
    ("name", "disk_mib"),
    [
        ("image-build-buildah-1.28-overlay.stdout", 5076 / 1024),
        ("image-build-buildah-1.28-vfs.stdout", 14460 / 1024),
        ("image-build-podman-4.3-overlay.stdout", 5112 / 1024),
    ],
)
def test_parser_on_recorded_builds(name: str, disk_mib: float) -> None:
    metrics = {m.name: m for m in get_workload("image-build").parse_file(DATA / name)}
    assert 5 < metrics["build_s"].value < 30 and metrics["build_s"].direction == "lower"
    assert metrics["disk_used_MiB"].value == pytest.approx(disk_mib)


def test_parser_says_what_is_missing() -> None:
    with pytest.raises(ParseError, match="nearmetal-build-seconds"):
        get_workload("image-build").parse(TrialOutput(stdout="Error: something\n", stderr=""))


def test_containerfile_builds_from_scratch_without_a_registry() -> None:
    text = containerfile(ImageBuildParams(layers=3, files_per_layer=10, file_kib=2))
    lines = text.splitlines()
    assert lines[:2] == ["FROM scratch", "COPY rootfs/ /"]
    assert sum(line.startswith("RUN ") for line in lines) == 3 and "head -c 2048" in text
    assert lines[-1] == "COPY payload/ /payload/"


def test_missing_builders_are_optional_requirements() -> None:
    reqs = {r.tool: r for r in get_workload("image-build").requires(ImageBuildParams(builder="kaniko"))}
    assert reqs["executor"].optional and "not in Debian" in reqs["executor"].install_hint()
    assert not reqs["busybox"].optional  # the base image cannot be made without it


@needs_root
@needs_tool("buildah", "podman", "busybox", "fuse-overlayfs")
def test_quick_study_builds_for_real_and_leaves_nothing(
    tmp_path: Path, db_url: str, run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    # no ordinary user named: the rootless rows are skipped with the reason (tests/test_rootless.py runs them)
    monkeypatch.delenv("NEARMETAL_ROOTLESS_USER", raising=False)
    monkeypatch.delenv("SUDO_USER", raising=False)
    result = nearmetal.run_plan(study_path("image-builds", quick=True), db=db_url, workdir=tmp_path / "runs")
    run_id = result.run_id
    by_variant: dict[str, list] = {}
    for record in result.records:
        assert record.status == "ok", record.error
        by_variant.setdefault(record.trial.cell.variant, []).append({m.name: m for m in record.metrics})
    rootful = {"buildah-overlay", "buildah-vfs", "buildah-fuse-overlayfs", "podman-overlay"}
    assert set(by_variant) == rootful
    for trials in by_variant.values():
        for metrics in trials:
            for name in ("build_s", "cpu_s", "max_rss_MiB", "tree_rss_peak_MiB", "disk_used_MiB", "energy_J"):
                assert name in metrics, name
            # the builder's tree at its peak holds at least its largest process (buildah/podman: tens of MiB)
            assert metrics["tree_rss_peak_MiB"].value >= metrics["max_rss_MiB"].value > 5
    # vfs keeps a full copy of the root filesystem per layer; overlay keeps only each layer's changes
    vfs_disk = min(m["disk_used_MiB"].value for m in by_variant["buildah-vfs"])
    overlay_disk = max(m["disk_used_MiB"].value for m in by_variant["buildah-overlay"])
    assert vfs_disk > 1.5 * overlay_disk
    # kaniko is not installed here: skipped with the reason, shown in the report
    results = nearmetal.load_results(run_id, db=db_url)
    for variant in ("rootless-buildah-overlay", "rootless-buildah-fuse-overlayfs", "rootless-buildah-vfs"):
        assert "NEARMETAL_ROOTLESS_USER" in results.run.info["skipped"][f"build/{variant}"]
    # each trial's evidence: built by root, with the storage its variant names
    for trial in results.trials:
        build = trial.placement["build"]
        assert build["uid"] == 0 and build["user_namespace"] is False
        fuse = trial.variant == "buildah-fuse-overlayfs"
        assert build["storage_driver"] == ("vfs" if trial.variant == "buildah-vfs" else "overlay")
        assert build["mount_program"] is fuse
    if "build/kaniko" in results.run.info["skipped"]:
        assert "executor is not installed" in results.run.info["skipped"]["build/kaniko"]
        markdown = run_cli("report", run_id, "--format", "markdown", check=True).stdout
        assert "**skipped**: build/kaniko: executor is not installed" in markdown
    # per-trial storage and runroots are gone, and nothing of the run stays mounted
    assert not list(Path("/var/tmp").glob(f"nearmetal-{run_id}-*"))
    for record in result.records:
        storage = Path("/var/tmp") / f"nearmetal-{run_id}-{record.trial.key}-containers"
        assert not runroot_dir(storage).exists()
    assert run_id not in Path("/proc/self/mountinfo").read_text()
    assert not find_leftovers(run_id)
    # the study promises peak memory: every format's table has the column
    table = run_cli("report", run_id, "--format", "markdown", check=True).stdout
    assert "peak memory MiB" in table
    json_rows = json.loads(run_cli("report", run_id, "--format", "json", check=True).stdout)["rows"]
    assert {r["variant"] for r in json_rows} == rootful


@needs_root
@needs_tool("buildah", "busybox")
def test_cleanup_finds_the_storage_a_killed_run_left(tmp_path: Path) -> None:
    run_id = f"imgtest{os.getpid()}"
    workload = get_workload("image-build")
    params = ImageBuildParams(layers=1, files_per_layer=5, context_files=2)
    ctx = WorkloadContext(trial_dir=tmp_path, is_root=True, run_id=run_id, trial_key="0123456789-r0")
    workload.prepare(params, ctx)
    spec = workload.processes(params, ctx)[0]
    proc = subprocess.run(
        spec.argv, env={**os.environ, **spec.env}, cwd=spec.cwd, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    storage = storage_dir(params, ctx)
    assert (storage / RUNROOT_RECORD).exists() and runroot_dir(storage).exists()
    # what a SIGKILLed run can leave: a mount inside the storage
    inner = storage / "left-mounted"
    inner.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "nearmetal-test", str(inner)], check=True, timeout=30)
    try:
        found = [leftover for leftover in find_leftovers(run_id) if leftover.kind == "container-storage"]
        assert [leftover.name for leftover in found] == [str(storage)]
        report = cleanup(run_id)
        assert not storage.exists() and not runroot_dir(storage).exists()
        assert str(inner) not in Path("/proc/self/mountinfo").read_text()
        assert [leftover.name for leftover in report.removed if leftover.kind == "container-storage"] == [
            str(storage)
        ]
    finally:
        subprocess.run(["umount", "-l", str(inner)], capture_output=True, timeout=30)


@pytest.mark.skipif(shutil.which("executor") is not None, reason="kaniko is installed here")
def test_a_plan_whose_every_cell_lacks_its_builder_stops_before_running(tmp_path: Path, db_url: str) -> None:
    from helpers import write_plan

    from nearmetal.errors import MissingToolError

    plan = write_plan(
        tmp_path,
        """
        name: only-kaniko
        workloads:
          build: {kind: image-build, params: {builder: kaniko}}
        variants: {kaniko: []}
        """,
    )
    with pytest.raises(MissingToolError, match="executor is not installed"):
        nearmetal.run_plan(plan, db=db_url, workdir=tmp_path / "runs")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
