"""The workload image for the Kubernetes backend, built here and loaded into containerd (no registry needed).

The image is a Debian ``minbase`` root filesystem (``debootstrap`` from the host's Debian mirror) with the
Debian packages the plan's workloads require (``Workload.requires``: LAMMPS and Open MPI, stress-ng …),
written as a one-layer image archive in the ``docker save`` format (``manifest.json``, the image config, the
layer) — what ``ctr images import`` reads — and imported into containerd's ``k8s.io`` namespace, the one the
kubelet's CRI uses. Trials then name it with ``--image`` and run it with ``imagePullPolicy: Never``.

Archives are kept in the image cache (``$NEARMETAL_KUBE_CACHE/images``, default
``/var/cache/nearmetal/kubernetes/images``): ``scripts/services/kubernetes.sh start`` imports every archive there,
so a cluster started later has the image too. The image is named by its content (suite and packages):
``localhost/nearmetal/workloads:<suite>-<12 hex digits>``; building it again is instant.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nearmetal.errors import NearmetalError
from nearmetal.host import hostcmd

IMAGE_REPO = "localhost/nearmetal/workloads"
DEFAULT_CACHE = Path("/var/cache/nearmetal/kubernetes")
DEBOOTSTRAP_TIMEOUT_S = 1800
IMPORT_TIMEOUT_S = 600
# the image's own default argv (the backend always gives a command) and PATH
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class WorkloadImage:
    """A built image: its reference, its archive, what is in it, and how long building it took."""

    ref: str
    archive: Path
    packages: tuple[str, ...]
    built_s: float
    cached: bool
    loaded: bool = False


def image_cache() -> Path:
    return Path(os.environ.get("NEARMETAL_KUBE_CACHE") or DEFAULT_CACHE) / "images"


def plan_packages(plans: list[str]) -> list[str]:
    """The Debian packages the workloads of these plans (YAML paths or shipped study names) require."""
    from nearmetal.plan import load_plan
    from nearmetal.studies import study_names, study_path
    from nearmetal.workloads import get_workload

    packages: set[str] = set()
    for plan in plans:
        path = study_path(plan) if plan in study_names() and not Path(plan).exists() else Path(plan)
        loaded = load_plan(path)
        for cell in loaded.cells:
            for req in get_workload(cell.kind).requires(cell.params):
                if req.manager == "debian":
                    packages.add(req.package)
    return sorted(packages)


def image_ref(packages: list[str], suite: str = "bookworm") -> str:
    digest = hashlib.sha256(json.dumps([suite, sorted(packages)]).encode()).hexdigest()[:12]
    return f"{IMAGE_REPO}:{suite}-{digest}"


def _archive_name(ref: str) -> str:
    return ref.rpartition("/")[2].replace(":", "-") + ".tar"


def write_image_archive(rootfs: Path, ref: str, archive: Path) -> None:
    """A ``docker save`` archive of one layer holding ``rootfs``, tagged ``ref`` (what ``ctr images import``
    and ``podman load`` read). Written beside ``archive`` and renamed: a reader never sees half an image."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=archive.parent, prefix=".build-") as tmp:
        layer = Path(tmp) / "layer.tar"
        with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as tar:
            for entry in sorted(rootfs.iterdir()):
                tar.add(entry, arcname=entry.name, recursive=True)
        digest = hashlib.sha256()
        with layer.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        diff_id = digest.hexdigest()
        config: dict[str, Any] = {
            "architecture": "amd64",
            "os": "linux",
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "config": {"Env": [f"PATH={IMAGE_PATH}"], "Cmd": ["/bin/sh"], "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
            "history": [{"created_by": "nearmetal image build (debootstrap --variant=minbase)"}],
        }
        config_bytes = json.dumps(config, sort_keys=True).encode()
        config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
        manifest = [{"Config": config_name, "RepoTags": [ref], "Layers": [f"{diff_id}/layer.tar"]}]
        partial = Path(tmp) / "image.tar"
        with tarfile.open(partial, "w") as out:
            for name, data in (
                (config_name, config_bytes),
                ("manifest.json", json.dumps(manifest).encode()),
            ):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mtime = int(time.time())
                out.addfile(info, io.BytesIO(data))
            out.add(layer, arcname=f"{diff_id}/layer.tar")
        partial.replace(archive)


def debootstrap(packages: list[str], target: Path, suite: str, mirror: str | None) -> None:
    if shutil.which("debootstrap") is None:
        raise NearmetalError(
            "debootstrap is not installed (it builds the workload image's root filesystem)",
            fix="apt-get install -y debootstrap",
        )
    if os.geteuid() != 0:
        raise NearmetalError("building the workload image needs root (debootstrap)", fix="run it as root")
    argv = ["debootstrap", "--variant=minbase", f"--include={','.join(packages)}", suite, str(target)]
    if mirror:
        argv.append(mirror)
    hostcmd.run(
        argv,
        DEBOOTSTRAP_TIMEOUT_S,
        check=True,
        what="the workload image's root filesystem",
    )
    # the image holds no apt lists or package archives (debootstrap leaves its downloads behind)
    for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for path in (target / leftover).glob("*.deb" if "archives" in leftover else "*_*"):
            path.unlink(missing_ok=True)


def load_image(archive: Path, address: str | None = None) -> None:
    """Import an image archive into containerd's ``k8s.io`` namespace (the kubelet's)."""
    address = address or os.environ.get("CONTAINERD_ADDRESS")
    if not address:
        raise NearmetalError(
            "no containerd to load the image into",
            fix="give --containerd-address SOCKET (scripts/services/kubernetes.sh start prints CONTAINERD_ADDRESS)",
        )
    hostcmd.run(
        ["ctr", "--address", address, "--namespace", "k8s.io", "images", "import", str(archive)],
        IMPORT_TIMEOUT_S,
        check=True,
        what="loading the workload image into containerd",
        install_fix="apt-get install -y containerd",
    )


def build_workload_image(
    plans: list[str],
    *,
    extra_packages: list[str] | None = None,
    suite: str = "bookworm",
    mirror: str | None = None,
    cache: Path | None = None,
    load: bool = False,
    address: str | None = None,
    rebuild: bool = False,
) -> WorkloadImage:
    """Build (once; cached by content) the image with the packages these plans' workloads require, write its
    archive into the image cache, record it as the cluster's workload image (``workload.ref``) and, with
    ``load``, import it into containerd."""
    packages = sorted(set(plan_packages(plans)) | set(extra_packages or []))
    if not packages:
        raise NearmetalError("the plans' workloads require no Debian packages: nothing to put in an image")
    ref = image_ref(packages, suite)
    cache = cache or image_cache()
    archive = cache / _archive_name(ref)
    started = time.monotonic()
    cached = archive.is_file() and not rebuild
    if not cached:
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache, prefix=".rootfs-") as tmp:
            rootfs = Path(tmp) / "rootfs"
            debootstrap(packages, rootfs, suite, mirror)
            write_image_archive(rootfs, ref, archive)
    (cache / "workload.ref").write_text(ref + "\n")
    if load:
        load_image(archive, address)
    return WorkloadImage(ref, archive, tuple(packages), time.monotonic() - started, cached, load)
