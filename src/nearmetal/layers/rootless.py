"""rootless: the trial runs as an ordinary user, as on a rootless platform (rootless Podman/buildah,
Usernetes: seeds 000 and 001).

Listed first in a variant. The whole trial (layers, workload, its clean-up) runs in a child nearmetal as an
ordinary user — the layer's ``user`` when nearmetal runs as root, else nearmetal's own user — and, unless
``inside: false``, as root of a user namespace that user owns, with its own mount namespace
(``nearmetal.run.asuser``, ``nearmetal.host.userns``: ``unshare --user --map-root-user --mount``, the user's subordinate
ranges mapped by ``newuidmap``/``newgidmap``). The layers listed after it then run their own code there: that
is their rootless form. ``bindfs`` and ``fuse-overlayfs`` mount through /dev/fuse with the daemon running as
the user, ``overlayfs`` is a kernel overlay mounted by the namespace's root (Linux ≥ 5.11), ``slirp4netns``
and ``pasta`` serve network namespaces made inside it; none of it is visible in the host's mount table or
``ip netns``. A layer with no rootless form (a cgroup CPU quota or cpuset, veth pairs, containers, VMs) is
refused before anything runs, with the reason and the alternative (``run.preflight``).

``inside: false`` leaves the processes as the plain user on the host, for programs that make their own user
namespace (rootless buildah and podman: the image-builds study's rootless rows).

Evidence per trial (``placement["rootless"]``): the user, the uid map the trial ran under, and the uid the
measured process had inside and on the host (``workload_uid_host``), written by the process as it started.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
from functools import partial
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from nearmetal.errors import PrivilegeError
from nearmetal.host import hostcmd
from nearmetal.host.leftovers import HOST_NAME_RE, Leftover, finder, host_prefix, process_run_id
from nearmetal.host.mountinfo import is_mounted, parse_mountinfo, unmount_below
from nearmetal.layers.base import HOST_PREFIX, Layer, LayerConfig, TrialContext, register_layer
from nearmetal.metrics import Metric
from nearmetal.workloads.base import ProcessSpec, Requirement

# set in the child nearmetal that runs a rootless trial (nearmetal.run.asuser): it runs the trial itself
ROOTLESS_CHILD_ENV = "NEARMETAL_ROOTLESS_CHILD"
# the ordinary user root runs rootless rows as when the layer names none
ROOTLESS_USER_ENV = "NEARMETAL_ROOTLESS_USER"
# the user the exit-path and rootless tests run trials as (scripts/test-user.sh creates it)
TEST_USER_ENV = "NEARMETAL_TEST_USER"
DEFAULT_TEST_USER = "nearmetal-test"
EVIDENCE_FILE = "rootless-ids"
NETNS_DIR = Path("/run/netns")
# writes the uid and the uid map the process runs with, then runs the program; arguments are positional,
# never interpolated
_RECORD_IDS = 'f=$1; shift; { id -u; cat /proc/self/uid_map; } > "$f" 2>/dev/null; exec "$@"'


class RootlessConfig(LayerConfig):
    layer: Literal["rootless"] = "rootless"
    user: str | None = Field(
        None,
        pattern=r"^[a-z_][a-z0-9_-]{0,31}$",
        description="the ordinary user the trial runs as when nearmetal runs as root (default: "
        "$NEARMETAL_ROOTLESS_USER, else $SUDO_USER); "
        "as an ordinary user, yourself (or leave it out)",
    )
    mapping: Literal["auto", "subids", "self"] = Field(
        "auto",
        description="ids mapped into the user namespace: subids = the user's /etc/subuid and /etc/subgid "
        "ranges too (newuidmap/newgidmap, what rootless Podman needs to own files as other users); self = only "
        "the user, as root; auto = subids when the user has ranges",
    )
    inside: bool = Field(
        True,
        description="run the trial as root of a user namespace the user owns (a rootless container); false: "
        "as the plain user on the host, for programs that make their own (rootless buildah, podman)",
    )


def rootless_config(layers: list[dict[str, Any]] | tuple[Any, ...]) -> RootlessConfig | None:
    """The stack's rootless layer, when it has one (as a dict from a trial spec, or a validated config)."""
    for config in layers:
        data = config if isinstance(config, dict) else config.model_dump()
        if data.get("layer") == "rootless":
            return RootlessConfig.model_validate(data)
    return None


def trial_user(config: RootlessConfig) -> str | None:
    """Whom the trial runs as when nearmetal is root: the layer's user, else ``NEARMETAL_ROOTLESS_USER``
    (how the shipped studies' rootless rows are pointed at a user), else the user who ran sudo."""
    return config.user or os.environ.get(ROOTLESS_USER_ENV) or os.environ.get("SUDO_USER") or None


NO_USER = (
    "a rootless row run by root needs an ordinary user to run as: set NEARMETAL_ROOTLESS_USER=NAME (or the "
    "rootless layer's user:), or run nearmetal with sudo from that user"
)


@register_layer
class RootlessLayer(Layer[RootlessConfig]):
    kind = "rootless"
    family = "rootless"
    Config = RootlessConfig
    description = "the trial runs as an ordinary user, in a user namespace it owns (rootless platforms)"
    needs_root = False

    def __init__(self, config: RootlessConfig) -> None:
        super().__init__(config)
        self.netns_tmpfs: Path | None = None

    @classmethod
    def example_config(cls) -> dict[str, Any] | None:
        """As root: the test user, when this host has it (scripts/test-user.sh); as a user: yourself."""
        if os.geteuid() != 0:
            return {"layer": "rootless"}
        user = os.environ.get(TEST_USER_ENV, DEFAULT_TEST_USER)
        try:
            pwd.getpwnam(user)
        except KeyError:
            return None
        return {"layer": "rootless", "user": user}

    def requires(self) -> list[Requirement]:
        reqs = [
            Requirement("unshare", "util-linux", purpose="the rootless layer's user namespace"),
            Requirement("setpriv", "util-linux", purpose="running a trial as the rootless layer's user"),
        ]
        if self.config.mapping != "self" and self.config.inside:
            reqs.append(Requirement("newuidmap", "uidmap", purpose="mapping the user's subordinate ids"))
        return reqs

    def setup(self, ctx: TrialContext) -> None:
        from nearmetal.host.userns import current_user, host_uid, in_user_namespace, uid_map

        if os.environ.get(ROOTLESS_CHILD_ENV) != "1":
            # execute_trial hands a rootless trial to a child nearmetal (nearmetal.run.asuser) before any layer
            raise PrivilegeError(
                "the rootless layer's trial must run in its own child nearmetal (nearmetal.run.asuser)",
                fix="run the plan with nearmetal run (a TrialSpec through nearmetal.run.trial.execute_trial)",
            )
        ids = uid_map()
        uid = host_uid(os.getuid(), ids)
        info: dict[str, Any] = {"uid_host": uid, "inside": self.config.inside, "uid_map": ids.strip()}
        with contextlib.suppress(KeyError, TypeError):
            info["user"] = pwd.getpwuid(uid).pw_name if uid is not None else current_user()
        ctx.placement["rootless"] = info
        if uid == 0:
            raise PrivilegeError(
                "the rootless trial runs as root on the host; it must run as an ordinary user"
            )
        if self.config.inside:
            if not in_user_namespace():
                raise PrivilegeError("the rootless trial is not in a user namespace (unshare did not run)")
            self._private_netns_dir()

    def _private_netns_dir(self) -> None:
        """Network namespaces a rootless trial names live in a tmpfs on /run/netns of its own mount namespace
        (the host's /run/netns is root's); without /run/netns, on a tmpfs over /run."""
        target = NETNS_DIR if NETNS_DIR.is_dir() else NETNS_DIR.parent
        argv = ["mount", "-t", "tmpfs", "-o", "mode=0755,size=1m", "nearmetal-rootless", str(target)]
        hostcmd.run(argv, 10, check=True, what="a private /run/netns for the rootless trial")
        NETNS_DIR.mkdir(exist_ok=True)
        self.netns_tmpfs = target

    def wrap(self, process: ProcessSpec, ctx: TrialContext) -> ProcessSpec:
        if process.role == "main" and not process.ranks:
            evidence = str(ctx.trial_dir.resolve() / EVIDENCE_FILE)
            process.argv = ["/bin/sh", "-c", _RECORD_IDS, "nearmetal-rootless-ids", evidence, *process.argv]
        return process

    def collect(self, ctx: TrialContext) -> list[Metric]:
        from nearmetal.host.userns import host_uid

        info = ctx.placement.setdefault("rootless", {})
        with contextlib.suppress(OSError, ValueError, IndexError):
            lines = (ctx.trial_dir / EVIDENCE_FILE).read_text().splitlines()
            inside = int(lines[0])
            info["workload_uid"] = inside
            info["workload_uid_host"] = host_uid(inside, "\n".join(lines[1:]))
        return []

    def teardown(self, ctx: TrialContext) -> None:
        # the mount namespace goes with the trial's child process; unmounting is only tidiness
        if self.netns_tmpfs is not None and is_mounted(self.netns_tmpfs):
            unmount_below(self.netns_tmpfs)
        self.netns_tmpfs = None


# --- leftovers ------------------------------------------------------------------------------------------


# where a rootless trial run by root works (nearmetal.run.asuser): a directory root made (0711: a user can pass
# through but not list it, and cannot make anything in it) holding one unpredictable directory per trial, which
# root gives to the user (issue 26: a predictable /var/tmp name could be planted first by anyone)
STAGING_BASE = Path("/var/lib/nearmetal/rootless")
STAGING_MODE = 0o711
# where older versions staged: still searched by cleanup, whatever was left or planted there removed safely
LEGACY_STAGING_BASE = Path("/var/tmp")
STAGING_SUFFIX = "rootless"


def staging_root() -> int:
    """The verified staging directory's descriptor: root's, 0711, not a link, safe all the way up."""
    from nearmetal.host.safefs import private_dir

    return private_dir(STAGING_BASE, STAGING_MODE)


def staging_name(run_id: str, trial_key: str) -> str:
    """A new trial's staging directory name: the run and trial (cleanup finds it by them) and 64 random bits."""
    import secrets

    return f"{HOST_PREFIX}-{run_id}-{trial_key}-{secrets.token_hex(8)}-{STAGING_SUFFIX}"


def _staging_names(base: Path, run_id: str | None) -> list[str]:
    prefix = f"{HOST_PREFIX}-{run_id}-" if run_id else f"{HOST_PREFIX}-"
    try:
        names = os.listdir(base)
    except OSError:
        return []
    return sorted(n for n in names if n.startswith(prefix) and n.endswith(f"-{STAGING_SUFFIX}"))


def remove_staging(path: Path) -> None:
    """Remove a staging directory (or whatever a user planted at its name: a link is unlinked, never
    followed; a directory removed through descriptors, never crossing a link)."""
    from nearmetal.host.safefs import open_dir, remove_entry

    if (
        path.parent not in (STAGING_BASE, LEGACY_STAGING_BASE)
        or "/" in path.name
        or path.name in ("", ".", "..")
    ):
        return
    try:
        # the staging root is verified; /var/tmp is sticky and root's: both reached without a link
        base = open_dir(path.parent, check=path.parent == STAGING_BASE)
    except OSError:
        return
    try:
        remove_entry(base, path.name)
    except FileNotFoundError:
        pass
    except OSError:
        # files a rootless build left read-only under mapped ids: rm copes; never crosses a filesystem
        hostcmd.run(
            ["rm", "-rf", "--one-file-system", str(path)], 300, what="removing a rootless trial's files"
        )
    finally:
        os.close(base)


def staging_dirs(run_id: str | None = None) -> list[Path]:
    """What rootless trials left staged (under the staging root, and at the predictable /var/tmp names older
    versions used — or a user planted there), for one run or any."""
    return [STAGING_BASE / n for n in _staging_names(STAGING_BASE, run_id)] + [
        LEGACY_STAGING_BASE / n for n in _staging_names(LEGACY_STAGING_BASE, run_id)
    ]


@finder
def find_rootless_trial_dirs(run_id: str | None = None) -> list[Leftover]:
    """The per-trial directories a killed run's rootless trials left (``nearmetal.run.asuser``)."""
    return [
        Leftover("rootless-trial-dir", str(path), partial(remove_staging, path), priority=40)
        for path in staging_dirs(run_id)
    ]


def _run_processes_by_mount_ns(run_id: str | None) -> dict[str, list[int]]:
    """Mount namespaces other than ours held by processes of the run (or of any run): ns → pids."""
    try:
        own = os.readlink("/proc/self/ns/mnt")
    except OSError:
        return {}
    found: dict[str, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        owner = process_run_id(pid)
        if owner is None or (run_id is not None and owner != run_id):
            continue
        with contextlib.suppress(OSError):
            ns = os.readlink(f"/proc/{pid}/ns/mnt")
            if ns != own:
                found.setdefault(ns, []).append(pid)
    return found


@finder
def find_namespace_mounts(run_id: str | None = None) -> list[Leftover]:
    """Mounts a rootless trial made inside its user's mount namespace (invisible in the host's mount table),
    held by processes of a run that is gone. Removing one ends the processes that hold its namespace: with
    the last of them the namespace and every mount in it go."""
    prefix = host_prefix(run_id)
    found = []
    for ns, pids in _run_processes_by_mount_ns(run_id).items():
        try:
            text = Path(f"/proc/{pids[0]}/mountinfo").read_text()
        except OSError:
            continue
        for mount in parse_mountinfo(text):
            if prefix not in mount.mount_point:
                continue
            match = HOST_NAME_RE.search(mount.mount_point)

            def remove(pids: list[int] = pids) -> None:
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)

            found.append(
                Leftover(
                    f"mount in a user's namespace ({mount.fstype})",
                    f"{mount.mount_point} [{ns}, held by {len(pids)} process(es)]",
                    remove,
                    run_id=match.group("run") if match else None,
                    priority=20,
                )
            )
    return found


@finder
def find_runtime_files(run_id: str | None = None) -> list[Leftover]:
    """Files a rootless trial of a user-run nearmetal left in the user's runtime directory
    (``/run/user/UID``, what ``XDG_RUNTIME_DIR`` names), named for the run."""
    prefix = host_prefix(run_id)
    found = []
    for base in sorted(Path("/run/user").glob("*")):
        with contextlib.suppress(OSError):
            for path in sorted(base.iterdir()):
                if path.name.startswith(prefix):

                    def remove(path: Path = path) -> None:
                        if path.is_dir() and not path.is_symlink():
                            shutil.rmtree(path, ignore_errors=True)
                        else:
                            path.unlink(missing_ok=True)

                    found.append(Leftover("runtime-dir file", str(path), remove, priority=45))
    return found
