"""Container image builds (seed 001, "Rootless container builds on Kubernetes"): buildah and podman with the
overlay or vfs storage driver, and buildkit or kaniko when installed, building a Containerfile from a base
made without any registry (``FROM scratch`` plus a static busybox root filesystem copied from the host).

Every trial gets its own container storage (``/var/tmp/nearmetal-<run>-<trial>-containers``), removed after
the trial (``cleanup``) and, after a killed run, by ``nearmetal cleanup`` (``cleanup.find_container_storage``).
Metrics: ``build_s`` (the builder's wall time), ``disk_used_MiB`` (the storage after the build); CPU time
and peak memory come from the backend's telemetry of the builder's process tree (``cpu_s``,
``max_rss_MiB``, ``tree_rss_peak_MiB``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
from functools import partial
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from nearmetal.errors import NearmetalError
from nearmetal.host import hostcmd, safefs
from nearmetal.host.leftovers import Leftover, finder, host_prefix
from nearmetal.host.mountinfo import unmount_below
from nearmetal.metrics import Metric
from nearmetal.workloads.base import (
    ParseError,
    ProcessSpec,
    Requirement,
    TrialOutput,
    Workload,
    WorkloadContext,
    WorkloadParams,
    register_workload,
)

STORAGE_SUFFIX = "containers"
RUNROOT_RECORD = "runroot.path"
DEFAULT_STORAGE_BASE = "/var/tmp"
IMAGE_TAG = "localhost/nearmetal-build:latest"
# the builder's own output goes first; these lines come from the wrapper after it
BUILD_MARK = "nearmetal-build-seconds"
DISK_MARK = "nearmetal-disk-kib"
IDS_MARK = "nearmetal-build-ids"
DRIVER_MARK = "nearmetal-build-driver"
BUSYBOX_APPLETS = ("sh", "mkdir", "head", "cat", "ls", "rm", "cp", "echo", "seq", "test")

# times the builder alone (date before and after), then measures the storage it left; exits with the
# builder's status. Arguments are passed positionally, never interpolated.
WRAPPER = (
    'start=$(date +%s.%N); "$@"; rc=$?; end=$(date +%s.%N); '
    f'echo "{BUILD_MARK} $start $end"; '
    f'if [ -d "$NEARMETAL_STORAGE" ]; then echo "{DISK_MARK} $(du -sk "$NEARMETAL_STORAGE" | cut -f1)"; fi; '
    # evidence: the uid the builder ran as (and the user namespace's first mapping: "0 1001 1" inside one),
    # the storage driver's own directory and whether it mounted through a program (fuse-overlayfs)
    f'echo "{IDS_MARK} $(id -u) $(head -n 1 /proc/self/uid_map)"; '
    'for d in overlay vfs; do if [ -d "$NEARMETAL_STORAGE/root/$d" ]; then '
    f'echo "{DRIVER_MARK} $d $(cat "$NEARMETAL_STORAGE/root/$d/.has-mount-program" 2>/dev/null)"; fi; done; '
    "exit $rc"
)
FUSE_OVERLAYFS = "/usr/bin/fuse-overlayfs"


class ImageBuildParams(WorkloadParams):
    builder: Literal["buildah", "podman", "buildkit", "kaniko"] = Field(
        "buildah", description="buildah and podman from Debian; buildkit and kaniko when installed"
    )
    storage_driver: Literal["overlay", "vfs", "fuse-overlayfs"] = Field(
        "overlay",
        description="containers/storage driver (buildah, podman): overlay (the kernel's; in a user namespace when "
        "rootless), fuse-overlayfs (overlay through overlay.mount_program, rootless Podman's fallback), vfs "
        "(copies every layer)",
    )
    layers: int = Field(3, ge=1, le=50, description="RUN steps, each writing its own files")
    files_per_layer: int = Field(200, ge=0, le=200_000)
    file_kib: int = Field(4, ge=0, le=1 << 20, description="size of each file written by RUN")
    context_files: int = Field(100, ge=0, le=200_000, description="files COPYed from the build context")
    cache_layers: bool = Field(True, description="commit a layer per instruction (docker's default)")
    isolation: Literal["chroot", "oci"] = Field(
        "chroot", description="how RUN steps run (buildah/podman): chroot works in pods and on cgroup v1"
    )
    storage_base: str = Field(
        DEFAULT_STORAGE_BASE,
        description="where the per-trial container storage is made (nearmetal cleanup looks in /var/tmp)",
    )


def storage_dir(params: ImageBuildParams, ctx: WorkloadContext) -> Path:
    name = ctx.host_name(STORAGE_SUFFIX) if ctx.run_id else f"nearmetal-{ctx.trial_dir.name}-{STORAGE_SUFFIX}"
    return Path(params.storage_base) / name


RUNROOT_BASES = (Path("/run"), Path("/tmp"))


def runroot_dir(storage: Path) -> Path:
    """podman refuses a runroot longer than 50 characters: a short one derived from the storage path, under
    /run, or /tmp for a rootless trial (which cannot write /run). Its path is written into the storage
    (``RUNROOT_RECORD``) so cleanup finds it from there."""
    digest = hashlib.sha1(str(storage).encode()).hexdigest()[:12]
    base = RUNROOT_BASES[0] if os.access(RUNROOT_BASES[0], os.W_OK) else RUNROOT_BASES[1]
    return base / f"nearmetal-rr-{digest}"


def containerfile(params: ImageBuildParams) -> str:
    lines = ["FROM scratch", "COPY rootfs/ /"]
    for layer in range(params.layers):
        lines.append(
            f"RUN mkdir -p /data/layer{layer} && cd /data/layer{layer} && i=0 && "
            f"while [ $i -lt {params.files_per_layer} ]; do "
            f"head -c {params.file_kib * 1024} /dev/urandom > f$i; i=$((i+1)); done"
        )
    lines.append("COPY payload/ /payload/")
    return "\n".join(lines) + "\n"


def _is_static(binary: Path) -> bool:
    # a dynamically linked ELF names its loader (PT_INTERP); a static one has none to name
    data = binary.read_bytes()
    return b"/ld-linux" not in data and b"ld-musl" not in data


@register_workload
class ImageBuildWorkload(Workload[ImageBuildParams]):
    kind = "image-build"
    Params = ImageBuildParams
    description = "a Containerfile built by buildah/podman (overlay or vfs), buildkit or kaniko; no registry"
    primary_metric = "build_s"

    def requires(self, params: ImageBuildParams) -> list[Requirement]:
        reqs = [Requirement("busybox", "busybox-static", purpose="the base image's root filesystem")]
        if params.builder in ("buildah", "podman"):
            reqs.append(
                Requirement(params.builder, params.builder, purpose="the image builder", optional=True)
            )
            if params.storage_driver == "fuse-overlayfs":
                reqs.append(
                    Requirement(
                        "fuse-overlayfs", "fuse-overlayfs", purpose="the overlay mount program", optional=True
                    )
                )
        elif params.builder == "buildkit":
            reqs.append(
                Requirement(
                    "buildctl-daemonless.sh",
                    "the moby/buildkit release (buildctl, buildkitd, buildctl-daemonless.sh; not in Debian)",
                    manager="manual",
                    purpose="the image builder",
                    optional=True,
                )
            )
        else:
            reqs.append(
                Requirement(
                    "executor",
                    "kaniko's executor (the gcr.io/kaniko-project/executor image's /kaniko/executor; not in "
                    "Debian)",
                    manager="manual",
                    purpose="the image builder",
                    optional=True,
                )
            )
        return reqs

    def prepare(self, params: ImageBuildParams, ctx: WorkloadContext) -> None:
        context = ctx.trial_dir / "context"
        if context.exists():
            shutil.rmtree(context)
        rootfs_bin = context / "rootfs" / "bin"
        rootfs_bin.mkdir(parents=True)
        busybox = shutil.which("busybox")
        if busybox is None or not _is_static(Path(busybox)):
            raise NearmetalError(
                "the base image needs a statically linked busybox",
                fix="apt-get install -y busybox-static",
            )
        shutil.copy2(busybox, rootfs_bin / "busybox")
        for applet in BUSYBOX_APPLETS:
            (rootfs_bin / applet).symlink_to("busybox")
        (context / "rootfs" / "tmp").mkdir()
        payload = context / "payload"
        payload.mkdir()
        block = os.urandom(params.file_kib * 1024)
        for i in range(params.context_files):
            (payload / f"file{i}").write_bytes(block)
        (context / "Containerfile").write_text(containerfile(params))
        storage = storage_dir(params, ctx)
        if storage.exists() or storage.is_symlink():
            remove_storage(storage)
        # a predictable name in a shared directory: made (or verified) as this user's own, not a link, and
        # written through its descriptor (issue 26)
        fd = safefs.private_dir(storage, 0o755)
        try:
            record = safefs.open_beneath(fd, RUNROOT_RECORD, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            with os.fdopen(record, "w") as f:
                f.write(str(runroot_dir(storage)) + "\n")
        finally:
            os.close(fd)

    def processes(self, params: ImageBuildParams, ctx: WorkloadContext) -> list[ProcessSpec]:
        context = ctx.trial_dir / "context"
        storage = storage_dir(params, ctx)
        env = {"NEARMETAL_STORAGE": str(storage)}
        if params.builder in ("buildah", "podman"):
            argv = [
                params.builder,
                "--root",
                str(storage / "root"),
                "--runroot",
                str(runroot_dir(storage)),
                "--storage-driver",
                "overlay" if params.storage_driver == "fuse-overlayfs" else params.storage_driver,
            ]
            if params.storage_driver == "fuse-overlayfs":
                argv += ["--storage-opt", f"overlay.mount_program={FUSE_OVERLAYFS}"]
            if params.builder == "podman":
                # no systemd or journald needed: the trial runs wherever nearmetal runs
                argv += [
                    "--cgroup-manager",
                    "cgroupfs",
                    "--events-backend",
                    "none",
                    "--tmpdir",
                    str(storage / "tmp"),
                ]
            argv += [
                "build",
                "--isolation",
                params.isolation,
                f"--layers={'true' if params.cache_layers else 'false'}",
                "--quiet",
                "-t",
                IMAGE_TAG,
                "-f",
                str(context / "Containerfile"),
                str(context),
            ]
            env["BUILDAH_ISOLATION"] = params.isolation
        elif params.builder == "buildkit":
            argv = [
                "buildctl-daemonless.sh",
                "build",
                "--frontend",
                "dockerfile.v0",
                "--local",
                f"context={context}",
                "--local",
                f"dockerfile={context}",
                "--opt",
                "filename=Containerfile",
                "--output",
                f"type=oci,dest={storage / 'image.tar'}",
            ]
            env["BUILDKITD_FLAGS"] = f"--root={storage / 'buildkit'}"
        else:
            argv = [
                "executor",
                "--context",
                f"dir://{context}",
                "--dockerfile",
                str(context / "Containerfile"),
                "--no-push",
                "--tar-path",
                str(storage / "image.tar"),
                "--destination",
                IMAGE_TAG,
                "--kaniko-dir",
                str(storage / "kaniko"),
            ]
        resolved = shutil.which(argv[0]) or argv[0]
        return [
            ProcessSpec(
                argv=["/bin/sh", "-c", WRAPPER, "nearmetal-image-build", resolved, *argv[1:]],
                env=env,
                cwd=ctx.trial_dir,
            )
        ]

    def parse(self, output: TrialOutput, params: ImageBuildParams | None = None) -> list[Metric]:
        text = output.stdout
        times = re.search(rf"^{BUILD_MARK} ([0-9.]+) ([0-9.]+)\s*$", text, re.MULTILINE)
        if not times:
            raise ParseError(f"no '{BUILD_MARK}' line: the build wrapper did not finish")
        metrics = [Metric("build_s", float(times.group(2)) - float(times.group(1)), "s", "lower")]
        disk = re.search(rf"^{DISK_MARK} ([0-9]+)\s*$", text, re.MULTILINE)
        if disk:
            metrics.append(Metric("disk_used_MiB", int(disk.group(1)) / 1024, "MiB", "lower"))
        return metrics

    def placement(self, output: TrialOutput, params: ImageBuildParams | None = None) -> dict[str, Any]:
        """What the build really used: the builder's uid (and its user namespace's first mapping), the
        storage driver's directory and whether overlay mounted through a program (fuse-overlayfs)."""
        text = output.stdout
        build: dict[str, Any] = {}
        ids = re.search(rf"^{IDS_MARK} (\d+)(?: +(\d+) +(\d+) +(\d+))?\s*$", text, re.MULTILINE)
        if ids:
            build["uid"] = int(ids.group(1))
            if ids.group(2) is not None:
                inside, outside = int(ids.group(2)), int(ids.group(3))
                build["uid_host"] = outside + build["uid"] - inside
                build["user_namespace"] = (inside, outside) != (0, 0)
        drivers = re.findall(rf"^{DRIVER_MARK} (\w+) ?(\w*)\s*$", text, re.MULTILINE)
        if drivers:
            build["storage_driver"] = "+".join(d for d, _ in drivers)
            build["mount_program"] = any(flag == "true" for _, flag in drivers)
        return {"build": build} if build else {}

    def cleanup(self, params: ImageBuildParams, ctx: WorkloadContext) -> None:
        storage = storage_dir(params, ctx)
        if params.builder == "podman" and os.geteuid() != 0:
            stop_podman_pause(storage)
        remove_storage(storage)
        with contextlib.suppress(OSError):
            shutil.rmtree(ctx.trial_dir / "context")

    def tool_versions(self) -> dict[str, str]:
        out = {}
        for tool in ("buildah", "podman"):
            if shutil.which(tool) and (found := hostcmd.version([tool, "--version"], r"version\s+(\S+)")):
                out[tool] = found
        return out


def stop_podman_pause(storage: Path) -> None:
    """Rootless podman leaves a ``podman pause`` process holding its user namespace for the next command; a
    trial's build is the last, so it goes with the trial (its pid file is in podman's tmpdir or runtime dir)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    candidates = [
        storage / "tmp" / "pause.pid",
        *([Path(runtime) / "libpod/tmp/pause.pid"] if runtime else []),
    ]
    for pid_file in candidates:
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text().strip())
            if Path(f"/proc/{pid}/comm").read_text().strip() == "podman pause":
                os.kill(pid, 9)


def remove_storage(path: Path) -> None:
    """Unmount whatever the storage driver left mounted below ``path`` (and below its runroot), then delete
    both."""
    runroot = None
    # the record is read only from a real directory (never through a link planted at the name), and only a
    # runroot derived from this storage path is believed (not another run's)
    with contextlib.suppress(OSError, NearmetalError):
        fd = safefs.open_dir(path, check=False)
        try:
            with os.fdopen(safefs.open_beneath(fd, RUNROOT_RECORD), "r") as f:
                recorded = Path(f.read(4096).strip())
        finally:
            os.close(fd)
        digest = runroot_dir(path).name
        if recorded in [base / digest for base in RUNROOT_BASES]:
            runroot = recorded
    for below in (path, runroot):
        if below is not None:
            unmount_below(below)
    for target in [p for p in (runroot, path) if p is not None and (p.exists() or p.is_symlink())]:
        if target.is_symlink():
            target.unlink()  # planted at the name: the link goes, never what it points to
            continue
        # vfs/overlay layers contain read-only directories owned by mapped ids: rmtree as root copes
        shutil.rmtree(target, ignore_errors=True)
        if target.exists():
            rm = ["rm", "-rf", "--one-file-system", str(target)]
            if os.geteuid() != 0 and shutil.which("unshare"):
                # a rootless build's files belong to the user's subordinate ids: remove them as root of a
                # user namespace that maps them (as `buildah unshare rm -rf` would)
                rm = ["unshare", "--user", "--map-root-user", "--map-auto", "--", *rm]
            hostcmd.run(rm, 300, what="removing a build's storage")


@finder
def find_container_storage(run_id: str | None = None) -> list[Leftover]:
    """Per-trial container storage of image-build trials (``/var/tmp/nearmetal-<run>-<trial>-containers``)
    with whatever the storage driver left mounted inside it."""
    base = Path(DEFAULT_STORAGE_BASE)
    if not base.is_dir():
        return []
    return [
        Leftover("container-storage", str(path), partial(remove_storage, path), priority=40)
        for path in sorted(base.glob(f"{host_prefix(run_id)}*-{STORAGE_SUFFIX}"))
        if path.is_dir()
    ]
