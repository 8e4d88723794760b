"""A rootless trial (a variant with the ``rootless`` layer): the whole trial — its layers, the workload, its
clean-up — runs in a child nearmetal (``python -m nearmetal.run.exec_trial``) as an ordinary user and,
unless the layer says ``inside: false``, as root of a user namespace that user owns (``unshare --user
--map-root-user [--map-auto] --mount``, ``nearmetal.host.userns``): what a rootless platform runs. The layers' own
code then runs unchanged as the namespace's root; their mounts and network namespaces live in the child's
namespaces and go with them.

Run by root, the child is started with ``setpriv`` as the layer's ``user``. The run's directory is root's
(0700), so the child works in a directory the user owns, ``nearmetal-<run>-<trial>-<random>-rootless`` in
root's verified 0711 ``/var/lib/nearmetal/rootless`` (the user can pass through it to its own directory but
neither list it nor make anything in it): its trial directory, spec and outcome, and ``runtime/``, its
``XDG_RUNTIME_DIR``. When the child is done its files are copied into the run's trial directory through
directory descriptors (``copy_back``: regular files only, never through a link, sparse files sparse, within
``COPY_MAX_FILES``/``COPY_MAX_BYTES``), its ``outcome.json`` is read with a size cap and validated
(``ChildOutcome``; its text cleaned of escapes and control characters), and the directory is removed. Run by an ordinary user, the child uses the trial directory itself.

The child carries the run's ``NEARMETAL_RUN_ID`` (the runner's leak sweep and ``nearmetal cleanup`` find it and
everything it started) and ``NEARMETAL_ROOTLESS_CHILD`` (it runs its trial itself).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import signal
import stat
import sys
import time
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError
from pydantic import Field as PydField

from nearmetal.errors import NearmetalError, PrivilegeError
from nearmetal.host import hostcmd, safefs
from nearmetal.host.interrupts import deferred
from nearmetal.host.leftovers import RUN_ENV
from nearmetal.host.safefs import remove_entry
from nearmetal.layers.rootless import (
    ROOTLESS_CHILD_ENV,
    STAGING_BASE,
    remove_staging,
    staging_name,
    staging_root,
)

CHILD_ENV = ROOTLESS_CHILD_ENV
# the child gets the trial's timeout plus this for its layers' set-up and teardown
SETUP_MARGIN_S = 300.0
TERM_GRACE_S = 60.0


def user_argv(user: str, argv: list[str], env: dict[str, str]) -> list[str]:
    """``argv`` as ``user``: its uid, gid and groups, a clean environment (setpriv's: HOME, USER, PATH …)
    plus ``env``."""
    return [
        "setpriv", "--reuid", user, "--regid", user, "--init-groups", "--reset-env", "--",
        "env", *(f"{k}={v}" for k, v in env.items()), *argv,
    ]  # fmt: skip


def child_env(run_id: str, runtime_dir: Path | None = None) -> dict[str, str]:
    # the runner's PATH (root's has the sbin directories, where iproute2's bridge and mount helpers live)
    path = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin").split(":")
    path += [d for d in ("/usr/local/sbin", "/usr/sbin", "/sbin") if d not in path]
    env = {RUN_ENV: run_id, CHILD_ENV: "1", "PATH": ":".join(path)}
    if runtime_dir is not None:
        env["XDG_RUNTIME_DIR"] = str(runtime_dir)
    # the same nearmetal as the runner's (a source checkout on PYTHONPATH included)
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def check_user_can_run(user: str) -> None:
    """The user exists and can start this nearmetal (this Python, its packages): before anything runs."""
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise PrivilegeError(
            f"the rootless layer's user {user} does not exist on this host",
            fix=f"useradd --create-home {user} (and give it subordinate ids: bash scripts/test-user.sh {user})",
        ) from None
    if pw.pw_uid == 0:
        raise PrivilegeError(f"the rootless layer's user {user} is root", fix="name an ordinary user")
    argv = user_argv(user, [sys.executable, "-c", "import nearmetal.run.trial"], child_env("preflight"))
    try:
        proc = hostcmd.run(argv, 60, cwd="/")
    except NearmetalError as exc:
        raise PrivilegeError(f"could not start nearmetal as {user}: {exc}") from None
    if proc.returncode != 0:
        said = (proc.stderr or proc.stdout).strip().splitlines()
        raise PrivilegeError(
            f"user {user} cannot run this nearmetal ({sys.executable}): {said[-1] if said else proc.returncode}",
            fix=f"install nearmetal where {user} can read and run it (a virtual environment outside /root), or "
            f"let {user} through the directories above it (setfacl -m u:{user}:x DIR; "
            "scripts/test-user.sh does this for the test user)",
        )


# copy-back limits: what one rootless trial may bring back into root's run directory
COPY_MAX_FILES = 20_000
COPY_MAX_BYTES = 8 << 30  # data bytes (holes are kept as holes, not counted)
COPY_MAX_DEPTH = 16
OUTCOME_MAX_BYTES = 16 << 20
_CHUNK = 1 << 20


@dataclass
class CopyReport:
    """What came back from the user's child, and what was left behind and why."""

    files: int = 0
    bytes: int = 0
    left_out: list[str] = dc_field(default_factory=list)
    truncated: bool = False

    def note(self, rel: str, why: str) -> None:
        self.left_out.append(f"{clean_text(rel, 200)}: {why}")

    def summary(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "bytes": self.bytes,
            "left_out": len(self.left_out),
            "left_out_first": self.left_out[:20],
            "truncated": self.truncated,
        }


def _open_entry(dirfd: int, name: str) -> tuple[int, os.stat_result] | None:
    """``name`` in ``dirfd`` as an ``O_PATH`` descriptor (opening nothing: a device or FIFO is never opened)
    and its status; None for a link (``O_NOFOLLOW``) or what cannot be reached."""
    try:
        fd = os.open(name, safefs.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
    except OSError:
        return None
    try:
        return fd, os.fstat(fd)
    except OSError:
        os.close(fd)
        return None


def _reopen(path_fd: int, flags: int) -> int:
    """The very inode an ``O_PATH`` descriptor holds, opened for reading (no path is resolved again)."""
    return os.open(f"/proc/self/fd/{path_fd}", flags | os.O_CLOEXEC)


def _copy_file(src: int, size: int, dst_dir: int, name: str, budget: CopyReport, rel: str) -> None:
    """Copy a regular file's data, holes kept as holes (``SEEK_DATA``/``SEEK_HOLE``): a sparse file cannot
    fill the disk; at most what the byte budget has left."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        out = os.open(name, flags, 0o644, dir_fd=dst_dir)
    except FileExistsError:
        os.unlink(name, dir_fd=dst_dir)  # a directory there: IsADirectoryError, noted by the caller
        out = os.open(name, flags, 0o644, dir_fd=dst_dir)
    try:
        pos, end_written = 0, 0
        while pos < size:
            try:
                start = os.lseek(src, pos, os.SEEK_DATA)
            except OSError:
                break  # ENXIO: only a hole is left
            if start >= size:
                break
            stop = min(os.lseek(src, start, os.SEEK_HOLE), size)
            while start < stop:
                room = COPY_MAX_BYTES - budget.bytes
                if room <= 0:
                    budget.truncated = True
                    budget.note(
                        rel, f"cut at {end_written} bytes: the copy-back limit ({COPY_MAX_BYTES} bytes)"
                    )
                    os.ftruncate(out, end_written)
                    return
                chunk = os.pread(src, min(_CHUNK, stop - start, room), start)
                if not chunk:
                    stop = start
                    break
                os.pwrite(out, chunk, start)
                budget.bytes += len(chunk)
                start += len(chunk)
                end_written = start
            pos = max(stop, pos + 1)
        if end_written < size:
            os.ftruncate(out, size)  # the apparent size, as a hole (allocates nothing)
    finally:
        os.close(out)


def _copy_tree(src_dir: int, dst_dir: int, budget: CopyReport, rel: str = "", depth: int = 0) -> None:
    try:
        names = sorted(os.listdir(src_dir))
    except OSError:
        return
    for name in names:
        here = f"{rel}{name}"
        if budget.files >= COPY_MAX_FILES:
            budget.truncated = True
            budget.note(here, f"not copied: the copy-back limit ({COPY_MAX_FILES} files)")
            return
        opened = _open_entry(src_dir, name)
        if opened is None:
            budget.note(here, "unreadable: left behind")
            continue
        path_fd, st = opened
        try:
            if stat.S_ISDIR(st.st_mode):
                if depth >= COPY_MAX_DEPTH:
                    budget.note(here, f"deeper than {COPY_MAX_DEPTH} directories: left behind")
                    continue
                sub = _reopen(path_fd, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(name, 0o755, dir_fd=dst_dir)
                    try:
                        dst_sub = os.open(name, safefs.DIR_FLAGS, dir_fd=dst_dir)
                    except OSError:
                        budget.note(here, "its place in the trial directory is taken: left behind")
                        continue
                    try:
                        _copy_tree(sub, dst_sub, budget, here + "/", depth + 1)
                    finally:
                        os.close(dst_sub)
                finally:
                    os.close(sub)
            elif stat.S_ISREG(st.st_mode):
                if st.st_uid == 0:
                    # the user's child cannot make root's files: a hard link to one of them
                    budget.note(here, "owned by root, not made by the trial's user: left behind")
                    continue
                src = _reopen(path_fd, os.O_RDONLY)
                try:
                    _copy_file(src, st.st_size, dst_dir, name, budget, here)
                    budget.files += 1
                except OSError as exc:
                    budget.note(here, f"not copied: {exc.strerror}")
                finally:
                    os.close(src)
            elif stat.S_ISLNK(st.st_mode):
                budget.note(here, "a symbolic link: left behind, never followed")
            else:
                budget.note(here, "not a regular file or directory (a device, FIFO or socket): left behind")
        finally:
            os.close(path_fd)


def copy_back(staging_fd: int, name: str, trial_dir: Path) -> CopyReport:
    """The user's child's trial directory (``name`` beneath the staging descriptor) into the run's trial
    directory, owned by root like every other trial's: walked through descriptors, each entry opened
    ``O_NOFOLLOW`` beneath its parent (a directory swapped for a link mid-copy, even with
    ``renameat2(RENAME_EXCHANGE)``, is a link when opened: left behind), regular files and directories only,
    at most ``COPY_MAX_FILES`` files and ``COPY_MAX_BYTES`` bytes, sparse files kept sparse."""
    report = CopyReport()
    try:
        src = os.open(name, safefs.DIR_FLAGS, dir_fd=staging_fd)
    except OSError:
        report.note(name, "not a directory (a link?): nothing copied back")
        return report
    try:
        dst = os.open(trial_dir, safefs.DIR_FLAGS)
        try:
            _copy_tree(src, dst, report)
        finally:
            os.close(dst)
    finally:
        os.close(src)
    return report


# --- the child's outcome, validated before root uses any of it ---------------------------------------------

_CSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b.?")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean_text(text: str, limit: int = 65536) -> str:
    """Text from the user's child as plain text: terminal escape sequences and control characters (but
    newlines and tabs) removed, at most ``limit`` characters."""
    return _CONTROL.sub("", _CSI.sub("", text))[:limit]


def _clean(value: Any, depth: int = 0) -> Any:
    if depth > 12:
        return None
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(str(k), 200): _clean(v, depth + 1) for k, v in list(value.items())[:1000]}
    if isinstance(value, list):
        return [_clean(v, depth + 1) for v in value[:10000]]
    return value


CleanStr = Annotated[str, AfterValidator(clean_text)]
# no markup, no escapes, no HTML: what a metric is called ends up in tables, reports and Markdown
METRIC_NAME = r"^[^\x00-\x1f\x7f-\x9f<>&\"'`\[\]\\]{1,128}$"


class _ChildMetric(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = PydField(pattern=METRIC_NAME)
    value: float
    unit: str = PydField("", pattern=r"^[^\x00-\x1f\x7f-\x9f<>&\"'`\[\]\\]{0,32}$")
    direction: Literal["higher", "lower"]
    source: str = PydField("workload", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    values: list[float] = PydField(default_factory=list, max_length=1_000_000)


class ChildOutcome(BaseModel):
    """What a rootless child may say about its trial (``trial.TrialOutcome`` as a dict), typed and bounded."""

    model_config = ConfigDict(extra="ignore")
    status: str = PydField(pattern=r"^[a-z][a-z-]{0,19}$")
    wall_s: float = PydField(ge=0)
    metrics: list[_ChildMetric] = PydField(default_factory=list, max_length=10_000)
    error: CleanStr | None = None
    exit_code: int | None = None
    signal: CleanStr | None = PydField(None, max_length=64)
    stderr_tail: CleanStr | None = None
    placement: dict[str, Any] = PydField(default_factory=dict)
    caveats: list[CleanStr] = PydField(default_factory=list, max_length=1000)
    started_at: float = 0.0
    ended_at: float = 0.0
    abort: CleanStr | None = None
    events: list[dict[str, Any]] = PydField(default_factory=list, max_length=100_000)


def _read_outcome(dirfd: int, name: str) -> dict[str, Any] | str | None:
    """The child's outcome file beneath ``dirfd``: a regular file (never a link, a FIFO cannot hang the
    read), at most ``OUTCOME_MAX_BYTES``, JSON that ``ChildOutcome`` accepts; its cleaned dict, or one line
    saying why not (None: there is none)."""
    try:
        fd = safefs.open_beneath(dirfd, name)
    except FileNotFoundError:
        return None
    except (OSError, safefs.UnsafePathError) as exc:
        return f"its outcome file is not a regular file ({clean_text(str(exc), 200)})"
    with os.fdopen(fd, "rb") as f:
        if os.fstat(f.fileno()).st_size > OUTCOME_MAX_BYTES:
            return f"its outcome file is larger than {OUTCOME_MAX_BYTES} bytes"
        raw = f.read(OUTCOME_MAX_BYTES + 1)
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return "its outcome file is not JSON"
    try:
        checked = ChildOutcome.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        # the message, not the input or the pattern (text with brackets a terminal printer might read as markup)
        what = (
            "has characters that are not allowed"
            if first.get("type") == "string_pattern_mismatch"
            else first.get("msg", "")
        )
        return clean_text(f"its outcome file is not a trial outcome ({where}: {what})", 300)
    out = checked.model_dump()
    out["placement"] = _clean(out["placement"])
    out["events"] = _clean(out["events"])
    return out


def _read_outcome_path(path: Path) -> dict[str, Any] | str | None:
    """:func:`_read_outcome` of a file in a directory of this user's own (a user's own rootless trial)."""
    try:
        fd = safefs.open_dir(path.parent, check=False)
    except OSError:
        return None
    try:
        return _read_outcome(fd, path.name)
    finally:
        os.close(fd)


def _stop_child(proc: hostcmd.Process[bytes]) -> None:
    """SIGTERM (the child tears its layers down and writes its outcome), then its whole tree."""
    from nearmetal.backends.local import kill_tree

    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    if hostcmd.wait(proc, TERM_GRACE_S) is None:
        kill_tree(proc.pid, grace_s=1.0)
        hostcmd.wait(proc, 10)


def _child_argv(spec_path: Path, out_path: Path, unshare: list[str]) -> list[str]:
    return [*unshare, sys.executable, "-m", "nearmetal.run.exec_trial", str(spec_path), str(out_path)]


def execute_rootless(spec: dict[str, Any], inside: bool, mapping: str, user: str | None) -> dict[str, Any]:
    """Execute ``spec`` (a ``trial.TrialSpec`` as a dict) in a child nearmetal as ``user`` (root's choice;
    None: this process's own user), inside a user namespace unless ``inside`` is false; its
    ``TrialOutcome`` as a dict. KeyboardInterrupt passes through after the child has torn its trial down
    (and, run by root, its files were copied back)."""
    from nearmetal.host.userns import current_user, unshare_argv

    as_root = os.geteuid() == 0
    if as_root and not user:
        raise PrivilegeError(
            "the rootless layer needs user: NAME when nearmetal runs as root", fix="give the layer user: NAME"
        )
    name = user if as_root and user else current_user()
    unshare, chosen = unshare_argv(name, mapping) if inside else ([], "none")
    trial_dir = Path(spec["trial_dir"])
    run_id = spec["run_id"]
    trial_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    staging_fd: int | None = None  # the staging root's descriptor (root, 0711, verified)
    staged: str | None = None  # this trial's directory in it (unpredictable name, given to the user)
    trial_fd: int | None = None
    copied: CopyReport | None = None
    if as_root:
        pw = pwd.getpwnam(name)
        try:
            staging_fd = staging_root()
        except (OSError, NearmetalError) as exc:
            raise PrivilegeError(
                f"cannot use {STAGING_BASE} for the rootless trial's files: {exc}",
                fix=f"make {STAGING_BASE} a directory of root's (mode 0711), or remove what is there",
            ) from None
        staged = staging_name(run_id, spec["trial_key"])
        # made and filled while it is still root's, then given to the user: root never writes into a
        # directory the user could have put a link in
        os.mkdir(staged, 0o700, dir_fd=staging_fd)
        trial_fd = os.open(staged, safefs.DIR_FLAGS, dir_fd=staging_fd)
        staging = STAGING_BASE / staged
        child_trial, runtime = staging / "trial", staging / "runtime"
        spec_path, out_path = staging / "spec.json", staging / "outcome.json"
        spec_text = json.dumps({**spec, "trial_dir": str(child_trial)}, indent=1).encode()
        spec_fd = os.open(
            "spec.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600, dir_fd=trial_fd
        )
        with os.fdopen(spec_fd, "wb") as f:
            f.write(spec_text)
            os.fchown(f.fileno(), pw.pw_uid, pw.pw_gid)
        for made in ("trial", "runtime"):
            os.mkdir(made, 0o700, dir_fd=trial_fd)
            os.chown(made, pw.pw_uid, pw.pw_gid, dir_fd=trial_fd, follow_symlinks=False)
        os.fchown(trial_fd, pw.pw_uid, pw.pw_gid)
        argv = user_argv(name, _child_argv(spec_path, out_path, unshare), child_env(run_id, runtime))
        cwd = staging
    else:
        child_trial = trial_dir
        spec_path, out_path = trial_dir / "rootless-spec.json", trial_dir / "rootless-outcome.json"
        spec_path.write_text(json.dumps(spec, indent=1))
        env = {**os.environ, **child_env(run_id)}
        argv = ["env", *(f"{k}={v}" for k, v in env.items() if k in (CHILD_ENV, RUN_ENV, "PYTHONPATH"))]
        argv += _child_argv(spec_path, out_path, unshare)
        cwd = trial_dir
    log_path = trial_dir / "rootless-child.log"
    proc: hostcmd.Process[bytes] | None = None
    try:
        with open(log_path, "wb", opener=safefs.nofollow_opener) as log:
            with deferred():
                proc = hostcmd.start(argv, stdout=log, stderr=log, cwd=cwd, error=None)
            if hostcmd.wait(proc, float(spec["timeout"]) + SETUP_MARGIN_S) is None:
                _stop_child(proc)
        if trial_fd is not None:
            found = _read_outcome(trial_fd, "outcome.json")
        else:
            found = _read_outcome_path(out_path)
        if isinstance(found, dict):
            outcome = found
        else:
            said = log_path.read_text(errors="replace").strip().splitlines()
            why = found or f"wrote no outcome (exit {proc.returncode})"
            outcome = {
                "status": "error",
                "wall_s": time.time() - started,
                "error": f"the rootless trial (as {name}) {why}: "
                + clean_text(said[-1] if said else "no output", 500),
                "started_at": started,
                "ended_at": time.time(),
            }
    finally:
        if proc is not None and proc.poll() is None:
            _stop_child(proc)
        if trial_fd is not None:
            copied = copy_back(trial_fd, "trial", trial_dir)
            os.close(trial_fd)
        if staging_fd is not None and staged is not None:
            with contextlib.suppress(OSError):
                remove_entry(staging_fd, staged)
            os.close(staging_fd)
            if staged is not None:
                remove_staging(STAGING_BASE / staged)  # what removal through the descriptor could not
    outcome["output_dir"] = str(trial_dir)
    outcome["placement"] = {
        **outcome.get("placement", {}),
        "as_user": {
            "user": name,
            "uid": pwd.getpwnam(name).pw_uid,
            "started_by_root": as_root,
            "user_namespace": chosen,
            "child_exit": proc.returncode if proc else None,
            **({"copy_back": copied.summary()} if copied is not None else {}),
        },
    }
    if copied is not None and copied.left_out:
        with (
            contextlib.suppress(OSError),
            open(trial_dir / "rootless-copy-back.txt", "w", opener=safefs.nofollow_opener) as note,
        ):
            note.write("left behind in the rootless trial's directory (not copied back):\n")
            note.writelines(f"{line}\n" for line in copied.left_out[:1000])
    return outcome


__all__ = ["check_user_can_run", "execute_rootless"]
