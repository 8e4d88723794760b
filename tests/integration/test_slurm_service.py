"""``scripts/services/slurm.sh``: says in one line what to install when the daemons are missing (the README's
install brings only slurm-client), and the cluster it starts keeps accounting: nearmetal's jobs are listed
by ``sacct`` (from the job completion file: ``sacct -c``) with their state and resources."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import write_plan
from paths import REPO

import nearmetal
from nearmetal.backends.slurm import SlurmBackend, SlurmOptions

SCRIPT = REPO / "scripts/services/slurm.sh"
PY = sys.executable


def test_missing_daemons_are_named_with_the_install_command(tmp_path: Path) -> None:
    """As a user who is not root, with no Slurm daemons to be found: one line saying what to install."""
    setpriv = shutil.which("setpriv")
    if setpriv is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv to run the script as nobody")
    proc = subprocess.run(
        [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", "/bin/bash", str(SCRIPT), "start"],
        # the daemons live in /usr/sbin, which a user's PATH lacks: as with only slurm-client installed
        env={"PATH": "/usr/bin:/bin", "NEARMETAL_SLURM_DIR": str(tmp_path / "state")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "slurmctld" in lines[0] and "apt-get install -y slurm-wlm munge" in lines[0]


@pytest.fixture(scope="module")
def slurm_conf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(SLURM_CONF, partition): the cluster scripts/test.sh started, else one started here on other ports
    (and stopped after)."""
    if os.environ.get("SLURM_CONF") and Path(os.environ["SLURM_CONF"]).exists():
        yield os.environ["SLURM_CONF"], os.environ.get("NEARMETAL_TEST_SLURM_PARTITION", "debug")
        return
    if os.geteuid() != 0:
        pytest.skip("starting a Slurm cluster needs root")
    if shutil.which("slurmctld") is None:
        pytest.skip("slurm-wlm is not installed (apt-get install -y slurm-wlm munge)")
    state = tmp_path_factory.mktemp("slurm")
    env = {
        **os.environ,
        "NEARMETAL_SLURM_DIR": str(state / "state"),
        "NEARMETAL_SLURM_PORT": "7827",
        "NEARMETAL_SLURM_PARTITION": "nmservice",
    }
    started = subprocess.run(
        ["bash", str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=300
    )
    try:
        assert started.returncode == 0, started.stderr
        yield str(state / "state/etc/slurm.conf"), "nmservice"
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, text=True, timeout=300)


def test_sacct_lists_nearmetals_jobs(slurm_conf: tuple[str, str], tmp_path: Path, monkeypatch) -> None:
    conf, partition = slurm_conf
    monkeypatch.setenv("SLURM_CONF", conf)
    config = Path(conf).read_text()
    assert "JobCompType=jobcomp/filetxt" in config and "JobAcctGatherType=jobacct_gather/linux" in config
    plan = write_plan(
        tmp_path,
        f"""
        name: accounted
        workloads:
          nap: {{kind: command, params: {{argv: ["{PY}", "-c", "import time; time.sleep(0.5)"]}}}}
        variants: {{bare: [], again: []}}
        repeats: 1
        """,
    )
    backend = SlurmBackend(SlurmOptions(partition=partition, poll_s=0.5))
    db = f"sqlite:///{tmp_path / 'r.db'}"
    result = nearmetal.run_plan(plan, db=db, workdir=tmp_path / "runs", backend=backend)
    assert [r.status for r in result.records] == ["ok", "ok"]
    job_ids = {
        str(t.placement["slurm"]["job_id"]) for t in nearmetal.load_results(result.run_id, db=db).trials
    }
    proc = subprocess.run(
        ["sacct", "-c", "-n", "-P", "-o", "JobID,JobName,Partition,State"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SLURM_CONF": conf},
    )
    assert proc.returncode == 0, proc.stderr
    listed = {line.split("|")[0]: line.split("|") for line in proc.stdout.splitlines() if line}
    for job_id in job_ids:
        assert job_id in listed, proc.stdout
        _, name, job_partition, state = listed[job_id]
        assert name.startswith(f"nearmetal-{result.run_id}") and job_partition == partition
        assert state == "COMPLETED"
