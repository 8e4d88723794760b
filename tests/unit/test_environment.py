"""Environment capture: what a run records about the machine, with environment variables only through
the allow-list and every secret redacted."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import needs_tool
from helpers import write_plan
from paths import DATA

import nearmetal
from nearmetal.redact import REDACTED, redact_config_text, redact_text, redact_url, redact_value
from nearmetal.telemetry.environment import (
    allowed_environment,
    capture_environment,
    cgroup_version,
    git_facts,
    own_cgroup_limits,
)

SECRETS = {
    "GITHUB_TOKEN": "ghp_abcdefghijklmnopqrstuvwxyz0123456789AB",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "MY_PASSWORD": "hunter2hunter2",
    "NEARMETAL_DB": "postgresql+psycopg://bench:pg-Pa55-word@db.example:5432/results",
    "NEARMETAL_API_TOKEN": "nm-token-abcdef",
    "SLURM_JOB_ACCOUNT_KEY": "slurm-key-123456",
    "CUDA_VISIBLE_DEVICES": "0,1",
    "OMP_NUM_THREADS": "4",
    "NCCL_SOCKET_IFNAME": "eth0",
    "HTTPS_PROXY": "http://proxyuser:proxy-pw-77@proxy:3128",
    "UCX_TLS": "rc,sm",
    "PATH": "/usr/bin:/bin",
    "HOME": "/root",
    "OMPI_MCA_orte_base_help_aggregate": "0",
    "PMI_CONTROL_URL": "x?token=abcdefgh12345&y=1",
}


def test_environment_variables_pass_the_allow_list_and_redaction() -> None:
    env = allowed_environment(SECRETS)
    assert env["env.OMP_NUM_THREADS"] == "4"
    assert env["env.CUDA_VISIBLE_DEVICES"] == "0,1"
    assert env["env.NCCL_SOCKET_IFNAME"] == "eth0" and env["env.UCX_TLS"] == "rc,sm"
    assert env["env.PATH"] == "/usr/bin:/bin"
    # not on the list: not recorded at all
    for name in ("GITHUB_TOKEN", "AWS_SECRET_ACCESS_KEY", "MY_PASSWORD", "HOME", "HTTPS_PROXY"):
        assert f"env.{name}" not in env
    # on the list but secret: the name, never the value
    assert env["env.NEARMETAL_API_TOKEN"] == REDACTED
    assert env["env.SLURM_JOB_ACCOUNT_KEY"] == REDACTED
    assert env["env.NEARMETAL_DB"] == f"postgresql+psycopg://bench:{REDACTED}@db.example:5432/results"
    assert env["env.PMI_CONTROL_URL"] == f"x?token={REDACTED}&y=1"
    text = repr(env)
    for secret in ("ghp_", "wJalr", "hunter2", "pg-Pa55", "nm-token", "slurm-key", "abcdefgh12345"):
        assert secret not in text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://u:p%40ss@h/db", f"postgresql://u:{REDACTED}@h/db"),
        ("mysql+pymysql://root:@h/db", f"mysql+pymysql://root:{REDACTED}@h/db"),
        (
            "https://x-access-token:ghs_abc@github.com/o/r",
            f"https://x-access-token:{REDACTED}@github.com/o/r",
        ),
        (
            "https://ghp_abcdefghijklmnopqrstuvwxyz0123456789@github.com/o/r",
            f"https://{REDACTED}@github.com/o/r",
        ),
        ("sqlite:////var/lib/nearmetal.db", "sqlite:////var/lib/nearmetal.db"),
        ("https://user@example.com/x", "https://user@example.com/x"),
        (
            "curl -H 'Authorization: Bearer abcdef0123456789xyz'",
            f"curl -H 'Authorization: Bearer {REDACTED}'",
        ),
        ("--password=swordfish --ranks 2", f"--password={REDACTED} --ranks 2"),
        ("key AKIAIOSFODNN7EXAMPLE here", f"key {REDACTED} here"),
        ("lmp -in in.lj -var steps 200", "lmp -in in.lj -var steps 200"),
    ],
)
def test_credentials_are_cut_out_of_text(text: str, expected: str) -> None:
    assert redact_text(text) == expected


def test_secret_names_and_plan_text() -> None:
    assert redact_value("DB_PASSWORD", "x") == REDACTED
    assert redact_value("PWD", "/home/me") == "/home/me"  # the working directory is no password
    assert redact_url("postgresql+psycopg://me:secret@h/db") == f"postgresql+psycopg://me:{REDACTED}@h/db"
    plan = "workloads:\n  w:\n    params:\n      env: {A: 1}\n      env2:\n        API_KEY: abc123\n        RANKS: 2\n"
    shown = redact_config_text(plan)
    assert "abc123" not in shown and "RANKS: 2" in shown and f"API_KEY: {REDACTED}" in shown


def test_the_machine_is_described() -> None:
    env = capture_environment(environ={"OMP_NUM_THREADS": "2"})
    assert env["os.kernel"] == platform.release()
    assert env["cpu.logical"] == str(os.cpu_count())
    assert env["cgroup.version"] == cgroup_version()
    assert env["cpu.smt_active"] in ("yes", "no", "unknown")
    assert env["virtualization.container"] and env["virtualization.vm"]
    assert int(env["memory.total_MiB"]) > 100
    assert re.match(r"(unlimited|\d+) \(hard (unlimited|\d+)\)", env["limits.memlock"])
    assert env["env.OMP_NUM_THREADS"] == "2"
    assert env["nearmetal.version"] == nearmetal.__version__
    if shutil.which("fio"):
        printed = subprocess.run(
            ["fio", "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        assert env["tool.fio"] == printed
    if shutil.which("nvidia-smi"):
        assert env["gpu.model"] and env["gpu.driver"]
    else:
        assert not any(k.startswith("gpu.") for k in env)


def test_cgroup_limits_of_a_v2_layout(tmp_path: Path) -> None:
    """The quota of the cgroup a run is in, read from a directory laid out like cgroup v2."""
    (tmp_path / "cgroup.controllers").write_text("cpu memory\n")
    group = tmp_path / "kubepods" / "pod1"
    group.mkdir(parents=True)
    (group / "cpu.max").write_text("120000 100000\n")
    (group / "memory.max").write_text(str(2 << 30) + "\n")
    proc = tmp_path / "self-cgroup"
    proc.write_text("0::/kubepods/pod1\n")
    limits = own_cgroup_limits(str(tmp_path), str(proc))
    assert limits == {
        "cgroup.path": "/kubepods/pod1",
        "cgroup.cpu_limit": "1.20 CPUs",
        "cgroup.memory_limit": "2048 MiB",
    }


@needs_tool("git")
def test_git_commit_of_the_plan_directory(tmp_path: Path) -> None:
    repo = tmp_path / "study"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True, timeout=30)
    (repo / "plan.yaml").write_text("name: x\n")
    subprocess.run([*git, "add", "plan.yaml"], check=True, timeout=30)
    subprocess.run([*git, "commit", "-qm", "plan"], check=True, timeout=30)
    subprocess.run(
        [*git, "remote", "add", "origin", "https://oauth2:glpat-abcdefghijklmnopqrstu@gitlab.example/x.git"],
        check=True,
        timeout=30,
    )
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=30)
    facts = git_facts(repo)
    assert facts["git.commit"] == head.stdout.strip()
    assert facts["git.dirty"] == "no" and facts["git.branch"] == "main"
    assert facts["git.remote"] == f"https://oauth2:{REDACTED}@gitlab.example/x.git"
    (repo / "plan.yaml").write_text("name: y\n")
    assert git_facts(repo)["git.dirty"] == "yes"
    assert git_facts(tmp_path / "nowhere") == {}


def test_a_run_records_its_environment_without_secrets(tmp_path: Path, db_url: str, monkeypatch) -> None:
    for name, value in SECRETS.items():
        if name != "PATH":
            monkeypatch.setenv(name, value)
    plan = write_plan(
        tmp_path,
        f"""
        name: env-check
        workloads:
          w: {{kind: command, params: {{argv: ["{sys.executable}", "-c", "pass"]}}}}
        variants: {{a: []}}
        repeats: 1
        """,
    )
    result = nearmetal.run_plan(plan, db=db_url, workdir=tmp_path / "runs")
    env = nearmetal.load_results(result.run_id, db=db_url).environment
    assert env["env.OMP_NUM_THREADS"] == "4"
    assert env["store.url"] == db_url  # SQLite: a path, nothing to hide
    assert "env.GITHUB_TOKEN" not in env
    stored = repr(env)
    for secret in ("ghp_", "wJalr", "hunter2", "pg-Pa55", "nm-token", "slurm-key", "proxy-pw"):
        assert secret not in stored


def test_gpu_facts_from_recorded_nvidia_smi_output(tmp_path: Path, monkeypatch) -> None:
    """No GPU here: a stand-in nvidia-smi on PATH prints what driver 535 prints on an A100 node (tests/data),
    and the capture reads model, count, driver, CUDA version and MIG mode from it."""
    from nearmetal.telemetry.environment import gpu_facts, tool_versions

    data = DATA / "nvidia-smi"
    stand_in = tmp_path / "bin" / "nvidia-smi"
    stand_in.parent.mkdir()
    stand_in.write_text(
        "#!/bin/sh\n"
        f'case "$1" in\n'
        f'  --query-gpu=*) cat "{data / "query-a100-mig.csv"}" ;;\n'
        f'  --version) cat "{data / "version-535.txt"}" ;;\n'
        f'  "") cat "{data / "banner-535.txt"}" ;;\n'
        "  *) exit 6 ;;\n"
        "esac\n"
    )
    stand_in.chmod(0o755)
    monkeypatch.setenv("PATH", f"{stand_in.parent}:{os.environ['PATH']}")
    facts = gpu_facts()
    assert facts == {
        "gpu.count": "2",
        "gpu.model": "NVIDIA A100-SXM4-40GB",
        "gpu.driver": "535.104.05",
        "gpu.memory": "40960 MiB",
        "gpu.mig_mode": "Enabled,Disabled",
        "gpu.cuda_driver_version": "12.2",
    }
    assert tool_versions()["tool.nvidia-smi"] == "535.104.05"
