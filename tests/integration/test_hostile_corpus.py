"""A hand-written corpus of hostile plans, special files and command-line inputs (issue 18): each one ends,
within 60 s, in a short error with no traceback (refused before anything runs: no store file, no run
directory) or in a run confined to its directory; nothing is written outside the test's directory.

Each case runs the real ``nearmetal`` command in a fresh directory holding a victim file that absolute-path
payloads aim at."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import nearmetal_argv

PY = sys.executable
VICTIM = "victim.txt"
PRECIOUS = "precious\n"


@dataclass
class Case:
    name: str
    # the plan: a dict (written as JSON, which is YAML), YAML text, or a function making the plan's path
    plan: dict | str | Callable[[Path], Path]
    # "refused": a short error before anything runs; "confined": it may run, and stays in its directory
    outcome: str = "refused"
    args: tuple[str, ...] = ()
    expect: str = ""  # a fragment of the error
    prepare: Callable[[Path], None] | None = None


def _plan(workload: dict, variants: dict | None = None, **top: object) -> dict:
    doc: dict = {
        "name": "hostile",
        "workloads": {"w": workload},
        "variants": variants or {"a": []},
        "repeats": 1,
    }
    doc.update(top)
    doc.setdefault("timeout", "30s")
    return doc


def _cmd(argv: list[str] | None = None, **params: object) -> dict:
    return {"kind": "command", "params": {"argv": argv or [PY, "-c", "pass"], **params}}


def _fio(**params: object) -> dict:
    return {"kind": "fio", "params": {"size": "1m", "runtime": 0.2, **params}}


def _fio_option(key: str, value: object, expect: str = "") -> Case:
    return Case(f"fio-{key}", _plan(_fio(options={key: value})), expect=expect or f"'{key}'")


OUT = "@OUT@"  # replaced by the absolute path of the victim file

FIO_CASES = [
    _fio_option("output", OUT, "is not allowed in a plan"),
    _fio_option("client", "attacker.example", "another host"),
    _fio_option("server", "0.0.0.0,8765", "another host"),
    _fio_option("exec_prerun", f"touch {OUT}", "shell command"),
    _fio_option("exec_postrun", "id", "shell command"),
    _fio_option("trigger_cmd", "id", "shell command"),
    _fio_option("trigger_file", OUT, "shell command"),
    _fio_option("filename", OUT),
    _fio_option("directory", "/etc"),
    _fio_option("opendir", "/etc"),
    _fio_option("filename_format", "/etc/$jobnum"),
    _fio_option("write_iolog", OUT, "relative path"),
    _fio_option("read_iolog", "/etc/shadow", "relative path"),
    _fio_option("write_bw_log", "../../escape", "climbs out"),
    _fio_option("write_lat_log", OUT, "relative path"),
    _fio_option("write_hist_log", "/tmp/x", "relative path"),
    _fio_option("replay_redirect", "/dev/sda"),
    _fio_option("merge_blktrace_file", OUT),
    _fio_option("verify_dump", 1),
    _fio_option("verify_state_save", 1),
    _fio_option("mem", f"mmap:{OUT}"),
    _fio_option("iomem", f"mmapshared:{OUT}"),
    _fio_option("ioengine", "external:/tmp/evil.so"),
    _fio_option("cgroup", "evil"),
    _fio_option("ioscheduler", "none"),
    _fio_option("fill_device", 1),
    _fio_option("daemonize", OUT),
    _fio_option("status_interval", 1, "passes through"),
    _fio_option("unknown_option_x", 1, "passes through"),
    _fio_option("rate", "1m\nexec_prerun=touch /tmp/nearmetal-forged", "line break"),
    _fio_option("thinktime", "1\u0000", "NUL"),
    _fio_option("rate_iops", "5\rX", "carriage return"),
    Case("fio-dir-abs", _plan(_fio(directory="/etc")), expect="is outside"),
    Case("fio-dir-climb", _plan(_fio(directory="../../../etc")), expect="climbs out"),
    Case("fio-dir-newline", _plan(_fio(directory="d\nexec_prerun=id")), expect="line break"),
    Case("fio-size-huge", _plan(_fio(size="900t", numjobs=64)), expect="MiB free"),
]

COMMAND_CASES = [
    Case("env-key-equals", _plan(_cmd(env={"A=B": "1"})), expect="cannot be empty or contain '='"),
    Case("env-key-empty", _plan(_cmd(env={"": "1"})), expect="cannot be empty"),
    Case("env-key-nul", _plan(_cmd(env={"A\u0000B": "1"})), expect="NUL"),
    Case("env-value-nul", _plan(_cmd(env={"A": "x\u0000y"})), expect="NUL"),
    Case("env-key-shell", _plan(_cmd(env={"X=1; echo INJECTED; Y": "1"})), expect="'='"),
    Case("argv0-missing", _plan(_cmd(["/nonexistent/nearmetal-prog"])), expect="not installed"),
    Case("argv0-missing-name", _plan(_cmd(["nearmetal-no-such-prog-18"])), expect="not installed"),
    Case("argv0-empty", _plan(_cmd([""])), expect="argv[0]"),
    Case("argv-nul", _plan(_cmd([PY, "-c", "pass\u0000"])), expect="NUL"),
    Case(
        "metric-name-long",
        _plan(_cmd(metrics=[{"name": "m" * 200, "regex": "(1)", "direction": "higher"}])),
        expect="128",
    ),
    Case(
        "metric-unit-long",
        _plan(_cmd(metrics=[{"name": "m", "regex": "(1)", "unit": "u" * 40, "direction": "higher"}])),
        expect="32",
    ),
    Case(
        "regex-backreference",
        _plan(_cmd(metrics=[{"name": "m", "regex": "(a)\\1", "direction": "higher"}])),
        expect="linear time",
    ),
    Case(
        "regex-no-group",
        _plan(_cmd(metrics=[{"name": "m", "regex": "\\d+", "direction": "higher"}])),
        expect="capturing group",
    ),
    Case(
        "regex-catastrophic",
        _plan(
            _cmd(
                [PY, "-c", "print('a' * 60 + '!')"],
                metrics=[{"name": "m", "regex": "^(a+)+$", "direction": "higher"}],
            )
        ),
        outcome="confined",
    ),
    Case("every-trial-fails", _plan(_cmd([PY, "-c", "raise SystemExit(3)"])), outcome="failed"),
    Case(
        "shell-metacharacters",
        _plan(_cmd([PY, "-c", "import sys; print(sys.argv)", f"$(touch {OUT})", f"; rm {OUT}"])),
        outcome="confined",
    ),
    Case(
        "secret-in-env",
        _plan(_cmd(env={"GITHUB_TOKEN": "ghp_" + "a" * 36, "DB": "postgresql://u:pw1234@h/x"})),
        outcome="confined",
    ),
]

TOP_CASES = [
    Case("seed-64-bits", _plan(_cmd(), seed=2**64), expect="seed"),
    Case("seed-negative", _plan(_cmd(), seed=-1), expect="seed"),
    Case("seed-40-bits", _plan(_cmd(), seed=2**40), expect="seed"),
    Case("repeats-huge", {**_plan(_cmd()), "repeats": 30000}, expect="trials"),
    Case("warmup-huge", _plan(_cmd(), warmup=5000), expect="warmup"),
    Case("name-slash", {**_plan(_cmd()), "name": "../../etc"}, expect="name"),
    Case("name-newline", {**_plan(_cmd()), "name": "a\nb"}, expect="name"),
    Case("name-long", {**_plan(_cmd()), "name": "n" * 1000}, expect="name"),
    Case("no-variants", {**_plan(_cmd()), "variants": {}}, expect="variants"),
    Case("workload-shell-name", {**_plan(_cmd()), "workloads": {"$(id)": _cmd()}}, expect="workloads"),
    Case("unknown-key", {**_plan(_cmd()), "rm_rf": "/"}, expect="rm_rf"),
    Case("order-bogus", _plan(_cmd(), order="chaos"), expect="order"),
    Case("timeout-negative", _plan(_cmd(), timeout="-5s"), expect="timeout"),
    Case("unknown-kind", _plan({"kind": "rm-rf"}), expect="kind"),
    Case("python-tag", "name: !!python/object/apply:os.system ['touch /tmp/nearmetal-yaml-pwned']\n"),
    Case(
        "duplicate-keys",
        "name: a\nname: b\nworkloads: {w: {kind: stress-ng}}\nvariants: {a: []}\n",
        expect="duplicate",
    ),
    Case(
        "alias-bomb",
        "a: &a [x,x,x,x,x,x,x,x,x,x]\n"
        + "".join(
            f"{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n"
            for p, c in zip("abcdefgh", "bcdefghi", strict=True)
        ),
        expect="100,000",
    ),
    Case("deep-nesting", "name: " + "[" * 500 + "]" * 500 + "\n", expect="nest"),
    Case("not-a-mapping", "- just\n- a list\n"),
    Case("null-document", "null\n"),
    Case("yaml-syntax", "name: [unclosed\n", expect="YAML"),
]

LAYER_CASES = [
    Case("tmpfs-100t", _plan(_fio(), {"t": [{"layer": "tmpfs", "size": "100t"}]}), expect="tmpfs of 100t"),
    Case(
        "tmpfs-base-etc", _plan(_fio(), {"t": [{"layer": "tmpfs", "base_dir": "/etc"}]}), expect="is outside"
    ),
    Case(
        "cgroup-root-etc",
        _plan(_cmd(), {"q": [{"layer": "cpu-quota", "cpus": 1, "cgroup_root": "/etc"}]}),
        expect="is outside",
    ),
    Case(
        "bindfs-base-climb",
        _plan(_fio(), {"b": [{"layer": "bindfs", "base_dir": "../../.."}]}),
        expect="climbs out",
    ),
    Case("unknown-layer", _plan(_cmd(), {"x": [{"layer": "rootkit"}]}), expect="layer"),
    Case(
        "overlay-base-proc",
        _plan(_fio(), {"o": [{"layer": "overlayfs", "base_dir": "/proc/self"}]}),
        expect="is outside",
    ),
]


def _special(maker: Callable[[Path], Path]) -> Callable[[Path], Path]:
    return maker


def _fifo(tmp: Path) -> Path:
    os.mkfifo(tmp / "fifo.yaml")
    return tmp / "fifo.yaml"


def _big(tmp: Path) -> Path:
    path = tmp / "big.yaml"
    with open(path, "wb") as f:
        f.truncate(100 * 1024 * 1024)  # sparse: 100 MB of NULs
    return path


def _link(target: str) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        (tmp / "link.yaml").symlink_to(target)
        return tmp / "link.yaml"

    return make


def _file(name: str, data: bytes) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        (tmp / name).write_bytes(data)
        return tmp / name

    return make


def _dir(tmp: Path) -> Path:
    (tmp / "plan.d").mkdir()
    return tmp / "plan.d"


SPECIAL_CASES = [
    Case("plan-directory", _dir, expect="directory"),
    Case("plan-dev-zero", lambda tmp: Path("/dev/zero"), expect="not a regular file"),
    Case("plan-dev-null", lambda tmp: Path("/dev/null"), expect="not a regular file"),
    Case("plan-fifo", _fifo, expect="not a regular file"),
    Case("plan-100mb", _big, expect="larger than"),
    Case("plan-link-shadow", _link("/etc/shadow"), expect="not shown"),
    Case("plan-link-passwd", _link("/etc/passwd"), expect="not shown"),
    Case("plan-link-dev-zero", _link("/dev/zero"), expect="not a regular file"),
    Case("plan-binary", _file("bin.yaml", bytes(range(256)) * 4), expect="not a text file"),
    Case("plan-empty", _file("empty.yaml", b"")),
    Case("plan-missing", lambda tmp: tmp / "missing.yaml", expect="no such plan file"),
    Case("plan-proc", lambda tmp: Path("/proc/self/status")),
]


def _truncated_db(tmp: Path) -> None:
    db = tmp / "real.db"
    con = sqlite3.connect(db)
    con.execute("create table t(x)")
    con.executemany("insert into t values (?)", [("x" * 1000,)] * 200)
    con.commit()
    con.close()
    data = db.read_bytes()
    (tmp / "trunc.db").write_bytes(data[: len(data) // 3])
    db.unlink()


def _ro_dir(tmp: Path) -> None:
    (tmp / "ro").mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "nearmetal-test-ro", str(tmp / "ro")],
        check=True,
        timeout=30,
    )


SIMPLE = _plan(_cmd())
CLI_CASES = [
    Case(
        "db-not-a-database",
        SIMPLE,
        args=("--db", "@TMP@/bad.db"),
        expect="not a database",
        prepare=lambda tmp: (tmp / "bad.db").write_text("hello, not a database\n"),
    ),
    Case("db-truncated", SIMPLE, args=("--db", "@TMP@/trunc.db"), prepare=_truncated_db),
    Case("db-directory", SIMPLE, args=("--db", "@TMP@/dbdir"), prepare=lambda tmp: (tmp / "dbdir").mkdir()),
    Case("workdir-proc", SIMPLE, args=("--workdir", "/proc/self"), expect="kernel filesystem"),
    Case("workdir-below-file", SIMPLE, args=("--workdir", f"@TMP@/{VICTIM}/sub"), expect="not a directory"),
    Case("seed-option-64-bits", SIMPLE, args=("--seed", str(2**64))),
    Case("run-id-climb", SIMPLE, args=("--run-id", "../../etc")),
    Case("run-id-newline", SIMPLE, args=("--run-id", "a\nb")),
]
if os.geteuid() == 0:
    CLI_CASES.append(
        Case(
            "workdir-read-only",
            SIMPLE,
            args=("--workdir", "@TMP@/ro/runs"),
            expect="read-only",
            prepare=_ro_dir,
        )
    )

CORPUS = FIO_CASES + COMMAND_CASES + TOP_CASES + LAYER_CASES + SPECIAL_CASES + CLI_CASES


def test_the_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 80
    assert len({c.name for c in CORPUS}) == len(CORPUS)


def _write(case: Case, tmp: Path) -> Path:
    if callable(case.plan):
        return case.plan(tmp)
    text = case.plan if isinstance(case.plan, str) else json.dumps(case.plan)
    text = text.replace(OUT, str(tmp / VICTIM))
    path = tmp / "plan.yaml"
    path.write_text(text)
    return path


def _listing(tmp: Path) -> set[str]:
    out = set()
    for path in tmp.rglob("*"):
        rel = path.relative_to(tmp)
        if rel.parts[0] in ("nearmetal-runs", "ro"):
            continue
        out.add(str(rel))
    return out


def _in_process(argv: list[str], tmp: Path, env: dict[str, str], monkeypatch, capsys) -> tuple[int, str, str]:
    """The CLI's own entry point in this process (the plan cases: a new interpreter per case costs ~9 s on a
    busy machine); an exception it does not turn into a message fails the test as a traceback would."""
    from nearmetal.cli import main

    monkeypatch.chdir(tmp)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(sys, "argv", ["nearmetal", *argv])
    capsys.readouterr()
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
def test_a_hostile_input_ends_in_one_short_error_or_a_confined_run(
    case: Case, tmp_path: Path, monkeypatch, capsys
) -> None:
    tmp = tmp_path
    (tmp / VICTIM).write_text(PRECIOUS)
    if case.prepare:
        case.prepare(tmp)
    try:
        plan = _write(case, tmp)
        before = _listing(tmp)
        args = [a.replace("@TMP@", str(tmp)) for a in case.args]
        env = {"NEARMETAL_DB": str(tmp / "results.db"), "COLUMNS": "200", "HOME": str(tmp / "home")}
        argv = ["run", str(plan), "-q", "--no-html", *args]
        started = time.monotonic()
        if callable(case.plan) or case.args:
            # special files and command-line inputs: the real command, in its own process
            proc = subprocess.run(
                [*nearmetal_argv(), *argv],
                cwd=tmp,
                env={**os.environ, **env},
                capture_output=True,
                text=True,
                timeout=60,
            )
            returncode, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
        else:
            returncode, stdout, stderr = _in_process(argv, tmp, env, monkeypatch, capsys)
        proc = subprocess.CompletedProcess(argv, returncode, stdout, stderr)
        assert time.monotonic() - started < 60
        assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr[-3000:]
        assert (tmp / VICTIM).read_text() == PRECIOUS
        assert not Path("/tmp/nearmetal-forged").exists() and not Path("/tmp/nearmetal-yaml-pwned").exists()
        if case.outcome == "refused":
            assert proc.returncode != 0, (proc.stdout[-2000:], proc.stderr[-2000:])
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            assert 1 <= len(lines) <= 6, lines
            assert all(len(line) <= 800 for line in lines), lines
            assert case.expect.lower() in proc.stderr.lower(), proc.stderr
            # refused before anything ran: no run directory, and no store file it made
            assert not (tmp / "nearmetal-runs").exists() or not any((tmp / "nearmetal-runs").iterdir())
            assert not (tmp / "results.db").exists(), proc.stderr
            assert _listing(tmp) == before
        else:
            if case.outcome == "failed":
                assert proc.returncode == 1 and "every trial" in proc.stderr, proc.stderr
            else:
                assert proc.returncode in (0, 1), proc.stderr
            # everything the run wrote is in its directory and the store
            assert _listing(tmp) - before <= {"results.db", "results.db-wal", "results.db-shm"}, (
                _listing(tmp) - before
            )
            if case.name == "secret-in-env":
                raw = b"".join(p.read_bytes() for p in tmp.glob("results.db*"))
                assert b"ghp_aaaa" not in raw and b"pw1234" not in raw
    finally:
        if (tmp / "ro").is_dir():
            subprocess.run(["umount", str(tmp / "ro")], timeout=30, check=False)
