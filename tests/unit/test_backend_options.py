"""A backend is one file: its class carries its options, and the plan model, the plan's JSON Schema and the
command line's backend options are built from the backend registry. Shown with a backend this test
registers (and takes out again): nothing else in nearmetal names it."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Annotated, Any, ClassVar

import pytest
from pydantic import BaseModel, Field
from typer.testing import CliRunner

from nearmetal.backends.base import (
    BACKENDS,
    RemoteBackend,
    RemoteHooks,
    backend_cli_options,
    register_backend,
)
from nearmetal.backends.select import make_backend
from nearmetal.cli import app
from nearmetal.errors import NearmetalError
from nearmetal.plan import LoadedPlan, parse_plan_text, plan_json_schema, plan_model
from nearmetal.plan.backend_options import BACKEND_OPTIONS, Cli, StrictOptions
from nearmetal.run.trial import TrialOutcome, TrialSpec


class QueueOptions(StrictOptions):
    queue: Annotated[str | None, Cli("--dummy-queue")] = Field(
        None, pattern=r"^[a-z]+$", description="the dummy scheduler's queue"
    )
    slots: Annotated[int, Cli("--dummy-slots")] = Field(1, ge=1, le=8, description="slots per job")
    plan_only: bool = Field(False, description="a plan may set it; no command-line option")


class DummyBackend(RemoteBackend):
    """A scheduler that runs nothing: its check refuses every plan, naming its options."""

    name = "dummy"
    summary = "runs nothing"
    Options = QueueOptions
    cli_only: ClassVar[tuple[Cli, ...]] = (Cli("--dummy-token", key="token", help="a secret file"),)

    def __init__(self, options: QueueOptions, token: str | None) -> None:
        self.options, self.token = options, token

    @classmethod
    def from_plan(cls, plan: BaseModel | None = None, **given: Any) -> DummyBackend:
        return cls(cls.options_from(plan, given), given.get("token"))

    def check(self, loaded: LoadedPlan) -> None:
        raise NearmetalError(
            f"dummy: queue={self.options.queue} slots={self.options.slots} token={self.token} "
            f"plan_only={self.options.plan_only} cells={len(loaded.cells)}"
        )

    def run_trials(
        self, specs: list[TrialSpec], hooks: RemoteHooks
    ) -> Generator[tuple[TrialSpec, TrialOutcome], None, None]:
        yield from ()


@pytest.fixture
def dummy() -> Iterator[type[DummyBackend]]:
    plan_model.cache_clear()
    register_backend(DummyBackend)
    plan_model.cache_clear()
    try:
        yield DummyBackend
    finally:
        BACKENDS.remove("dummy")
        BACKEND_OPTIONS.remove("dummy")
        plan_model.cache_clear()


PLAN = """
name: dummy-plan
workloads:
  w: {kind: command, params: {argv: ["true"]}}
variants:
  bare: []
dummy: {queue: fromplan, plan_only: true}
"""


def test_a_registered_backend_is_in_the_help_the_schema_and_the_plan(dummy: type, tmp_path: Path) -> None:
    runner = CliRunner()
    for command in ("run", "study", "check", "resume"):
        result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        for flag in ("--dummy-queue", "--dummy-slots", "--dummy-token", "--partition", "--namespace"):
            assert flag in result.output, (command, flag)
        assert "dummy: the dummy scheduler's queue" in result.output
        if command != "resume":  # a resumed run keeps its backend
            assert "dummy (runs nothing)" in result.output
        assert "--plan-only" not in result.output  # only fields marked Cli are options
    flags = [o.flag for o in backend_cli_options()]
    assert len(flags) == len(set(flags))

    schema = plan_json_schema()
    section = schema["properties"]["dummy"]
    assert section["description"] == "options for --backend dummy"
    assert set(schema["$defs"]["QueueOptions"]["properties"]) == {"queue", "slots", "plan_only"}
    assert {"slurm", "kubernetes"} <= set(schema["properties"])

    loaded = parse_plan_text(PLAN, "dummy.yaml")
    backend = make_backend("dummy", loaded.plan, queue=None, slots=3, token="t")
    assert isinstance(backend, DummyBackend)
    # the plan's section, the command line's values over it; a value not given leaves the plan's
    assert (backend.options.queue, backend.options.slots, backend.options.plan_only) == ("fromplan", 3, True)
    with pytest.raises(NearmetalError, match=r"--dummy-slots / dummy.slots 9"):
        make_backend("dummy", loaded.plan, slots=9)

    # the whole way: the command line's options reach the backend's check
    plan = tmp_path / "dummy.yaml"
    plan.write_text(PLAN)
    result = runner.invoke(
        app,
        ["check", str(plan), "--backend", "dummy", "--dummy-queue", "cli", "--dummy-token", "x"],
        env={"COLUMNS": "300"},
    )
    assert result.exit_code == 2
    assert "dummy: queue=cli slots=1 token=x plan_only=True cells=1" in result.output


def test_without_it_nothing_names_it() -> None:
    plan_model.cache_clear()
    assert "dummy" not in plan_json_schema()["properties"]
    assert "--dummy-queue" not in [o.flag for o in backend_cli_options()]
    with pytest.raises(NearmetalError, match="unknown backend 'dummy'"):
        make_backend("dummy")


def test_a_resumed_run_keeps_its_stored_options_and_takes_the_command_lines(
    dummy: type, tmp_path: Path
) -> None:
    """``resume`` rebuilds the run's backend from its stored options; an option given again replaces one."""
    from nearmetal.run.writer import record_new_run
    from nearmetal.store import Store

    db = f"sqlite:///{tmp_path / 'runs.db'}"
    loaded = parse_plan_text(PLAN, "dummy.yaml")
    stored = make_backend("dummy", loaded.plan, slots=2)
    store = Store(db)
    info = {"backend_options": stored.options.model_dump(mode="json")}
    record_new_run(store, loaded, "r1", tmp_path / "r1", "dummy", 7, info)
    store.finish_run("r1", "failed")
    store.dispose()
    result = CliRunner().invoke(
        app, ["resume", "r1", "--db", db, "--dummy-slots", "5", "--dummy-token", "y"], env={"COLUMNS": "300"}
    )
    assert result.exit_code != 0
    assert "dummy: queue=fromplan slots=5 token=y plan_only=True cells=1" in result.output
