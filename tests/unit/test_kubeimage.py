"""The workload image for the Kubernetes backend (``nearmetal.kubeimage``, ``nearmetal image build``): the
packages come from the plan's workloads and the archive is what ``ctr images import`` reads. containerd's
import, the debootstrap build (~3 minutes) and the cached second build run against the single-node cluster in
test_kubernetes_node.py."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

from nearmetal.kubeimage import IMAGE_REPO, image_ref, plan_packages, write_image_archive


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
