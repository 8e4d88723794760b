"""The options several commands share: where trials run (``--backend`` and every registered backend's own
options, generated from the registry), the working directory and the run's permissions."""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Annotated, Any

import typer


def complete_backend(incomplete: str) -> list[str]:
    """Tab completion of --backend: the registered backends."""
    from nearmetal.backends.base import BACKENDS

    return [name for name in BACKENDS if name.startswith(incomplete)]


WorkdirOption = Annotated[Path, typer.Option("--workdir", help="where trial outputs are kept")]
BackendOption = Annotated[
    str,
    typer.Option(
        "--backend",
        help="where trials run (the registered backends)",
        autocompletion=complete_backend,
    ),
]
# a command's backend options, as ``with_backend_options`` hands them over: key → value (None: not given)
BackendOptions = dict[str, Any] | None
BACKEND_PANEL = "Backend options"


class with_backend_options:
    """A command with every registered backend's command-line options (``Cli`` fields of each backend's
    ``Options``, ``backends.base.backend_cli_options``): real named options (``--partition``,
    ``--namespace`` …) with their fields' help, in the help's "Backend options" panel. The command gets
    them as one ``backend_options`` argument (key → value, None: not given).

    The options are read from the backend registry each time typer builds the command (``__signature__``
    is computed, not stored), so a backend registered later — a plugin, a test's — is there too."""

    def __init__(self, command: Any) -> None:
        functools.update_wrapper(self, command)
        self.command = command

    @staticmethod
    def _param(option: Any) -> inspect.Parameter:
        annotation = Annotated[
            option.type | None,
            typer.Option(option.flag, help=option.help, envvar=option.envvar, rich_help_panel=BACKEND_PANEL),
        ]
        return inspect.Parameter(
            f"backend_opt_{option.key}", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation
        )

    @staticmethod
    def _backend() -> Any:
        """``--backend``, its help naming the registered backends (the host's first)."""
        from nearmetal.backends.base import BACKENDS

        names = sorted(BACKENDS, key=lambda n: (BACKENDS[n].remote, n))
        words = ", ".join(f"{n} ({BACKENDS[n].summary})" if BACKENDS[n].summary else n for n in names)
        help = f"where trials run: {words}"
        return Annotated[str, typer.Option("--backend", help=help, autocompletion=complete_backend)]

    @property
    def __signature__(self) -> inspect.Signature:
        from nearmetal.backends.base import backend_cli_options

        own = inspect.signature(self.command, eval_str=True)
        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own.parameters.values()]
        params = [p for p in params if p.name != "backend_options"]
        params = [p.replace(annotation=self._backend()) if p.name == "backend" else p for p in params]
        return own.replace(parameters=params + [self._param(o) for o in backend_cli_options()])

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        given = {
            k.removeprefix("backend_opt_"): kwargs.pop(k)
            for k in list(kwargs)
            if k.startswith("backend_opt_")
        }
        return self.command(*args, backend_options=given, **kwargs)


ShieldOption = Annotated[
    bool,
    typer.Option(
        "--shield",
        help="every trial (baseline included) in a cgroup of the highest CPU and I/O weight, above the layers'"
        " cgroups (a quota still binds): conclusive on a busy host; recorded on the run (local backend, root)",
    ),
]
AllowLargeOption = Annotated[
    bool,
    typer.Option(
        "--allow-large",
        help="run even when the plan asks for more CPUs, memory, disk or trials than this machine has",
    ),
]
AllowSharedWorkdirOption = Annotated[
    bool,
    typer.Option(
        "--allow-shared-workdir",
        help="use a --workdir below a directory another (non-root) user can write, or own; such a user could "
        "redirect the run's files (refused without this; see SECURITY.md)",
    ),
]
AllowPathOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--allow-path",
        metavar="DIR",
        help="a directory outside the run's directory the plan may write into (fio.directory …); repeatable",
    ),
]
AllowNetworkOption = Annotated[
    bool,
    typer.Option(
        "--allow-network",
        help="let the runner itself reach the network where the plan asks (energy.prometheus_url)",
    ),
]
OptionalWorkdirOption = Annotated[
    Path | None,
    typer.Option(
        "--workdir",
        help="where trial outputs are kept \\[default: ./nearmetal-runs; a resumed run: where it was]",
    ),
]
