"""CLI habits: shell completion, a help text for every option and argument, flags shown as flags, and the
backend options of ``run`` on ``study`` too."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from nearmetal.cli import app

NEARMETAL = Path(sys.executable).with_name("nearmetal")


def _commands() -> dict:
    group = typer.main.get_command(app)
    ctx = group.make_context("nearmetal", ["--help"], resilient_parsing=True)
    return {name: group.get_command(ctx, name) for name in group.list_commands(ctx)}


def test_every_option_and_argument_has_help() -> None:
    empty = [
        f"{name} {param.opts[0] if param.opts else param.name}"
        for name, command in _commands().items()
        if not command.hidden
        for param in command.params
        if not (getattr(param, "help", None) or "").strip()
    ]
    assert empty == []


def test_help_shows_flags_as_flags() -> None:
    runner = CliRunner()
    commands = [name for name, command in _commands().items() if not command.hidden]
    assert {"run", "study", "runs", "export", "check", "report"} <= set(commands)
    for name in [None, *commands]:
        result = runner.invoke(app, [*([name] if name else []), "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, (name, result.output)
        assert "<bool>" not in result.output, name
    study = runner.invoke(app, ["study", "--help"], env={"COLUMNS": "200"}).output
    assert "--quiet" in study and "no progress bar" in study


def test_study_takes_every_backend_option_of_run() -> None:
    commands = _commands()

    def options(name: str) -> set[str]:
        return {opt for param in commands[name].params for opt in param.opts if opt.startswith("--")}

    # --resume continues a stored run of a plan file (a study resumes with `nearmetal resume RUN`)
    missing = options("run") - options("study") - {"--resume"}
    assert missing == set()
    assert {"--backend", "--image", "--namespace", "--kubeconfig", "--partition", "--account"} <= options(
        "study"
    )


def test_study_passes_the_kubernetes_options_to_the_backend(tmp_path: Path, run_cli) -> None:
    """`study --backend kubernetes --image …` gets as far as the cluster: here, a kubeconfig that does not
    exist (it used to stop at "no such option: --image")."""
    missing = tmp_path / "no-such-kubeconfig"
    proc = run_cli(
        "study", "cpu-quota", "--quick", "--backend", "kubernetes", "--image", "example/img:1",
        "--namespace", "nm-test", "--kubeconfig", str(missing), "--no-html", timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "No such option" not in proc.stderr
    assert str(missing) in proc.stderr or "kubeconfig" in proc.stderr.lower(), proc.stderr


@pytest.mark.skipif(not NEARMETAL.exists(), reason="the nearmetal script is not installed beside python")
def test_shell_completion(tmp_path: Path) -> None:
    env = {**os.environ, "SHELL": "/bin/bash"}
    script = subprocess.run(
        [str(NEARMETAL), "--show-completion", "bash"], capture_output=True, text=True, timeout=60, env=env
    )
    assert script.returncode == 0 and "_NEARMETAL_COMPLETE=complete_bash" in script.stdout

    def complete(*words: str) -> list[str]:
        proc = subprocess.run(
            [str(NEARMETAL)],
            capture_output=True,
            text=True,
            timeout=60,
            env={
                **env,
                "_NEARMETAL_COMPLETE": "complete_bash",
                "COMP_WORDS": " ".join(["nearmetal", *words]),
                "COMP_CWORD": str(len(words)),
            },
        )
        return proc.stdout.split()

    assert "study" in complete("stu")
    assert set(complete("study", "--qu")) == {"--quick", "--quiet"}
    assert set(complete("study", "fs")) == {"fs-layers"}  # the shipped studies' names
