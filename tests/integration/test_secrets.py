"""Secrets never stored or printed (issue 18, item 4): plan text, trial parameters, environment, reports,
exports and messages carry ``<redacted>`` where a plan or the environment held a secret, while the trial
itself ran with the real values; the store is created 0600 and run directories 0700."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
from pathlib import Path

import pytest
import yaml
from helpers import write_plan

from nearmetal.redact import REDACTED, redact_config_text, redact_data, redact_text

PY = sys.executable
GITHUB = "ghp_" + "Z9y8X7w6V5u4T3s2R1q0P9o8N7m6L5k4J3i2"
AWS = "AKIA" + "QWERTYUIOPASDFGH"
PG_PASSWORD = "pgS3cretPw"
FLAG_PASSWORD = "hunter2hunter2"
ENV_PASSWORD = "envFlagPw77"
SECRETS = (GITHUB, AWS, PG_PASSWORD, FLAG_PASSWORD, ENV_PASSWORD, "blockScalarSecret")


# the trial checks it was given the real values, and says so as a metric (its output names no secret)
def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


CHECK = (
    "import hashlib, os, sys; h = lambda t: hashlib.sha256(t.encode()).hexdigest(); "
    f"ok = h(os.environ['GITHUB_TOKEN']) == {_digest(GITHUB)!r} and h(sys.argv[-1]) == {_digest(FLAG_PASSWORD)!r}; "
    "print('real', int(ok))"
)
CHECK_Q = json.dumps(CHECK)  # a YAML double-quoted scalar

PLAN = f"""
name: secrets
workloads:
  w: {{kind: command, params: {{argv: ["{PY}", "-c", {CHECK_Q}, "--password", "{FLAG_PASSWORD}"], env: {{GITHUB_TOKEN: {GITHUB}, AWS_KEY_ID: {AWS}, DB: "postgresql://bob:{PG_PASSWORD}@db.example/x"}}, metrics: [{{name: real, regex: 'real (\\d)', direction: higher, unit: flag}}]}}}}
  v:
    kind: command
    params:
      argv: ["{PY}", "-c", "pass"]
      env:
        NOTE: plain
        PRIVATE_KEY: |
          blockScalarSecret
          more
variants: {{a: []}}
repeats: 1
"""


def test_redaction_by_name_and_by_value_pattern() -> None:
    assert redact_text(f"mysql --password {FLAG_PASSWORD} -u bob") == f"mysql --password {REDACTED} -u bob"
    assert redact_text(f"--api-key={GITHUB}") == f"--api-key={REDACTED}"
    assert redact_text(f"postgresql://u:{PG_PASSWORD}@h/db") == f"postgresql://u:{REDACTED}@h/db"
    assert REDACTED in redact_text(f"aws {AWS}") and AWS not in redact_text(f"aws {AWS}")
    assert redact_data(
        {"argv": ["x", "--password", "p", "--user", "u"], "env": {"API_TOKEN": "t", "A": "b"}}
    ) == {
        "argv": ["x", "--password", REDACTED, "--user", "u"],
        "env": {"API_TOKEN": REDACTED, "A": "b"},
    }
    # flow style, a block list after a secret flag, a block scalar under a secret key; the text stays YAML
    text = redact_config_text(PLAN)
    for secret in SECRETS:
        assert secret not in text
    doc = yaml.safe_load(text)
    assert doc["workloads"]["w"]["params"]["env"]["GITHUB_TOKEN"] == REDACTED
    assert doc["workloads"]["v"]["params"]["env"]["NOTE"] == "plain"
    block = "argv:\n  - mysql\n  - --password\n  - s3\n  - --user\n  - bob\n"
    assert yaml.safe_load(redact_config_text(block))["argv"] == [
        "mysql",
        "--password",
        REDACTED,
        "--user",
        "bob",
    ]
    assert redact_config_text(text) == text


def test_a_run_stores_and_prints_no_secret(tmp_path: Path, run_cli) -> None:
    plan = write_plan(tmp_path, PLAN)
    env = {"OMP_DISPLAY_ENV": f"--password {ENV_PASSWORD}"}  # an allow-listed variable holding a secret
    proc = run_cli("run", str(plan), "--json", env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    outputs = [proc.stdout, proc.stderr]
    for fmt in ("terminal", "markdown", "json"):
        shown = run_cli("report", "-f", fmt, env=env)
        assert shown.returncode == 0, shown.stderr
        outputs.append(shown.stdout)
    assert run_cli("report", "--html", str(tmp_path / "r.html")).returncode == 0
    for fmt in ("csv", "json"):
        assert run_cli("export", "-f", fmt, "-o", str(tmp_path / f"e.{fmt}")).returncode == 0
    files = [tmp_path / "r.html", tmp_path / "e.csv", tmp_path / "e.json"]
    files += [p for p in tmp_path.glob("results.db*")]
    files += [p for p in (tmp_path / "nearmetal-runs").rglob("*.html")]
    blobs = outputs + [p.read_bytes().decode("latin-1") for p in files]
    for secret in SECRETS:
        leaks = [i for i, blob in enumerate(blobs) if secret in blob]
        assert not leaks, (secret, leaks)
    # the trial got the real values
    import sqlite3

    db = sqlite3.connect(tmp_path / "results.db")
    (value,) = db.execute("select value from metrics where name = 'real'").fetchone() or (None,)
    db.close()
    assert value == 1.0
    assert stat.S_IMODE((tmp_path / "results.db").stat().st_mode) == 0o600
    (run_dir,) = [p for p in (tmp_path / "nearmetal-runs").iterdir() if p.is_dir()]
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    # its plan held secrets the store does not have: resuming it needs the plan again
    again = run_cli("resume", run_dir.name)
    assert again.returncode != 0 and "nearmetal run PLAN --resume" in again.stderr
    assert len(again.stderr.strip().splitlines()) <= 3
    # with the plan given, the redacted stored plan and the real one compare equal
    with_plan = run_cli("run", str(plan), "--resume", run_dir.name, "-q", "--no-html")
    assert with_plan.returncode == 0, with_plan.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="the mode check needs no root, the umask does")
def test_store_mode_ignores_a_permissive_umask(tmp_path: Path) -> None:
    from nearmetal.store import Store

    old = os.umask(0)
    try:
        Store(f"sqlite:///{tmp_path / 'x.db'}").dispose()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.db").stat().st_mode) == 0o600
