"""The workload image for the Kubernetes backend (``nearmetal.kubeimage``, ``nearmetal image build``): the
packages come from the plan's workloads, the archive is what ``ctr images import`` reads, and — where the
single-node cluster of scripts/services/kubernetes.sh runs — containerd really imports it and a second build
is instant (the debootstrap itself, ~3 minutes, runs in test_kubernetes_node.py's fixture when no image is
cached)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from nearmetal.kubeimage import IMAGE_REPO, image_cache, image_ref, plan_packages, write_image_archive


def test_the_packages_are_the_ones_the_plans_workloads_require() -> None:
    assert plan_packages(["cpu-quota"]) == ["lammps", "openmpi-bin", "stress-ng"]
    ref = image_ref(["stress-ng", "lammps"])
    # named by content: the same packages in any order give the same image
    assert ref == image_ref(["lammps", "stress-ng"]) and ref.startswith(f"{IMAGE_REPO}:bookworm-")
    assert image_ref(["lammps"]) != ref


def _rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/hello").write_text("#!/bin/sh\necho hello\n")
    (root / "usr/bin/hello").chmod(0o755)
    (root / "bin").symlink_to("usr/bin")
    return root


def test_the_archive_is_a_docker_save_image_of_one_layer(tmp_path: Path) -> None:
    ref = "localhost/nearmetal/test:one"
    archive = tmp_path / "out/image.tar"
    write_image_archive(_rootfs(tmp_path), ref, archive)
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
        assert manifest[0]["RepoTags"] == [ref]
        config = json.load(tar.extractfile(manifest[0]["Config"]))
        layer = tar.extractfile(manifest[0]["Layers"][0]).read()
    # the image config names the layer by the digest of its bytes (what containerd checks on import)
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(layer).hexdigest()]
    assert config["os"] == "linux" and any(e.startswith("PATH=") for e in config["config"]["Env"])
    with tarfile.open(fileobj=__import__("io").BytesIO(layer)) as inner:
        members = {m.name: m for m in inner.getmembers()}
    assert members["usr/bin/hello"].mode & 0o111 and members["bin"].issym()
    assert not list(archive.parent.glob(".build-*"))  # nothing half-written is left beside it


def test_containerd_imports_the_archive(tmp_path: Path) -> None:
    address = os.environ.get("CONTAINERD_ADDRESS")
    if not address or not Path(address).exists() or shutil.which("ctr") is None:
        pytest.skip("no containerd: bash scripts/services/kubernetes.sh start prints CONTAINERD_ADDRESS")
    from nearmetal.kubeimage import load_image

    ref = "localhost/nearmetal/test:import-" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:8]
    archive = tmp_path / "image.tar"
    write_image_archive(_rootfs(tmp_path), ref, archive)
    ctr = ["ctr", "--address", address, "--namespace", "k8s.io", "images"]
    try:
        load_image(archive, address)
        listed = subprocess.run([*ctr, "ls", "-q"], capture_output=True, text=True, timeout=60).stdout
        assert ref in listed.split()
    finally:
        subprocess.run([*ctr, "rm", ref], capture_output=True, timeout=60)


def test_a_built_image_is_cached(run_cli) -> None:
    cached = image_cache() / (
        image_ref(plan_packages(["cpu-quota"])).rpartition("/")[2].replace(":", "-") + ".tar"
    )
    if not cached.is_file():
        pytest.skip(f"no workload image built yet ({cached}): nearmetal image build")
    proc = run_cli("image", "build", "cpu-quota", "--no-load", timeout=120, check=True)
    assert proc.stdout.strip() == image_ref(["lammps", "openmpi-bin", "stress-ng"])
    assert "(cached;" in proc.stderr
