"""The default install has no PyTorch: the plans that need it are refused before anything runs, with the
command that installs it, and the rest runs as before. Tested with a Python that cannot import torch (this
environment's packages without torch, ``python -S``), not by pretending."""

from __future__ import annotations

import os
import site
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import write_plan
from paths import REPO

import nearmetal

SRC = Path(nearmetal.__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def python_without_torch(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], str]:
    """argv of this Python with every installed package but torch (and without nearmetal's installed
    copy: the source under test comes first)."""
    packages = tmp_path_factory.mktemp("without-torch")
    skip = ("torch", "functorch", "torchgen", "nearmetal", "__editable__")
    for site_dir in site.getsitepackages():
        for entry in Path(site_dir).iterdir():
            if not entry.name.startswith(skip) and not (packages / entry.name).exists():
                (packages / entry.name).symlink_to(entry)
    probe = subprocess.run(
        [sys.executable, "-S", "-c", "import importlib.util as u, numpy; print(u.find_spec('torch'))"],
        env={**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{packages}"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert probe.stdout.strip() == "None", probe.stdout + probe.stderr
    return [sys.executable, "-S", "-m", "nearmetal.cli"], f"{SRC}{os.pathsep}{packages}"


def _run(python: tuple[list[str], str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    argv, path = python
    return subprocess.run(
        [*argv, *args],
        env={**os.environ, "PYTHONPATH": path, "NEARMETAL_DB": f"sqlite:///{cwd / 'results.db'}"},
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
    )


def test_a_torch_plan_is_refused_with_the_install_command(python_without_torch, tmp_path: Path) -> None:
    plan = write_plan(
        tmp_path,
        """
        name: needs-torch
        workloads:
          model: {kind: train, params: {epochs: 1}}
          plain: {kind: stress-ng, params: {seconds: 1}}
        variants: {bare: []}
        repeats: 1
        """,
    )
    proc = _run(python_without_torch, "run", str(plan), "--no-html", cwd=tmp_path)
    assert proc.returncode == 1
    assert "torch is not installed (needed by model/bare)" in proc.stderr
    assert "bash scripts/install.sh --with-torch" in proc.stderr and "nothing was run" in proc.stderr
    assert not (tmp_path / "nearmetal-runs").exists()
    checked = _run(python_without_torch, "check", str(plan), cwd=tmp_path)
    assert checked.returncode == 2 and "install.sh --with-torch" in checked.stderr


def test_a_plan_without_torch_runs_without_it(python_without_torch, tmp_path: Path) -> None:
    plan = write_plan(
        tmp_path,
        f"""
        name: no-torch
        workloads:
          nap: {{kind: command, params: {{argv: ["{sys.executable}", "-c", "print(1)"]}}}}
        variants: {{bare: [], again: []}}
        repeats: 2
        """,
    )
    proc = _run(python_without_torch, "run", str(plan), "--no-html", "-q", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "run id:" in proc.stdout


def test_install_script_options() -> None:
    proc = subprocess.run(
        ["bash", str(REPO / "scripts/install.sh"), "--with-tensorflow"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2 and "--with-torch" in proc.stderr
    # the tests need torch (train/ddp workloads): the test script asks for it
    assert "install.sh --test --with-torch" in (REPO / "scripts/test.sh").read_text()
