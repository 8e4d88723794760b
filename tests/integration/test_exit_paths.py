"""Every registered layer × every way a trial can end: nothing the run made is left on the host.

The layers come from ``LAYERS`` and their ``example_config()``, so a layer is covered the moment it is
registered; one without an example configuration, whose tools are missing or that needs root we do not have
is skipped with the reason. Exit paths:

- success, workload-crash (exit 3), timeout (the trial's deadline kills it): in this process;
- setup-error: the layer's own setup fails at each of its host-changing calls in turn, and after all of
  them (fault injection, ``faults.py``);
- sigint, sigterm: sent to the runner (this process: the same handler and unwinding as ``nearmetal run``, whose
  exit code 130 tests/test_cpu_quota.py checks) while the workload runs;
- sigkill+cleanup: a real ``nearmetal run`` is killed; it cannot clean up, ``nearmetal cleanup RUN`` must
  remove everything.

After each, the host's tables (cgroups, network namespaces, links, mounts, processes, temp files and every
registered finder) must hold nothing with the run's id (``leakcheck.py``). The results table is written to
``test-artifacts/exit-paths.md``.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ARTIFACTS, nearmetal_argv
from faults import CallCounter, faulty_setup
from leakcheck import host_objects

import nearmetal
from nearmetal.errors import NearmetalError
from nearmetal.layers import LAYERS, layer_class

# every layer alone, and every layer that has a rootless form behind the rootless layer (its trial runs in a
# child nearmetal as the test user, in that user's namespace: layers/rootless.py)
ROOTLESS_STACKS = [f"rootless+{kind}" for kind in sorted(LAYERS) if layer_class(kind).rootless_form]
LAYER_KINDS = sorted(LAYERS) + ROOTLESS_STACKS
IN_PROCESS = ["success", "workload-crash", "timeout", "setup-error"]
INTERRUPTED = ["sigint", "sigterm"]
KILLED = ["sigkill+cleanup"]
EXIT_PATHS = IN_PROCESS + INTERRUPTED + KILLED
READY = "nearmetal-ready"
# how many of a layer's setup calls get a fault of their own (evenly spread when it makes more)
MAX_SETUP_FAULTS = int(os.environ.get("NEARMETAL_SETUP_FAULTS", "8"))

SCRIPTS = {
    "success": f"echo {READY}; exit 0",
    "workload-crash": f"echo {READY}; echo boom >&2; exit 3",
    "timeout": f"echo {READY}; exec sleep 60",
    "setup-error": f"echo {READY}; exit 0",
    "sigint": f"echo {READY}; exec sleep 60",
    "sigterm": f"echo {READY}; exec sleep 60",
    "sigkill+cleanup": f"echo {READY}; exec sleep 60",
}

RESULTS: dict[str, dict[str, str]] = {}


@pytest.fixture(scope="module", autouse=True)
def results_table():
    yield
    if not RESULTS:
        return
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "exit-paths.json").write_text(json.dumps(RESULTS, indent=1, sort_keys=True))
    lines = ["| layer | " + " | ".join(EXIT_PATHS) + " |", "|---" * (len(EXIT_PATHS) + 1) + "|"]
    for kind in sorted(RESULTS):
        lines.append(f"| {kind} | " + " | ".join(RESULTS[kind].get(p, "–") for p in EXIT_PATHS) + " |")
    (ARTIFACTS / "exit-paths.md").write_text("\n".join(lines) + "\n")


def _record(kind: str, path: str, outcome: str) -> None:
    RESULTS.setdefault(kind, {})[path] = outcome


def layer_config(kind: str) -> dict[str, Any] | list[dict[str, Any]]:
    """The layer's example configuration (a stack's: each of its layers'), or a skip saying why it cannot run
    here."""
    if "+" in kind:
        return [_one_config(part, kind) for part in kind.split("+")]
    return _one_config(kind, kind)


def _one_config(kind: str, recorded_as: str) -> dict[str, Any]:
    cls = layer_class(kind)
    example = cls.example_config()
    if example is None:
        reason = f"layer {kind} has no example_config()"
    else:
        layer = cls(cls.Config.model_validate(example))
        missing = [f"{r.tool} ({r.install_hint()})" for r in layer.requires() if not r.available()]
        if missing:
            reason = f"needs {', '.join(missing)}"
        elif cls.needs_root and os.geteuid() != 0:
            reason = "needs root"
        else:
            if "neighbour_params" in cls.Config.model_fields and "neighbour_params" not in example:
                # co-located copies of the workload must outlast the measured one (the command workload
                # cannot be made longer by a factor): give them a long sleep of their own
                example = {**example, "neighbour_params": {"argv": ["/bin/sh", "-c", "exec sleep 300"]}}
            return example
    for path in EXIT_PATHS:
        _record(recorded_as, path, f"skip: {reason}")
    pytest.skip(reason)


def _plan(directory: Path, config: dict[str, Any] | list[dict[str, Any]], script: str, timeout: str) -> Path:
    plan = {
        "name": "exit-paths",
        "workloads": {
            "w": {"kind": "command", "params": {"argv": ["/bin/sh", "-c", script]}, "timeout": timeout}
        },
        "variants": {"layered": config if isinstance(config, list) else [config]},
        "repeats": 1,
    }
    path = directory / "plan.yaml"
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


USED_RUN_IDS: list[str] = []


@pytest.fixture(autouse=True)
def remove_what_a_failing_test_left():
    """A test that finds a leak fails, and then removes the leak: the machine is shared."""
    yield
    from nearmetal.host.cleanup import cleanup

    while USED_RUN_IDS:
        cleanup(USED_RUN_IDS.pop(), include_live=True)


def _new_run_id(path: str) -> str:
    run_id = f"exit-{path.split('+')[0]}-{os.getpid()}-{secrets.token_hex(3)}"
    USED_RUN_IDS.append(run_id)
    return run_id


def _swept_leaks(db: str | None, run_id: str) -> set[str]:
    """Processes the runner itself had to kill after a trial (its ``leak`` events): the layer or backend
    lost track of them, which is a leak even though the host ends clean."""
    if db is None:
        return set()
    from nearmetal.store import Store

    store = Store(db)
    try:
        store.get_run(run_id)
    except NearmetalError:
        return set()
    try:
        return {
            f"swept by the runner after {e['detail'].get('after')}: {p}"
            for e in store.events(run_id)
            if e["kind"] == "leak"
            for p in e["detail"].get("processes", [])
        }
    finally:
        store.dispose()


def _assert_clean(kind: str, path: str, run_id: str, note: str = "", db: str | None = None) -> None:
    left = host_objects(run_id) | _swept_leaks(db, run_id)
    if left:
        _record(kind, path, "LEAK: " + "; ".join(sorted(left)))
    assert not left, f"{kind} / {path} left: {sorted(left)}"
    _record(kind, path, "clean" + (f" ({note})" if note else ""))


def _stored_trials(db: str, run_id: str) -> str:
    """What the store says of the run's trials: why a run ended before the test could signal it."""
    from nearmetal.store import Store

    store = Store(db)
    try:
        return (
            "; ".join(
                f"{t.variant}: {t.status} {t.error or ''} {(t.stderr_tail or '')[-600:]}".strip()
                for t in store.trials(run_id)
            )
            or "no trial stored"
        )
    except NearmetalError as exc:
        return f"no run stored ({exc})"
    finally:
        store.dispose()


def _skip_if_host_cannot(kind: str, path: str, run_id: str, exc: NearmetalError) -> None:
    """A layer whose setup cannot work on this host (no KVM, no user namespaces) is skipped, once it is clear
    that the failed attempt left nothing behind."""
    _assert_clean(kind, path, run_id)
    reason = f"setup cannot run here: {str(exc).splitlines()[0]}"
    _record(kind, path, f"skip: {reason}")
    pytest.skip(reason)


@pytest.mark.root
@pytest.mark.parametrize("path", IN_PROCESS)
@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_in_process_exit_paths_leave_nothing(kind: str, path: str, tmp_path: Path) -> None:
    config = layer_config(kind)
    db = f"sqlite:///{tmp_path / 'results.db'}"
    timeout = "1.5s" if path == "timeout" else "120s"
    plan = _plan(tmp_path, config, SCRIPTS[path], timeout)
    if path == "setup-error":
        _setup_errors(kind, plan, db, tmp_path)
        return
    run_id = _new_run_id(path)
    assert not host_objects(run_id)
    try:
        result = nearmetal.run_plan(plan, db=db, workdir=tmp_path / "runs", run_id=run_id)
    except NearmetalError as exc:
        _skip_if_host_cannot(kind, path, run_id, exc)
    status = result.records[0].status
    expected = {"success": "ok", "workload-crash": "failed", "timeout": "timeout"}[path]
    assert status == expected, result.records[0].error
    _assert_clean(kind, path, run_id, db=db)


def _setup_errors(kind: str, plan: Path, db: str, tmp_path: Path) -> None:
    """Fail the layer's setup at each host-changing call (a sample when there are many), then after all. In a
    rootless stack the layers set up in the trial's child process: only what this process does is counted."""
    cls = layer_class(kind.split("+")[-1])
    counting = CallCounter()
    run_id = _new_run_id("count")
    with faulty_setup(cls, counting):
        try:
            nearmetal.run_plan(plan, db=db, workdir=tmp_path / "runs", run_id=run_id)
        except NearmetalError as exc:
            _skip_if_host_cannot(kind, "setup-error", run_id, exc)
    _assert_clean(kind, "setup-error", run_id)
    total = len(counting.calls)
    points = list(range(1, total + 1))
    if len(points) > MAX_SETUP_FAULTS:
        step = len(points) / MAX_SETUP_FAULTS
        points = sorted({points[int(i * step)] for i in range(MAX_SETUP_FAULTS)} | {points[-1]})
    faults = [CallCounter(fail_at=k) for k in points] + [CallCounter(fail_after=True)]
    outcomes: dict[str, int] = {}
    for counter in faults:
        run_id = _new_run_id("fault")
        # the fault surfaces as the layer chooses: the OSError itself, a NearmetalError the layer made of it
        # (the run stops), or a trial stored with status "error"; what matters is that nothing is left
        with faulty_setup(cls, counter):
            try:
                result = nearmetal.run_plan(plan, db=db, workdir=tmp_path / "runs", run_id=run_id)
                outcome = f"trial {result.records[0].status}"
            except (OSError, NearmetalError) as exc:
                assert "fault injected" in str(exc), exc
                outcome = type(exc).__name__
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        where = f"call {counter.fail_at}" if counter.fail_at else "after setup"
        left = host_objects(run_id) | _swept_leaks(db, run_id)
        assert not left, f"{kind}: a fault at {where} of setup ({counting.calls}) left {sorted(left)}"
    shown = ", ".join(f"{n}× {o}" for o, n in sorted(outcomes.items()))
    _record(kind, "setup-error", f"clean ({len(faults)} faults over {total} setup calls + after: {shown})")


def _main_outputs(run_dir: Path, run_id: str) -> list[Path]:
    """The workload's stdout: in the run's trial directory, or, for a rootless trial run by root, in the
    user's directory for it until the trial ends (``nearmetal.run.asuser``)."""
    from nearmetal.layers.rootless import STAGING_BASE

    staged = STAGING_BASE.glob(f"nearmetal-{run_id}-*-rootless/trial/main.stdout")
    return [*run_dir.glob("*/main.stdout"), *staged]


def _wait_ready(run_dir: Path, proc: subprocess.Popen, timeout_s: float = 90) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        for out in _main_outputs(run_dir, run_dir.name):
            try:
                if READY in out.read_text(errors="replace"):
                    return True
            except OSError:
                pass
        time.sleep(0.05)
    return False


@pytest.mark.root
@pytest.mark.parametrize("path", INTERRUPTED)
@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_interrupted_runner_leaves_nothing(kind: str, path: str, tmp_path: Path) -> None:
    import threading

    from nearmetal.run.runner import RunInterrupted

    config = layer_config(kind)
    db = f"sqlite:///{tmp_path / 'results.db'}"
    plan = _plan(tmp_path, config, SCRIPTS[path], "120s")
    run_id = _new_run_id(path)
    sig = signal.SIGINT if path == "sigint" else signal.SIGTERM
    running = threading.Event()
    running.set()
    sent: list[bool] = []

    def interrupt_when_ready() -> None:
        # signal this process once the workload runs (it sleeps 60 s: the run is still inside its trial)
        deadline = time.monotonic() + 90
        while running.is_set() and time.monotonic() < deadline:
            for out in _main_outputs(tmp_path / "runs" / run_id, run_id):
                try:
                    text = out.read_text(errors="replace")
                except OSError:
                    continue  # a rootless trial's directory, removed as it ended
                if READY in text and running.is_set():
                    sent.append(True)
                    os.kill(os.getpid(), sig)
                    return
            time.sleep(0.05)

    def late(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt  # a signal after the run restored its handlers must not end pytest

    previous = signal.signal(sig, late)
    sender = threading.Thread(target=interrupt_when_ready, daemon=True)
    sender.start()
    try:
        try:
            nearmetal.run_plan(plan, db=db, workdir=tmp_path / "runs", run_id=run_id)
        except RunInterrupted as exc:
            assert exc.signal_name == sig.name
        else:
            pytest.fail(f"the run ended without being interrupted: {_stored_trials(db, run_id)}")
    except NearmetalError as exc:
        running.clear()
        _skip_if_host_cannot(kind, path, run_id, exc)
    finally:
        running.clear()
        sender.join(timeout=5)
        signal.signal(sig, previous)
    assert sent, "the workload never started"
    _assert_clean(kind, path, run_id, db=db)


@pytest.mark.root
@pytest.mark.parametrize("path", KILLED)
@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_sigkilled_runner_leaves_nothing_after_cleanup(kind: str, path: str, tmp_path: Path) -> None:
    config = layer_config(kind)
    db = f"sqlite:///{tmp_path / 'results.db'}"
    plan = _plan(tmp_path, config, SCRIPTS[path], "120s")
    run_id = _new_run_id(path)
    env = {**os.environ, "NEARMETAL_DB": db}
    runner = subprocess.Popen(
        [*nearmetal_argv(), "run", str(plan), "--run-id", run_id, "-q", "--no-html"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready = _wait_ready(tmp_path / "nearmetal-runs" / run_id, runner)
        if not ready and runner.poll() is not None:
            _, err = runner.communicate()
            if "error" in err:
                _skip_if_host_cannot(kind, path, run_id, NearmetalError(err.strip().splitlines()[-1]))
            raise AssertionError(
                f"the run ended before its workload was ready: {err} {_stored_trials(db, run_id)}"
            )
        runner.send_signal(signal.SIGKILL)
        runner.communicate(timeout=120)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    note = "" if ready else "killed before the workload was ready"
    cleanup = subprocess.run(
        [*nearmetal_argv(), "cleanup", run_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert cleanup.returncode == 0, cleanup.stderr
    note = (note + "; " if note else "") + f"cleanup removed {cleanup.stdout.count('removed ')}"
    _assert_clean(kind, path, run_id, note, db=db)
