"""Backends: where a trial runs. The interface every backend implements, the registry that names them, and
what a backend returns for one trial (outputs of its processes, how they ended, where they ran).

Two kinds: a host backend (``remote`` False) runs a trial's processes on this host (the runner stacks the
layers around it: ``trial.execute_trial``); a remote backend (Slurm, Kubernetes) takes whole trials and
runs them elsewhere, yielding their outcomes as its jobs end. The runner uses only ``Backend``'s methods.

A backend is one module (or package): its class, registered with ``@register_backend``, carries its
``Options`` (a pydantic model: the plan's ``<name>:`` section; fields annotated ``Cli("--flag")`` are
also command-line options of ``run``, ``study``, ``check`` and ``resume``) and builds itself with
``from_plan``. Nothing else lists it."""

from __future__ import annotations

import os
import signal as signal_mod
import stat
from abc import ABC, abstractmethod
from collections.abc import Generator
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import NoneType, UnionType
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from nearmetal.errors import NearmetalError
from nearmetal.metrics import Metric
from nearmetal.plan.backend_options import BACKEND_OPTIONS, Cli
from nearmetal.registry import Registry
from nearmetal.workloads.base import ProcessSpec

if TYPE_CHECKING:
    from typing import Self

    from nearmetal.backends.spec import TrialOutcome, TrialSpec
    from nearmetal.plan import LoadedPlan
    from nearmetal.run.resume import ResumeState

STDERR_TAIL_BYTES = 4000
# a process's output goes to a file as it is written; what parsers see of it is at most this much: the
# first OUTPUT_HEAD_BYTES and the rest from the end, with a line saying how much was left out between.
# Memory stays flat in the output's size (a workload writing 2 GB to stdout costs the runner ~100 MB)
OUTPUT_READ_BYTES = 32 << 20
OUTPUT_HEAD_BYTES = 8 << 20


def _open_output(path: Path) -> int | None:
    """The output file opened for reading: a regular file, not followed through a symbolic link, never
    a FIFO that would block; None when there is none."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def _read_at(fd: int, offset: int, size: int) -> bytes:
    chunks = []
    while size > 0:
        chunk = os.pread(fd, min(size, 1 << 20), offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def read_output(path: Path, limit: int = OUTPUT_READ_BYTES, head: int = OUTPUT_HEAD_BYTES) -> str:
    """At most ``limit`` bytes of an output file as text: all of it when it is smaller, else its first
    ``head`` bytes, a line naming how many bytes were left out, and its last ``limit - head`` bytes."""
    fd = _open_output(path)
    if fd is None:
        return ""
    try:
        size = os.fstat(fd).st_size
        if size <= limit:
            return _read_at(fd, 0, limit).decode(errors="replace")
        first = _read_at(fd, 0, head).decode(errors="replace")
        last = _read_at(fd, size - (limit - head), limit - head).decode(errors="replace")
        return f"{first}\n[nearmetal: {size - limit:,} bytes of this output left out here]\n{last}"
    finally:
        os.close(fd)


def read_tail(path: Path, limit: int) -> str:
    """The last ``limit`` bytes of an output file as text (nothing before them is read)."""
    fd = _open_output(path)
    if fd is None:
        return ""
    try:
        size = os.fstat(fd).st_size
        return _read_at(fd, max(0, size - limit), limit).decode(errors="replace")
    finally:
        os.close(fd)


@dataclass
class ProcessResult:
    role: str
    label: str
    argv: list[str]
    stdout_path: Path
    stderr_path: Path
    returncode: int | None = None
    timed_out: bool = False
    started_at: float | None = None
    ended_at: float | None = None
    ready_at: float | None = None  # a background process: when its readiness check passed

    @property
    def signal(self) -> int | None:
        return -self.returncode if self.returncode is not None and self.returncode < 0 else None

    @property
    def signal_name(self) -> str | None:
        if self.signal is None:
            return None
        try:
            return signal_mod.Signals(self.signal).name
        except ValueError:
            return f"signal {self.signal}"

    def read_stdout(self) -> str:
        """The process's stdout, at most OUTPUT_READ_BYTES of it (its head and tail)."""
        return read_output(self.stdout_path)

    def read_stderr(self) -> str:
        return read_output(self.stderr_path)

    def stderr_tail(self, limit: int = STDERR_TAIL_BYTES) -> str:
        return read_tail(self.stderr_path, limit)


@dataclass
class Execution:
    """The outcome of running a trial's processes."""

    main: ProcessResult
    others: list[ProcessResult] = field(default_factory=list)
    wall_s: float = 0.0
    metrics: list[Metric] = field(default_factory=list)  # telemetry
    placement: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # a problem outside the main process (a background process died early)

    @property
    def ok(self) -> bool:
        return self.error is None and not self.main.timed_out and self.main.returncode == 0


def _scalar(annotation: Any) -> type:
    """The one type of an option's annotation, ``None`` left out (``str | None`` → str)."""
    if get_origin(annotation) in (Union, UnionType):
        args = [a for a in get_args(annotation) if a is not NoneType]
        annotation = args[0] if len(args) == 1 else str
    return annotation if annotation in (str, int, float, bool) else str


class Backend(ABC):
    """Where a trial runs. A host backend implements ``execute``; a remote backend (``remote = True``)
    ``check`` and ``run_trials``, and ``reattach`` where its jobs outlive the runner."""

    name: ClassVar[str]
    summary: ClassVar[str] = ""  # a few words for --backend's help: "batch jobs"
    # a remote backend runs whole trials elsewhere (see RemoteBackend); a host backend runs processes here
    remote: ClassVar[bool] = False
    # the plan's ``<name>:`` section (None: the backend has no options); fields annotated ``Cli("--flag")``
    # are command-line options too
    Options: ClassVar[type[BaseModel] | None] = None
    # command-line options that are not the plan's to give (a kubeconfig file: a plan never names one)
    cli_only: ClassVar[tuple[Cli, ...]] = ()

    @classmethod
    def from_plan(cls, plan: BaseModel | None = None, **given: Any) -> Self:
        """The backend for a plan: its options are the plan's section, overridden by ``given`` (the command
        line's, None = not given; keys of other backends are ignored)."""
        return cls()

    @classmethod
    def options_from(cls, plan: BaseModel | None, given: dict[str, Any]) -> Any:
        """The backend's ``Options`` from the plan's section and the command line's values (they win); a
        value the model refuses is one line naming the option."""
        if cls.Options is None:
            return None
        section = getattr(plan, cls.name, None)
        values = section.model_dump(exclude_unset=True) if isinstance(section, BaseModel) else {}
        fields = cls.Options.model_fields
        values.update({k: v for k, v in given.items() if k in fields and v is not None})
        try:
            return cls.Options.model_validate(values)
        except ValidationError as exc:
            flags = {c.key: c.flag for c in cls.cli_options()}
            error = exc.errors()[0]
            key = str(error["loc"][0]) if error["loc"] else ""
            where = f"{flags[key]} / {cls.name}.{key}" if key in flags else f"{cls.name}.{key}"
            raise NearmetalError(
                f"{where} {values.get(key)!r}: {error['msg']}",
                fix=f"correct the option (the plan's {cls.name}: section or the command line)",
            ) from None

    @classmethod
    def cli_options(cls) -> list[Cli]:
        """This backend's command-line options, resolved: flag, key, help (``"<name>: …"``) and type."""
        out: list[Cli] = []
        if cls.Options is not None:
            for key, info in cls.Options.model_fields.items():
                for meta in info.metadata:
                    if isinstance(meta, Cli):
                        words = meta.help or info.description or key
                        out.append(
                            replace(
                                meta,
                                key=meta.key or key,
                                help=f"{cls.name}: {words}",
                                type=meta.type or _scalar(info.annotation),
                            )
                        )
        out += [replace(c, help=f"{cls.name}: {c.help}", type=c.type or str) for c in cls.cli_only]
        return out

    def options_record(self) -> dict[str, Any]:
        """What a resumed run needs to go on with the same backend (cluster, partition, image …); stored
        with the run."""
        return {}

    # host backends ------------------------------------------------------------------------------------
    def execute(self, processes: list[ProcessSpec], trial_dir: Path, timeout_s: float) -> Execution:
        """Run a trial's processes here (a host backend); a remote backend runs whole trials instead."""
        raise NotImplementedError(f"the {self.name} backend runs whole trials (run_trials), not processes")

    # remote backends ----------------------------------------------------------------------------------
    def check(self, loaded: LoadedPlan) -> None:
        """Refuse, before anything runs, a plan this backend cannot run (its own tools and privileges). A host
        backend's checks are the preflight's (tools and privileges of this machine)."""

    def run_trials(
        self, specs: list[TrialSpec], hooks: RemoteHooks
    ) -> Generator[tuple[TrialSpec, TrialOutcome], None, None]:
        """Run whole trials (a remote backend), yielding each outcome as its job ends."""
        raise NotImplementedError(f"the {self.name} backend runs processes here (execute), not whole trials")

    def reattach(self, state: ResumeState) -> set[str]:
        """A resumed run's state, before anything runs: the keys of trials whose jobs this backend
        re-attached to (it completes them itself when asked for them, instead of starting them again)."""
        return set()

    def reattached_keys(self) -> set[str]:
        """Keys of trials re-attached by ``reattach`` and not collected yet."""
        return set()


class HostBackend(Backend):
    """Runs a trial's processes on this host; the layers around them are stacked by ``trial.execute_trial``."""

    @abstractmethod
    def execute(self, processes: list[ProcessSpec], trial_dir: Path, timeout_s: float) -> Execution: ...


class RemoteHooks(Protocol):
    """What a remote backend tells the runner while trials run."""

    def submitted(self, spec: TrialSpec, job: dict[str, Any]) -> None:
        """A trial's job was submitted (stored, so a resumed run can re-attach to it)."""

    def started(self, spec: TrialSpec) -> None:
        """A trial's job started running (progress)."""


class RemoteBackend(Backend):
    """Runs whole trials as jobs elsewhere (a batch system, a cluster), several at once where it can."""

    remote = True

    @abstractmethod
    def check(self, loaded: LoadedPlan) -> None:
        """Refuse, before anything runs, a plan this backend cannot run (its own tools and privileges)."""

    @abstractmethod
    def run_trials(
        self, specs: list[TrialSpec], hooks: RemoteHooks
    ) -> Generator[tuple[TrialSpec, TrialOutcome], None, None]:
        """Run the trials, yielding each outcome as its job ends. Closing the generator early (an error,
        Ctrl-C) cancels every job it still has."""


B = TypeVar("B", bound=type[Backend])
# name -> the backend's class (``from_plan`` builds it); every module of nearmetal.backends registers its
# backend with ``@register_backend``
BACKENDS: Registry[type[Backend]] = Registry("backend", packages=("nearmetal.backends",))


def register_backend(cls: B) -> B:
    """Class decorator: the backend under its ``name``, its ``Options`` as the plan's section of that name."""
    BACKENDS.add(cls.name, cls)
    if cls.Options is not None:
        BACKEND_OPTIONS.add(cls.name, cls.Options)
    return cls


def backend_cli_options() -> list[Cli]:
    """Every registered backend's command-line options, one per flag (two backends may share one: the same
    key and type; their help is joined)."""
    by_flag: dict[str, Cli] = {}
    for name in BACKENDS:
        for option in BACKENDS[name].cli_options():
            known = by_flag.get(option.flag)
            if known is None:
                by_flag[option.flag] = option
            elif (known.key, known.type) != (option.key, option.type):
                raise RuntimeError(f"backend option {option.flag} means two things ({known}, {option})")
            else:
                by_flag[option.flag] = replace(known, help=f"{known.help}; {option.help}")
    return list(by_flag.values())
