"""Hostile and broken plans: fuzzed documents end in a plan or one-line problems; no plan value reaches a
shell; nearmetal writes only where it may; YAML is loaded safely; plans too large for the machine are
refused unless the operator says otherwise.

``NEARMETAL_FUZZ_EXAMPLES`` documents per family (default 30 here, a smoke test of each family; 150 in
tests/integration/test_hostile_plans_fuzz.py; the notes' figure comes from ``benchmarks/fuzz_plans.py`` with
10,000+)."""

from __future__ import annotations

import ast
import os
import sys
import time
from pathlib import Path

import pytest
import sourcetree
from conftest import REPO
from helpers import fio_plan, write_plan
from hypothesis import HealthCheck, given, settings
from plan_fuzz import FAMILIES, alias_bomb, check, deep

import nearmetal
from nearmetal.confine import confine
from nearmetal.errors import PlanError
from nearmetal.host.machine import TooLargeError
from nearmetal.plan import parse_plan_text
from nearmetal.plan.paths import check_plan_paths

EXAMPLES = int(os.environ.get("NEARMETAL_FUZZ_EXAMPLES", "30"))
PY = sys.executable


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_generated_document_is_a_plan_or_one_line_problems(family: str) -> None:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(FAMILIES[family])
    def one(text: str) -> None:
        check(text)

    one()


@pytest.mark.parametrize("where", ["top", "matrix", "layer"])
def test_alias_bombs_are_refused_before_anything_is_built(where: str) -> None:
    text = alias_bomb(10, 9, where)  # 10^9 values once expanded
    started = time.monotonic()
    with pytest.raises(PlanError) as info:
        parse_plan_text(text, "bomb.yaml")
    assert time.monotonic() - started < 5
    assert "expands to more than 100,000 values" in info.value.problems[0]


def test_deep_nesting_is_one_clear_line() -> None:
    for depth in (70, 5000):
        with pytest.raises(PlanError) as info:
            parse_plan_text(deep(depth, "["), "deep.yaml")
        assert len(info.value.problems) == 1 and "nest" in info.value.problems[0]


def test_duplicate_keys_are_refused_not_silently_dropped() -> None:
    text = """
name: dup
workloads: {w: {kind: stress-ng}}
variants:
  limited: []
  limited: [{layer: cpu-quota, cpus: 0.5}]
"""
    with pytest.raises(PlanError) as info:
        parse_plan_text(text, "dup.yaml")
    assert info.value.problems == [
        "dup.yaml:6 limited: duplicate key (first at line 5); YAML would keep only the last one"
    ]


def test_yaml_never_builds_objects_and_odd_keys_stay_on_one_line() -> None:
    for text in (
        "name: !!python/object/apply:os.system ['touch /tmp/nearmetal-yaml-pwned']\n",
        "!!python/name:os.system\n",
        'name: x\nworkloads: {"w\\nx": {kind: stress-ng}}\nvariants: {a: []}\n',
    ):
        with pytest.raises(PlanError) as info:
            parse_plan_text(text, "odd.yaml")
        assert all("\n" not in p for p in info.value.problems)
    assert not Path("/tmp/nearmetal-yaml-pwned").exists()


def test_an_escape_past_the_last_code_point_is_one_line() -> None:
    # found by benchmarks/fuzz_plans.py: PyYAML raised a bare ValueError from chr()
    text = 'name: x\nworkloads: {w: {kind: stress-ng}}\nvariants: {a: [], "\\U00110000": []}\n'
    with pytest.raises(PlanError) as info:
        parse_plan_text(text, "escape.yaml")
    (problem,) = info.value.problems
    assert problem.startswith("escape.yaml: YAML error:") and "\n" not in problem


def test_shell_metacharacters_in_plan_values_stay_text(tmp_path: Path, db_url: str) -> None:
    marker = tmp_path / "pwned"
    payloads = [f"$(touch {marker})", f"`touch {marker}`", f"; touch {marker}", f"| touch {marker}"]
    plan = write_plan(
        tmp_path,
        f"""
        name: meta
        workloads:
          echo:
            kind: command
            params:
              argv: ["{PY}", "-c", "import sys; print(repr(sys.argv[1:]))", {", ".join(repr(p) for p in payloads)}]
              env: {{NEARMETAL_FUZZ: "$(touch {marker})"}}
        variants: {{a: []}}
        repeats: 1
        """,
    )
    result = nearmetal.run_plan(plan, db=db_url, workdir=tmp_path / "runs")
    assert result.records[0].status == "ok"
    out = (tmp_path / "runs" / result.run_id / result.records[0].trial.key / "main.stdout").read_text()
    assert repr(payloads) in out  # passed as arguments, byte for byte
    assert not marker.exists()


def _constant_text(node: ast.AST, constants: set[str]) -> bool:
    """A string expression built only from literals and names already known to be constants."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.Name):
        return node.id in constants
    if isinstance(node, ast.JoinedStr):
        return all(
            isinstance(v, ast.Constant)
            or (isinstance(v, ast.FormattedValue) and _constant_text(v.value, constants))
            for v in node.values
        )
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _constant_text(node.left, constants) and _constant_text(node.right, constants)
    return False


def test_no_source_file_hands_a_string_to_a_shell() -> None:
    """Every subprocess is an argv list: no shell=True, os.system, os.popen; a `sh -c` script is a constant
    (the values it works on are positional arguments)."""
    problems = []
    parsed = sourcetree.modules()  # parsed once per session, shared with the house tests
    trees = {module: parsed[module].tree for module in parsed}
    # module-level names bound to strings made only of literals and constants, also through
    # `from nearmetal.x import NAME` of another module's constant (two passes follow a chain of two)
    known: dict[str, set[str]] = {module: set() for module in trees}
    for _ in range(2):
        for module, tree in trees.items():
            constants = known[module]
            for node in tree.body:
                if isinstance(node, ast.ImportFrom) and node.module in known:
                    constants |= {a.asname or a.name for a in node.names if a.name in known[node.module]}
                if isinstance(node, ast.Assign) and _constant_text(node.value, constants):
                    constants |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    for module, tree in trees.items():
        path = parsed[module].path.relative_to(REPO)
        constants = known[module]
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.keyword)
                and node.arg == "shell"
                and not (isinstance(node.value, ast.Constant) and node.value.value is False)
            ):
                problems.append(f"{path}:{getattr(node, 'lineno', '?')}: shell=…")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                name = f"{getattr(node.func.value, 'id', '')}.{node.func.attr}"
                if name in ("os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput"):
                    problems.append(f"{path}:{getattr(node, 'lineno', '?')}: {name}")
            if isinstance(node, ast.List):
                items = node.elts
                for i, item in enumerate(items[:-1]):
                    if isinstance(item, ast.Constant) and item.value == "-c":
                        before = items[i - 1] if i else None
                        shell = (
                            isinstance(before, ast.Constant)
                            and str(before.value).rsplit("/", 1)[-1] in ("sh", "bash")
                        ) or (isinstance(before, ast.Name) and before.id in ("SH", "SHELL"))
                        script = items[i + 1]
                        constant = isinstance(script, ast.Constant) or (
                            isinstance(script, ast.Name) and script.id in constants
                        )
                        if shell and not constant:
                            problems.append(
                                f"{path}:{getattr(node, 'lineno', '?')}: sh -c with a script that is not a constant"
                            )
    assert not problems, problems


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (
            {"options": {"exec_prerun": "touch /tmp/x"}},
            "fio option 'exec_prerun' is not allowed in a plan: fio runs",
        ),
        ({"options": {"filename": "/dev/sda"}}, "fio option 'filename' is not allowed"),
        ({"options": {"ioengine": "external:/tmp/evil.so"}}, "fio option 'ioengine' is not allowed"),
        # issue 18: fio's own command line takes --output and --client; a deny-list let them through
        (
            {"options": {"output": "/etc/passwd"}},
            "fio option 'output' is not allowed in a plan: it redirects",
        ),
        (
            {"options": {"client": "evil.example"}},
            "fio option 'client' is not allowed in a plan: it makes fio",
        ),
        ({"options": {"server": "0.0.0.0"}}, "fio option 'server' is not allowed"),
        ({"options": {"daemonize": "/tmp/pid"}}, "fio option 'daemonize' is not allowed"),
        ({"options": {"verify_dump": 1}}, "fio option 'verify_dump' is not allowed"),
        ({"options": {"exec_postrun": "id"}}, "fio option 'exec_postrun' is not allowed"),
        ({"options": {"trigger_cmd": "id"}}, "fio option 'trigger_cmd' is not allowed"),
        ({"options": {"opendir": "/"}}, "fio option 'opendir' is not allowed"),
        ({"options": {"replay_redirect": "/dev/sda"}}, "fio option 'replay_redirect' is not allowed"),
        ({"options": {"cgroup": "x"}}, "fio option 'cgroup' is not allowed"),
        ({"options": {"ioscheduler": "none"}}, "fio option 'ioscheduler' is not allowed"),
        # unknown options are refused, not passed through (an allow-list)
        ({"options": {"bwavgtime": 500}}, "fio option 'bwavgtime' is not one nearmetal passes through"),
        ({"options": {"status_interval": 1}}, "is not one nearmetal passes through"),
        ({"options": {"eta_newline": 1}}, "is not one nearmetal passes through"),
        ({"options": {"write_bw_log": "/etc/cron.d/x"}}, "give a relative path"),
        ({"options": {"write_lat_log": "../../x"}}, "climbs out of the trial's directory"),
        ({"options": {"read_iolog": "/etc/shadow"}}, "give a relative path"),
        ({"options": {"write_iolog": ""}}, "give a relative path"),
        # a value with a line break would forge a line in the recorded fio-job.fio (issue 18, item 9)
        ({"options": {"rate": "1m\nexec_prerun=touch /tmp/x"}}, "the value contains a line break"),
        ({"options": {"rate": "1m\rx"}}, "the value contains a carriage return"),
        ({"options": {"thinktime": "1\u0000"}}, "NUL"),
        ({"directory": "data\nexec_prerun=id"}, "cannot contain a line break"),
    ],
)
def test_fio_options_that_reach_a_shell_or_pick_files_are_refused(params: dict, expected: str) -> None:
    import yaml

    text = yaml.safe_dump(
        {"name": "x", "workloads": {"f": {"kind": "fio", "params": params}}, "variants": {"a": []}}
    )
    with pytest.raises(PlanError) as info:
        parse_plan_text(text, "fio.yaml")
    assert any(expected in p for p in info.value.problems), info.value.problems
    assert all("\n" not in p for p in info.value.problems)


def test_a_fio_log_linked_out_of_the_trial_is_refused_when_it_is_used(tmp_path: Path) -> None:
    from nearmetal.workloads.base import WorkloadContext
    from nearmetal.workloads.fio import FioParams, FioWorkload

    (tmp_path / "logs").symlink_to("/etc")
    params = FioParams(options={"write_bw_log": "logs/bw"})
    with pytest.raises(PlanError, match="outside"):
        FioWorkload().processes(params, WorkloadContext(trial_dir=tmp_path, is_root=True))


def test_written_paths_are_confined_to_the_run_or_allowed_places(tmp_path: Path) -> None:
    for bad in ("../../etc", "data/../../../etc", "/etc", "/etc/../etc/cron.d"):
        with pytest.raises(PlanError) as info:
            check_plan_paths(parse_plan_text(fio_plan(bad), "p.yaml"))
        problem = info.value.problems[0]
        assert problem.startswith("p.yaml:3 workloads.f.params.directory: "), problem
    # relative paths that stay below the trial's directory are fine
    check_plan_paths(parse_plan_text(fio_plan("data/fio"), "p.yaml"))
    # an absolute path is fine when the operator allows it, not when the plan's link leads out of it
    allowed = tmp_path / "scratch"
    allowed.mkdir()
    check_plan_paths(parse_plan_text(fio_plan(str(allowed / "fio")), "p.yaml"), [allowed])
    (allowed / "escape").symlink_to("/etc")
    with pytest.raises(PlanError, match="it leads to /etc"):
        check_plan_paths(parse_plan_text(fio_plan(str(allowed / "escape")), "p.yaml"), [allowed])
    # the layer's own default root stays allowed; anything else for a cgroup root is not
    check_plan_paths(
        parse_plan_text(
            "name: x\nworkloads: {w: {kind: stress-ng}}\nvariants:\n  q: [{layer: cpu-quota, cpus: 1, cgroup_root: /sys/fs/cgroup}]\n",
            "p.yaml",
        )
    )
    with pytest.raises(PlanError, match=r"p.yaml:4 variants.q\[0\].cgroup_root: /etc is outside"):
        check_plan_paths(
            parse_plan_text(
                "name: x\nworkloads: {w: {kind: stress-ng}}\nvariants:\n  q: [{layer: cpu-quota, cpus: 1, cgroup_root: /etc}]\n",
                "p.yaml",
            )
        )
    # and at the moment of use, a link made after the check does not lead writes out either
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "data").symlink_to("/etc")
    with pytest.raises(PlanError, match="outside"):
        confine("data/file", run_dir)
    assert confine("fine/file", run_dir) == run_dir.resolve() / "fine/file"


def test_plans_too_large_for_the_machine_are_refused_until_allowed(tmp_path: Path, db_url: str) -> None:
    plan = write_plan(
        tmp_path,
        f"""
        name: huge
        workloads:
          burn: {{kind: stress-ng, params: {{workers: {16 * (os.cpu_count() or 1) + 1}, ops: 1}}}}
          many: {{kind: command, params: {{argv: ["true"]}}}}
        variants: {{a: []}}
        repeats: 30000
        """,
    )
    with pytest.raises(TooLargeError) as info:
        nearmetal.run_plan(plan, db=db_url, workdir=tmp_path / "runs")
    message = str(info.value)
    assert "stress-ng workers=" in message and "busy processes" in message
    assert "60,000 trials" in message
    assert "--allow-large" in message
    assert not (tmp_path / "runs").exists()


def test_a_run_directory_that_is_a_link_is_refused(tmp_path: Path, db_url: str) -> None:
    plan = write_plan(
        tmp_path,
        f"name: l\nworkloads: {{w: {{kind: command, params: {{argv: [{PY!r}, -c, pass]}}}}}}\nvariants: {{a: []}}\nrepeats: 1\n",
    )
    workdir = tmp_path / "runs"
    workdir.mkdir()
    (workdir / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(nearmetal.run.runner.NearmetalError, match="is a symbolic link"):
        nearmetal.run_plan(plan, db=db_url, workdir=workdir, run_id="linked")


def test_a_regex_with_catastrophic_backtracking_cannot_hang_the_runner(tmp_path: Path, db_url: str) -> None:
    # Python's re takes ~2^40 steps on this; RE2 is linear in the output (issue 18, item 5)
    plan = write_plan(
        tmp_path,
        f"""
        name: redos
        workloads:
          w:
            kind: command
            params:
              argv: [{PY!r}, -c, "print('a' * 40 + '!'); print('n 7')"]
              metrics:
                - {{name: evil, regex: '^(a+)+$', direction: higher}}
                - {{name: n, regex: 'n (?P<value>\\d+)', direction: higher}}
        variants: {{a: []}}
        repeats: 1
        timeout: 60s
        """,
    )
    started = time.monotonic()
    result = nearmetal.run_plan(plan, db=db_url, workdir=tmp_path / "runs")
    assert time.monotonic() - started < 30
    record = result.records[0]
    assert record.status != "ok" and "regex '^(a+)+$' matched nothing" in (record.error or "")


@pytest.mark.parametrize(
    ("regex", "expected"),
    [
        ("(a)\\1", "no backreferences or lookaround"),
        ("(?<=x)(\\d+)", "no backreferences or lookaround"),
        ("(unclosed", "missing )"),
        ("\\d+", "needs a capturing group"),
    ],
)
def test_a_metric_regex_is_checked_at_plan_load(regex: str, expected: str) -> None:
    import yaml

    text = yaml.safe_dump(
        {
            "name": "x",
            "workloads": {
                "w": {
                    "kind": "command",
                    "params": {
                        "argv": ["true"],
                        "metrics": [{"name": "m", "regex": regex, "direction": "higher"}],
                    },
                }
            },
            "variants": {"a": []},
        }
    )
    with pytest.raises(PlanError) as info:
        parse_plan_text(text, "re.yaml")
    (problem,) = info.value.problems
    assert expected in problem and "\n" not in problem, problem
