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
from nearmetal.errors import NearmetalError
from nearmetal.host.cleanup import cleanup, find_leftovers
from nearmetal.layers import make_layer
from nearmetal.layers.base import TrialContext
from nearmetal.layers.container import ContainerConfig, ContainerLayer, cgroup_hybrid_with_v2_controllers
from nearmetal.layers.mounts import is_mounted, mounts
from nearmetal.layers.vm import EMULATED_CAVEAT, kernel_append
from nearmetal.layers.vm_guest import Cpio, newc_entry
from nearmetal.plan import plan_model
from nearmetal.telemetry import diskio
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
    assert "nearmetal_argv=" in kernel_append("9p", "msize=1", ["fio", "--name=x"])
    with pytest.raises(NearmetalError, match="too long"):
        kernel_append("9p", "", ["x" * 3000])


INJECTING_KEY = "X=1; echo INJECTED_$((6*7)); Y"


def test_guest_environment_is_data_and_bad_names_are_refused(tmp_path: Path) -> None:
    """Issue 18 #3: an env key reached the guest's shell unquoted (``export X=1; echo INJECTED_42; Y=…``)."""
    append = kernel_append("9p", "", ["/usr/bin/printenv"], {"A": "$(echo INJECTED_$((6*7)))"})
    # every item is base64 on the command line: no shell syntax of the plan appears there
    assert "INJECTED" not in append and "$(" not in append and "nearmetal_cmd" not in append
    for key in (INJECTING_KEY, "A=B", "", "1X"):
        with pytest.raises(NearmetalError, match="cannot be passed to the VM guest"):
            kernel_append("9p", "", ["/usr/bin/printenv"], {key: "v"})
    # and a plan with such a key is refused at load, before anything runs
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        json.dumps(
            {
                "name": "inject",
                "workloads": {
                    "c": {"kind": "command", "params": {"argv": ["printenv"], "env": {INJECTING_KEY: "v"}}}
                },
                "variants": {"vm": [{"layer": "vm", "accel": "tcg"}]},
            }
        )
    )
    from nearmetal.plan import load_plan

    with pytest.raises(Exception, match=r"cannot be empty or contain '='|not an environment variable name"):
        load_plan(plan)
    # a name without '=' that is still no identifier
    plan.write_text(plan.read_text().replace(json.dumps(INJECTING_KEY), '"1X"'))
    with pytest.raises(Exception, match="not an environment variable name"):
        load_plan(plan)


@needs_root
@needs_tool("qemu-system-x86_64", "busybox", "printenv")
def test_vm_guest_output_has_its_own_channel_and_env_stays_data(tmp_path: Path) -> None:
    """One short boot (emulated CPU): the command's stdout comes from its own virtio-serial port, apart from
    the console (whose ``reboot: Power down`` once landed inside fio's JSON); hostile environment values
    arrive byte for byte, unevaluated; the command's exit status comes back."""
    if not any(Path("/boot").glob("vmlinuz-*")):
        pytest.skip("no guest kernel: apt-get install linux-image-amd64")
    from nearmetal.layers.vm import VmConfig, VmLayer
    from nearmetal.workloads.base import ProcessSpec

    rid = run_id("vmc")
    ctx = TrialContext(run_id=rid, trial_key="k0", trial_dir=tmp_path)
    env = {
        "A": "$(echo INJECTED_$((6*7)))",
        "B": "x'; echo INJECTED_$((6*7)); '",
        "C": "two\nlines\n",
    }
    layer = VmLayer(VmConfig(share="9p", accel="tcg", memory="512m", cpus=1)).bind(ctx)
    with layer:
        # printenv exits 1 because MISSING is not set: the status must come back as 1
        spec = layer.wrap(
            ProcessSpec(argv=["printenv", "A", "B", "C", "MISSING"], env=env, cwd=tmp_path), ctx
        )
        execution = LocalBackend(sample_interval_s=None).execute([spec], tmp_path, timeout_s=240)
        stdout, stderr = execution.main.read_stdout(), execution.main.read_stderr()
    assert execution.main.returncode == 1, stderr[-2000:]
    assert stdout == f"{env['A']}\n{env['B']}\n{env['C']}\n", stderr[-2000:]
    assert "INJECTED_42" not in stdout + stderr
    # the console (boot log, power-off line) goes to stderr, never into the command's output
    assert "reboot" not in stdout and "nearmetal-exit" not in stdout
    assert find_leftovers(rid) == []


def test_backing_of_a_directory_and_io_modes(tmp_path: Path) -> None:
    backing = diskio.backing_of(tmp_path / "not" / "made" / "yet")
    assert backing.kind in ("disk", "memory", "unknown")
    if backing.kind == "disk":
        read, written = diskio.counters(backing.majmin) or (-1, -1)
        assert read > 0 and written >= 0
    if Path("/dev/shm").is_dir() and diskio.backing_of(Path("/dev/shm")).fstype == "tmpfs":
        assert diskio.backing_of(Path("/dev/shm")).kind == "memory"
    assert [diskio.io_mode(v) for v in (100.0, 71.0, 50.0, 29.0, 0.0, None)] == [
        "direct", "direct", "mixed", "cached", "cached", "?"
    ]  # fmt: skip


def _disk_backed(path: Path) -> bool:
    return diskio.backing_of(path).kind == "disk"


@needs_root
@needs_tool("fio", "bindfs")
@pytest.mark.parametrize("forward", [True, False])
def test_bindfs_direct_io_reaches_the_disk_and_the_disk_says_so(tmp_path: Path, forward: bool) -> None:
    """Issue 17 #1: through bindfs, fio's direct=1 read the page cache (2-4.5x bare metal). With O_DIRECT
    forwarded the disk moves about all of fio's bytes; without, the disk's own counters show the cache."""
    if not _disk_backed(tmp_path):
        pytest.skip("the test directory is not on a block device")
    rid = run_id("odi")
    ctx = TrialContext(run_id=rid, trial_key="k0", trial_dir=tmp_path)
    layer = layer_for({"layer": "bindfs", "forward_odirect": forward}, ctx)
    params = FioParams(rw="randread", numjobs=2, size="2m", bs="64k", runtime=0.5, drop_caches=True)
    with layer:
        assert ctx.endpoints["test_dir_backing"] == str(Path(ctx.endpoints["test_dir"]).parent / "source")
        metrics = run_fio(tmp_path, ctx, [layer], params)
    assert metrics["direct_io"] == 1 and metrics["caches_dropped"] == 1
    # the files were laid out and evicted before fio started: the first read of each block is the disk's
    assert metrics["disk_read_MiB"] >= 2 * 2 * 0.9
    if forward:
        assert diskio.io_mode(metrics["disk_read_share_pct"]) == "direct", metrics
    else:
        assert diskio.io_mode(metrics["disk_read_share_pct"]) == "cached", metrics
    assert find_leftovers(rid) == []


@needs_root
@needs_tool("fio", "fuse-overlayfs")
def test_fuse_overlayfs_direct_io_is_measured_as_cached(tmp_path: Path) -> None:
    """fuse-overlayfs 1.x clears O_DIRECT (and has no option to keep it): its rows say "cached", measured."""
    if not _disk_backed(tmp_path):
        pytest.skip("the test directory is not on a block device")
    rid = run_id("fov")
    ctx = TrialContext(run_id=rid, trial_key="k0", trial_dir=tmp_path)
    layer = layer_for({"layer": "fuse-overlayfs"}, ctx)
    params = FioParams(rw="read", numjobs=2, size="2m", bs="64k", runtime=0.5, drop_caches=True)
    with layer:
        assert ctx.endpoints["test_dir_backing"].endswith("/upper")
        metrics = run_fio(tmp_path, ctx, [layer], params)
    assert diskio.io_mode(metrics["disk_read_share_pct"]) == "cached", metrics
    assert find_leftovers(rid) == []


def test_fs_layers_table_shows_bandwidth_p99_io_mode_and_emulated_cpu(tmp_path: Path) -> None:
    """Every format shows, per row: bandwidth and p99 commit latency side by side, the measured I/O mode,
    and the emulated-CPU caveat the VM rows' trials carry (synthetic numbers, real store and renderers)."""
    from report_data import SyntheticCell, write_run
    from rich.console import Console

    import nearmetal
    from nearmetal.metrics import Metric
    from nearmetal.report.html import html_report
    from nearmetal.report.markdown import markdown_report
    from nearmetal.report.terminal import print_report
    from nearmetal.store import Store

    point = {"numjobs": 4, "rw": "randread"}
    cells = [
        SyntheticCell("fio", v, point, kind="fio", baseline=v == "bare-metal")
        for v in ("bare-metal", "bindfs", "fuse-overlayfs", "tmpfs", "vm-9p")
    ]
    shape = {  # bandwidth, p99 µs, disk read share %
        "bare-metal": (800, 4000, 100),
        "bindfs": (170, 20000, 100),
        "fuse-overlayfs": (1100, 9000, 2),
        "tmpfs": (14000, 1500, None),
        "vm-9p": (90, 40000, 1),
    }

    def metrics(cell: SyntheticCell, repeat: int, rng) -> list[Metric]:
        bw, p99, share = shape[cell.variant]
        out = [
            Metric("bw_MiBps", bw * rng.normal(1, 0.03), "MiB/s", "higher"),
            Metric("clat_p99_us", p99 * rng.normal(1, 0.03), "µs", "lower"),
        ]
        if share is not None:
            out.append(Metric("disk_read_share_pct", share * rng.normal(1, 0.01), "%", "higher"))
        return out

    def fields(cell: SyntheticCell) -> dict:
        return {
            "caveats": [EMULATED_CAVEAT] if cell.variant == "vm-9p" else [],
            "placement": {"fio_data": {"kind": "memory" if cell.variant == "tmpfs" else "disk"}},
        }

    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        results = nearmetal.load_results(
            write_run(store, cells, metrics, repeats=4, trial_fields=fields), store=store
        )
        console = Console(record=True, width=250)
        print_report(results, console)
        texts = {
            "terminal": console.export_text(),
            "markdown": markdown_report(results),
            "html": html_report(results),
        }
    finally:
        store.dispose()
    for fmt, text in texts.items():
        assert "p99 commit latency" in text and "bandwidth MiB/s" in text, fmt
        if fmt == "html":  # rows span several lines of markup: the cells' words must be there
            assert all(w in text for w in ("direct", "cached", "memory (tmpfs)", "emulated")), fmt
            continue
        # the I/O table's row of each variant (the one line that names the variant and an I/O mode)
        row = {
            v: next(line for line in text.splitlines() if v in line and any(m in line for m in MODES))
            for v in ("bindfs", "fuse-overlayfs", "tmpfs", "vm-9p")
        }
        assert "direct" in row["bindfs"] and "cached" in row["fuse-overlayfs"], fmt
        assert "memory" in row["tmpfs"] and "emulated" in row["vm-9p"], fmt
        assert "emulated" not in row["bindfs"], fmt


MODES = ("direct", "cached", "memory")


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
  fio: {kind: fio, params: {rw: read, numjobs: 2, size: 2m, runtime: 1}}
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
    # the I/O each row really did, measured from the disk: virtio-fs passes O_DIRECT on (allow_direct_io),
    # QEMU's 9p server drops it, so the 9p row's reads come from the host's page cache
    import nearmetal

    store = Store(doc["db"])
    try:
        results = nearmetal.load_results(doc["run_id"], store=store)
        share = {
            c.variant: cm.summary.mean
            for c in results.cells
            if (cm := results.analysis.metric(c.cell_id, "disk_read_share_pct")) is not None
        }
    finally:
        store.dispose()
    if _disk_backed(tmp_path):  # the trial directories are
        assert len(share) == 3, share
        assert diskio.io_mode(share["bare"]) == "direct" and diskio.io_mode(share["vm-virtiofs"]) == "direct"
        assert diskio.io_mode(share["vm-9p"]) == "cached", share
    # the emulated CPU beside the VM rows: a column of the loss table, and the I/O table's CPU column
    md = run_cli("report", doc["run_id"], "--format", "markdown").stdout
    assert "emulated CPU |" in md, md[-3000:]
    io_rows = [
        line
        for line in md.splitlines()
        if line.startswith("| vm-") and ("direct" in line or "cached" in line)
    ]
    assert len(io_rows) == 2 and all("emulated" in line for line in io_rows), md[-3000:]
