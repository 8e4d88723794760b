"""Missing tools and missing privileges: before anything runs, every workload's and layer's needs are named
with the tool, where it comes from and the cells that need it; a layer that needs root, run as another user,
says so and what to use instead. The non-root cases really run as ``nobody``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO

from nearmetal.errors import MissingToolError
from nearmetal.layers import all_layer_classes
from nearmetal.plan import parse_plan_text
from nearmetal.run.runner import preflight
from nearmetal.workloads import all_workload_classes

EXTRA_PARAMS: dict[str, dict[str, Any]] = {"command": {"argv": ["nearmetal-no-such-program"]}}


def _default_params(kind: str) -> dict[str, Any]:
    return dict(EXTRA_PARAMS.get(kind, {}))


def _every_requirement() -> list[tuple[str, Any]]:
    """(who, requirement) for every workload (default parameters) and every layer (example config)."""
    out = []
    for kind, cls in all_workload_classes().items():
        params = cls.Params.model_validate(_default_params(kind))
        out += [(f"workload {kind}", r) for r in cls().requires(params)]
    for kind, cls in all_layer_classes().items():
        example = cls.example_config()
        if example is not None:
            out += [(f"layer {kind}", r) for r in cls(cls.Config.model_validate(example)).requires()]
    return out


def test_every_missing_tool_is_named_with_its_package_and_cells(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plan using every workload and every layer, on a PATH with nothing on it."""
    workloads = {
        f"w-{kind}": {"kind": kind, "params": _default_params(kind)} for kind in all_workload_classes()
    }
    variants: dict[str, Any] = {"bare": []}
    for kind, cls in all_layer_classes().items():
        if cls.example_config() is not None:
            variants[f"with-{kind}"] = {"layers": [cls.example_config()], "only": [next(iter(workloads))]}
    loaded = parse_plan_text(yaml.safe_dump({"name": "all", "workloads": workloads, "variants": variants}))
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(MissingToolError) as info:
        preflight(loaded)
    message, fix = info.value.message, info.value.fix or ""
    assert message.startswith("the plan needs tools this machine lacks; nothing was run")
    for who, req in _every_requirement():
        if req.manager != "debian" or req.available():  # absolute paths (sys.executable) stay found
            continue
        line = next(
            (ln for ln in message.splitlines() if ln.strip().startswith(f"{req.tool} is not installed")), None
        )
        assert line, f"{who}: {req.tool} is not named in:\n{message}"
        assert f"apt-get install -y {req.package}" in line, line
        assert "(needed by " in line and "/" in line, line  # the cells, as workload/variant
        assert req.package in fix
    # one apt-get command for all of them, to paste
    assert fix.count("apt-get install -y") <= 1


def test_debian_packages_named_exist_and_install_sh_installs_them() -> None:
    if not shutil.which("apt-cache"):
        pytest.skip("no apt-cache on this machine")
    listed = set()
    for name in ("debian-packages.txt", "debian-packages-test.txt"):
        for line in (REPO / "scripts" / name).read_text().splitlines():
            listed |= set(line.split("#", 1)[0].split())
    problems = []
    for who, req in _every_requirement():
        if req.manager != "debian" or req.tool == "nearmetal-no-such-program":
            continue
        known = subprocess.run(
            ["apt-cache", "show", "--no-all-versions", req.package],
            capture_output=True,
            timeout=60,
            check=False,
        )
        if known.returncode != 0 or not known.stdout:
            problems.append(f"{who}: {req.package!r} is not a Debian package")
        elif req.package not in listed:
            problems.append(f"{who}: {req.package} is missing from scripts/debian-packages*.txt")
    assert not problems, problems


def _nobody_python() -> list[str] | None:
    """An interpreter user nobody may run, with nearmetal and its dependencies importable."""
    if os.geteuid() != 0 or not shutil.which("runuser"):
        return None
    for candidate in (
        sys.executable,
        "/usr/bin/python3",
        f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}",
    ):
        probe = subprocess.run(
            ["runuser", "-u", "nobody", "--", candidate, "-c", "import sys; print(sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if probe.returncode == 0 and probe.stdout.strip() == str(tuple(sys.version_info[:2])):
            return [candidate]
    return None


def _as_nobody(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    python = _nobody_python()
    if python is None:
        pytest.skip("needs root, runuser and a Python interpreter user nobody can run")
    site = sysconfig.get_paths()["purelib"]
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), site]),
        "NEARMETAL_DB": str(cwd / "results.db"),
        "HOME": str(cwd),
        "TMPDIR": str(cwd),
    }
    return subprocess.run(
        [
            "runuser",
            "-u",
            "nobody",
            "--",
            "env",
            *[f"{k}={v}" for k, v in env.items()],
            *python,
            "-m",
            "nearmetal.cli",
            *args,
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def nobody_dir():
    """A directory of user nobody's own (pytest's own temporary tree is root's alone): owned by it and 0700,
    as a user's working directory is — a world-writable one is refused as a workdir (issue 26)."""
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="nearmetal-nobody-"))
    os.chown(work, 65534, 65534)
    yield work
    shutil.rmtree(work, ignore_errors=True)


def test_a_layer_that_needs_root_refuses_a_normal_user_and_names_alternatives(nobody_dir: Path) -> None:
    plan = nobody_dir / "plan.yaml"
    plan.write_text(
        "name: rootless\n"
        "workloads: {w: {kind: command, params: {argv: ['true']}}}\n"
        "variants:\n"
        "  bare: []\n"
        "  quota: [{layer: cpu-quota, cpus: 0.5}]\n"
        "  pinned: [{layer: cpuset, cpus: 1}]\n"
        "  ns: [{layer: netns}]\n"
    )
    proc = _as_nobody(["run", str(plan), "-q", "--no-html"], nobody_dir)
    assert proc.returncode == 1, proc.stderr
    err = " ".join(proc.stderr.split())
    assert "nearmetal runs as uid 65534, not root; nothing was run" in err
    assert "layer cpu-quota needs root (it creates a cgroup and writes its CPU quota), used by w/quota" in err
    assert (
        "without root: an ordinary user may write a CPU quota only in a cgroup subtree delegated to it" in err
    )
    assert "nearmetal doctor --check rootless-cgroup" in err
    assert "layer cpuset needs root" in err and "taskset" in err
    assert "layer netns needs root" in err
    assert "fix: run nearmetal as root" in err
    assert not (nobody_dir / "nearmetal-runs").exists()


def test_a_plan_without_root_layers_runs_as_a_normal_user(nobody_dir: Path) -> None:
    plan = nobody_dir / "plan.yaml"
    plan.write_text(
        "name: user\n"
        "workloads: {w: {kind: command, params: {argv: ['true']}}}\n"
        "variants: {a: [], b: []}\n"
        "repeats: 2\n"
    )
    proc = _as_nobody(["run", str(plan), "--json", "--no-html"], nobody_dir)
    assert proc.returncode == 0, proc.stderr
    assert '"status": "finished"' in proc.stdout
    # its run lock lived in a directory of its own user, and is gone
    assert not list((nobody_dir).glob("nearmetal-65534/*.lock"))
