"""The filesystem, container and VM layers with real mounts, real FUSE daemons, a real runc container, a real
QEMU guest and real fio. Every test names its host objects with its own run id and checks that none is left."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import is_root, needs_tool

from nearmetal.backends.local import LocalBackend
from nearmetal.cleanup import cleanup, find_leftovers
from nearmetal.errors import NearmetalError
from nearmetal.layers import make_layer
from nearmetal.layers.base import TrialContext
from nearmetal.layers.container import ContainerConfig, ContainerLayer, cgroup_hybrid_with_v2_controllers
from nearmetal.layers.mounts import is_mounted, mounts
from nearmetal.layers.vm import EMULATED_CAVEAT, kernel_append
from nearmetal.layers.vm_guest import Cpio, newc_entry
from nearmetal.plan import plan_model
from nearmetal.workloads.base import TrialOutput, WorkloadContext
from nearmetal.workloads.fio import FioParams, FioWorkload

needs_root = pytest.mark.skipif(not is_root(), reason="mounting needs root")
FS_LAYERS = {
    "overlayfs": ({"layer": "overlayfs"}, "overlay", None),
    "fuse-overlayfs": ({"layer": "fuse-overlayfs"}, "fuse.fuse-overlayfs", "fuse-overlayfs"),
    "bindfs": ({"layer": "bindfs"}, "fuse", "bindfs"),
    "tmpfs": ({"layer": "tmpfs", "size": "64m"}, "tmpfs", None),
    "squashfuse": ({"layer": "squashfuse", "files": 2, "file_size": "2m"}, "fuse.squashfuse", "squashfuse"),
}


def run_id(tag: str) -> str:
    return f"t{os.getpid()}{tag}{time.monotonic_ns() % 100000}"


def layer_for(config: dict, ctx: TrialContext):
    model = plan_model()
    variant = model.model_validate(
        {"name": "x", "workloads": {"f": {"kind": "fio"}}, "variants": {"v": [config]}}
    ).variants["v"]
    return make_layer(variant.layers[0]).bind(ctx)


def run_fio(tmp_path: Path, ctx: TrialContext, layers: list, params: FioParams) -> dict[str, float]:
    """What the runner does for one trial: layers set up, fio prepared, wrapped, run, parsed."""
    wl = FioWorkload()
    wctx = WorkloadContext(trial_dir=tmp_path, is_root=True, endpoints=ctx.endpoints)
    wl.prepare(params, wctx)
    processes = wl.processes(params, wctx)
    for layer in layers:
        processes = [layer.wrap(p, ctx) for p in processes]
    execution = LocalBackend(sample_interval_s=None).execute(processes, tmp_path, timeout_s=240)
    assert execution.main.returncode == 0, execution.main.read_stderr()[-2000:]
    files = {p.name: p for p in tmp_path.iterdir() if p.is_file()}
    out = TrialOutput(execution.main.read_stdout(), execution.main.read_stderr(), files)
    return {m.name: m.value for m in wl.parse(out, params)}


@needs_root
@needs_tool("fio")
@pytest.mark.parametrize("kind", list(FS_LAYERS))
def test_filesystem_layer_mounts_runs_fio_and_leaves_nothing(tmp_path: Path, kind: str) -> None:
    config, fstype, program = FS_LAYERS[kind]
    if program and not shutil.which(program):
        pytest.skip(f"needs {program}")
    rid = run_id(kind[:3])
    ctx = TrialContext(run_id=rid, trial_key="k0", trial_dir=tmp_path)
    layer = layer_for(config, ctx)
    rw = "read" if kind == "squashfuse" else "randwrite"
    params = FioParams(rw=rw, numjobs=2, size="2m", bs="64k", runtime=0.5, drop_caches=False)
    with layer:
        mountpoint = Path(ctx.endpoints["test_dir"])
        assert ctx.endpoints["test_dir_host"] == str(mountpoint)
        assert rid in str(mountpoint) and is_mounted(mountpoint)
        assert ctx.placement[kind]["fstype"] == fstype
        metrics = run_fio(tmp_path, ctx, [layer], params)
        assert metrics["bw_MiBps"] > 0 and metrics["direct_io"] == 1
        if kind == "overlayfs":
            # the writes went through the overlay into its upper directory
            assert sorted(p.name for p in (mountpoint.parent / "upper").iterdir()) == ["job0.dat", "job1.dat"]
    assert not is_mounted(mountpoint) and not mountpoint.parent.exists()
    assert find_leftovers(rid) == []


@needs_root
@needs_tool("bindfs")
def test_layers_stack_bindfs_over_an_overlay(tmp_path: Path) -> None:
    rid = run_id("stk")
    ctx = TrialContext(run_id=rid, trial_key="k0", trial_dir=tmp_path)
    overlay, bindfs = layer_for({"layer": "overlayfs"}, ctx), layer_for({"layer": "bindfs"}, ctx)
    with overlay, bindfs:
        assert ctx.placement["bindfs"]["source"] == ctx.placement["overlayfs"]["mountpoint"]
        (Path(ctx.endpoints["test_dir"]) / "f").write_text("x")
        assert (Path(ctx.placement["overlayfs"]["mountpoint"]).parent / "upper" / "f").read_text() == "x"
    assert find_leftovers(rid) == []


@needs_root
def test_filesystem_layer_after_a_container_layer_refuses(tmp_path: Path) -> None:
    ctx = TrialContext(run_id=run_id("ord"), trial_key="k0", trial_dir=tmp_path)
    ctx.endpoints.update(test_dir="/nearmetal/test", test_dir_host=str(tmp_path))
    with (
        pytest.raises(NearmetalError, match="before the container or vm layer"),
        layer_for({"layer": "tmpfs"}, ctx),
    ):
        pass
    assert not any(ctx.run_id in point for point, _ in mounts())


@needs_root
@needs_tool("bindfs")
def test_cleanup_removes_what_a_killed_run_left(tmp_path: Path) -> None:
    """A run killed by SIGKILL never tears down: its FUSE daemon and mounts stay until cleanup finds them."""
    rid = run_id("kil")
    ctx = TrialContext(run_id=rid, trial_key="k0", trial_dir=tmp_path)
    overlay, bindfs = layer_for({"layer": "overlayfs"}, ctx), layer_for({"layer": "bindfs"}, ctx)
    overlay.setup(ctx)
    bindfs.setup(ctx)  # no teardown: what SIGKILL leaves
    daemon = bindfs.daemon
    kinds = sorted(leftover.kind for leftover in find_leftovers(rid))
    # the bindfs daemon is found by its arguments (and by NEARMETAL_RUN_ID when a runner started it)
    assert kinds[:2] == ["mount (fuse)", "mount (overlay)"] and "process" in kinds
    report = cleanup(rid)
    assert report.failed == [] and len(report.removed) >= 3
    assert find_leftovers(rid) == []
    assert daemon is not None and daemon.wait(timeout=10) is not None


@needs_root
def test_tmpfs_larger_than_memory_is_refused(tmp_path: Path) -> None:
    ctx = TrialContext(run_id=run_id("big"), trial_key="k0", trial_dir=tmp_path)
    with (
        pytest.raises(NearmetalError, match="more memory than"),
        layer_for({"layer": "tmpfs", "size": "64t"}, ctx),
    ):
        pass
    assert find_leftovers(ctx.run_id) == []


@needs_root
@needs_tool("runc", "fio")
def test_runc_container_runs_fio_on_the_bind_mounted_test_dir(tmp_path: Path) -> None:
    rid = run_id("ctr")
    ctx = TrialContext(run_id=rid, trial_key="k0", trial_dir=tmp_path)
    overlay = layer_for({"layer": "overlayfs"}, ctx)
    container = ContainerLayer(ContainerConfig(runtime="runc")).bind(ctx)
    params = FioParams(rw="write", numjobs=2, size="2m", runtime=0.5, drop_caches=False)
    with overlay, container:
        assert ctx.endpoints["test_dir"] == "/nearmetal/test"
        upper = Path(ctx.placement["overlayfs"]["mountpoint"]).parent / "upper"
        metrics = run_fio(tmp_path, ctx, [overlay, container], params)
        assert metrics["bw_MiBps"] > 0
        # fio in the container wrote through the bind mount into the host's overlay
        assert sorted(p.name for p in upper.iterdir()) == ["job0.dat", "job1.dat"]
        config = json.loads(next(tmp_path.rglob("config.json")).read_text())
        assert config["process"]["args"][0] == "fio" and config["root"]["readonly"] is True
    listed = subprocess.run(["runc", "list", "-q"], capture_output=True, text=True, timeout=30).stdout
    assert rid not in listed
    assert find_leftovers(rid) == []


@needs_root
@needs_tool("crun")
def test_crun_on_a_hybrid_cgroup_host_is_refused_with_the_reason(tmp_path: Path) -> None:
    if not cgroup_hybrid_with_v2_controllers():
        pytest.skip("this host is not a cgroup hybrid with v2 controllers")
    ctx = TrialContext(run_id=run_id("crn"), trial_key="k0", trial_dir=tmp_path)
    with (
        pytest.raises(NearmetalError, match="hybrid mode"),
        ContainerLayer(ContainerConfig(runtime="crun")).bind(ctx),
    ):
        pass
    assert find_leftovers(ctx.run_id) == []


def test_newc_archive_layout() -> None:
    entry = newc_entry("init", 0o100755, b"abc", ino=7)
    assert entry.startswith(b"070701") and len(entry) % 4 == 0
    assert int(entry[6:14], 16) == 7 and int(entry[54:62], 16) == 3  # inode and file size fields
    archive = Cpio()
    archive.file("a/b/c", b"x")
    data = archive.finish()
    names = [n for n in (b"a\0", b"a/b\0", b"a/b/c\0", b"TRAILER!!!\0") if n in data]
    assert len(names) == 4


def test_guest_command_too_long_for_the_kernel_command_line() -> None:
    assert "nearmetal_cmd=" in kernel_append("9p", "msize=1", "fio --name=x")
    with pytest.raises(NearmetalError, match="too long"):
        kernel_append("9p", "", "x" * 3000)


@pytest.mark.slow
@needs_root
@needs_tool("qemu-system-x86_64", "fio", "busybox")
def test_vm_boots_and_runs_fio_over_9p_and_virtio_fs(tmp_path: Path, run_cli) -> None:
    """One short boot per share (emulated CPU), through the real runner; nothing left behind."""
    if not any(Path("/boot").glob("vmlinuz-*")):
        pytest.skip("no guest kernel: apt-get install linux-image-amd64")
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        """
name: vm-shares
workloads:
  fio: {kind: fio, params: {rw: randwrite, numjobs: 2, size: 2m, runtime: 1, drop_caches: false}}
variants:
  bare: []
  vm-9p: [{layer: vm, share: 9p, accel: tcg, memory: 768m}]
  vm-virtiofs: [{layer: vm, share: virtiofs, accel: tcg, memory: 768m}]
repeats: 1
timeout: 240s
"""
    )
    proc = run_cli("run", str(plan), "--json", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout.splitlines()[-1])
    rows = {r["variant"]: r for r in doc["rows"]}
    assert rows["vm-9p"]["n"] == 1 and rows["vm-9p"]["mean"] > 0, proc.stderr[-3000:]
    assert rows["vm-virtiofs"]["n"] == 1 and rows["vm-virtiofs"]["mean"] > 0, proc.stderr[-3000:]
    from nearmetal.store import Store

    store = Store(doc["db"])
    try:
        trials = {t.variant: t for t in store.trials(doc["run_id"])}
    finally:
        store.dispose()
    assert EMULATED_CAVEAT in (trials["vm-9p"].caveats or [])
    assert trials["vm-virtiofs"].placement["vm"]["share"] == "virtiofs"
    assert not (trials["bare"].caveats or [])
    assert find_leftovers(doc["run_id"]) == []
