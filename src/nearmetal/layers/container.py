"""container: the workload runs inside an OCI container (the seed's "runC containers" row).

Runtimes: ``runc`` (the default, what containerd and CRI-O run), ``crun`` and ``podman`` (``podman run
--rootfs``). The root filesystem is built without any registry:

- ``rootfs: host`` (default): an empty read-only root with the host's ``/usr`` and ``/etc`` bind-mounted
  read-only and the merged-``/usr`` symlinks (``/bin → usr/bin`` …), so the container runs the host's
  programs (the same fio binary as bare metal: only the isolation differs).
- ``rootfs: debootstrap``: a Debian ``minbase`` tree with the workload's packages, built once with
  ``debootstrap`` and cached in ``~/.cache/nearmetal/rootfs`` (``$NEARMETAL_CACHE``) between runs.

The test directory (``ctx.endpoints["test_dir_host"]``, or a fresh directory) is bind-mounted read-write at
``/nearmetal/test`` and ``ctx.endpoints["test_dir"]`` becomes that path. Every process of the trial is
wrapped into its own container named ``nearmetal-<run>-<trial>-ctr-<role>``; teardown force-deletes them.

Host quirks handled here: crun refuses a cgroup v1/v2 hybrid host whose v2 hierarchy has controllers (even
with ``--cgroup-manager=disabled``), so the layer refuses crun there with that reason; podman needs ``--cgroup-manager=cgroupfs`` without systemd, ``--network=none`` (its default
bridge network leaves a bridge and iptables chains behind) and an explicit ``--ulimit nofile``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import shutil
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from nearmetal.errors import NearmetalError, PrivilegeError
from nearmetal.host.hostcmd import run
from nearmetal.host.leftovers import Leftover, finder
from nearmetal.layers.base import HOST_PREFIX, Layer, LayerConfig, TrialContext, register_layer
from nearmetal.layers.mounts import remove_tree
from nearmetal.workloads.base import ProcessSpec, Requirement

GUEST_TEST_DIR = "/nearmetal/test"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
RUNTIME_TIMEOUT_S = 60.0
DEBOOTSTRAP_TIMEOUT_S = 1800.0
MERGED_USR = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


def cache_dir() -> Path:
    root = os.environ.get("NEARMETAL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "nearmetal"
    )
    return Path(root)


class ContainerConfig(LayerConfig):
    layer: Literal["container"] = "container"
    runtime: Literal["runc", "crun", "podman"] = Field("runc", description="the OCI runtime")
    rootfs: Literal["host", "debootstrap"] = Field(
        "host", description="host: the host's /usr and /etc read-only; debootstrap: a cached Debian tree"
    )
    suite: str = Field("bookworm", pattern=r"^[a-z]+$", description="Debian suite for rootfs: debootstrap")
    packages: list[str] = Field(
        default_factory=lambda: ["fio"], description="packages in a debootstrap rootfs"
    )
    mirror: str | None = Field(
        None, description="Debian mirror for debootstrap (default: the host's apt source)"
    )
    network: bool = Field(False, description="a network namespace with loopback only (false: the host's)")
    nofile: int | None = Field(
        None, ge=64, description="RLIMIT_NOFILE inside the container (default: the runtime's own hard limit)"
    )


def cgroup_hybrid_with_v2_controllers(root: Path = Path("/sys/fs/cgroup")) -> bool:
    """A v1 host that also mounts a v2 hierarchy with controllers in it: crun refuses to run there."""
    controllers = root / "unified" / "cgroup.controllers"
    with contextlib.suppress(OSError):
        return bool(controllers.read_text().split())
    return False


def host_rootfs(path: Path) -> list[dict[str, Any]]:
    """An empty root whose /usr and /etc are the host's (bind mounts, read-only); returns the mounts."""
    for name in ("usr", "etc", "proc", "dev", "sys", "tmp", "run", "nearmetal/test"):
        (path / name).mkdir(parents=True, exist_ok=True)
    for name in MERGED_USR:
        host = Path("/") / name
        if host.is_symlink():
            (path / name).symlink_to(os.readlink(host))
        elif host.is_dir():
            (path / name).mkdir(exist_ok=True)
    mounts = [
        {
            "destination": "/usr",
            "type": "bind",
            "source": "/usr",
            "options": ["rbind", "ro", "nosuid", "nodev"],
        },
        {
            "destination": "/etc",
            "type": "bind",
            "source": "/etc",
            "options": ["rbind", "ro", "nosuid", "nodev"],
        },
    ]
    for name in MERGED_USR:
        host = Path("/") / name
        if host.is_dir() and not host.is_symlink():
            mounts.append(
                {"destination": f"/{name}", "type": "bind", "source": str(host), "options": ["rbind", "ro"]}
            )
    return mounts


def debootstrap_rootfs(config: ContainerConfig) -> Path:
    """A Debian minbase tree with ``packages``, built once per (suite, packages) and cached."""
    key = hashlib.sha256(json.dumps([config.suite, sorted(config.packages)]).encode()).hexdigest()[:12]
    target = cache_dir() / "rootfs" / f"debootstrap-{config.suite}-{key}"
    if (target / ".complete").exists():
        return target
    if shutil.which("debootstrap") is None:
        raise NearmetalError(
            "debootstrap is not installed (container rootfs: debootstrap)",
            fix="apt-get install -y debootstrap, or use rootfs: host",
        )
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(config.packages)}",
        config.suite,
        str(partial),
    ]
    if config.mirror:
        argv.append(config.mirror)
    proc = run(
        argv,
        DEBOOTSTRAP_TIMEOUT_S,
        what="container rootfs",
        timeout_fix="check the Debian mirror (mirror: …) or use rootfs: host",
    )
    if proc.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        tail = (proc.stderr or proc.stdout).strip().splitlines()
        raise NearmetalError(
            f"debootstrap failed: {tail[-1] if tail else proc.returncode}",
            fix="check the Debian mirror (mirror: …) or use rootfs: host",
        )
    (partial / "nearmetal" / "test").mkdir(parents=True, exist_ok=True)
    (partial / ".complete").write_text(time.strftime("%Y-%m-%d %H:%M:%S\n"))
    partial.rename(target)
    return target


@register_layer
class ContainerLayer(Layer[ContainerConfig]):
    kind = "container"
    family = "container"
    Config = ContainerConfig
    description = "the workload inside an OCI container (runc, crun or podman)"
    needs_root = True

    def __init__(self, config: ContainerConfig) -> None:
        super().__init__(config)
        self.layer_dir: Path | None = None
        self.rootfs: Path | None = None
        self.rootfs_mounts: list[dict[str, Any]] = []
        self.test_dir_host: Path | None = None
        self.containers: list[str] = []
        self.cgroup_manager: str | None = None
        self.nofile = 1024

    def _nofile(self) -> int:
        # a container cannot raise the limit above the hard limit of the runtime that starts it
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        hard = hard if hard != resource.RLIM_INFINITY else 1_048_576
        return min(self.config.nofile or hard, hard)

    @classmethod
    def example_config(cls) -> dict[str, Any]:
        return {"layer": "container", "runtime": "runc"}

    def requires(self) -> list[Requirement]:
        reqs = [Requirement(self.config.runtime, self.config.runtime, purpose="the container layer")]
        if self.config.runtime == "podman":
            reqs.append(Requirement("runc", "runc", purpose="podman's OCI runtime"))
        if self.config.rootfs == "debootstrap":
            reqs.append(Requirement("debootstrap", "debootstrap", purpose="the container's rootfs"))
        return reqs

    def setup(self, ctx: TrialContext) -> None:
        if os.geteuid() != 0:
            raise PrivilegeError(
                "the container layer runs a rootful container and needs root", fix="run as root"
            )
        if shutil.which(self.config.runtime) is None:
            raise NearmetalError(
                f"{self.config.runtime} is not installed", fix=f"apt-get install -y {self.config.runtime}"
            )
        seen, host = ctx.endpoints.get("test_dir"), ctx.endpoints.get("test_dir_host")
        if seen is not None and host is not None and str(seen) != str(host):
            raise NearmetalError(
                "the container layer cannot go inside another container or VM layer",
                fix="keep one container or vm layer per variant",
            )
        self.layer_dir = ctx.trial_dir.resolve() / ctx.host_name("ctr")
        self.layer_dir.mkdir(parents=True)
        if host:
            self.test_dir_host = Path(str(host))
        else:
            self.test_dir_host = self.layer_dir / "test"
            self.test_dir_host.mkdir()
        if self.config.rootfs == "host":
            self.rootfs = self.layer_dir / "rootfs"
            self.rootfs.mkdir()
            self.rootfs_mounts = host_rootfs(self.rootfs)
        else:
            self.rootfs = debootstrap_rootfs(self.config)
        self.nofile = self._nofile()
        if self.config.runtime == "crun" and cgroup_hybrid_with_v2_controllers():
            # crun checks this before any option (even --cgroup-manager=disabled) can help
            raise NearmetalError(
                "crun refuses this host: cgroups are in hybrid mode and the v2 hierarchy "
                "(/sys/fs/cgroup/unified) has controllers",
                fix="use runtime: runc here, or boot with every controller on v1 or all on v2",
            )
        ctx.endpoints["test_dir_host"] = str(self.test_dir_host)
        ctx.endpoints["test_dir"] = GUEST_TEST_DIR
        ctx.placement["container"] = {
            "runtime": self.config.runtime,
            "runtime_version": _first_line(run([self.config.runtime, "--version"], RUNTIME_TIMEOUT_S).stdout),
            "rootfs": self.config.rootfs if self.config.rootfs == "host" else str(self.rootfs),
            "test_dir": GUEST_TEST_DIR,
            "test_dir_host": str(self.test_dir_host),
            **({"cgroup_manager": self.cgroup_manager} if self.cgroup_manager else {}),
        }

    # wrapping ------------------------------------------------------------------------------------------
    def _oci_config(self, process: ProcessSpec, name: str) -> dict[str, Any]:
        assert self.rootfs is not None and self.test_dir_host is not None
        env = {"PATH": PATH, "HOME": "/root", **process.env}
        namespaces = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
        if self.config.network:
            namespaces.append({"type": "network"})
        mounts = [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            },
            {
                "destination": "/dev/pts",
                "type": "devpts",
                "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
            },
            {
                "destination": "/dev/shm",
                "type": "tmpfs",
                "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
            },
            {
                "destination": "/sys",
                "type": "sysfs",
                "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", "ro"],
            },
            {
                "destination": "/tmp",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "nodev", "mode=1777"],
            },
            *self.rootfs_mounts,
            {
                "destination": GUEST_TEST_DIR,
                "type": "bind",
                "source": str(self.test_dir_host),
                "options": ["rbind", "rw"],
            },
        ]
        linux: dict[str, Any] = {
            "namespaces": namespaces,
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        }
        if self.cgroup_manager != "disabled":
            linux["cgroupsPath"] = f"/{name}"
        return {
            "ociVersion": "1.0.2",
            "process": {
                "terminal": False,
                "user": {"uid": 0, "gid": 0},
                "args": list(process.argv),
                "env": [f"{k}={v}" for k, v in env.items()],
                "cwd": "/",
                "rlimits": [{"type": "RLIMIT_NOFILE", "hard": self.nofile, "soft": self.nofile}],
                "noNewPrivileges": True,
            },
            "root": {"path": str(self.rootfs), "readonly": True},
            "hostname": "nearmetal",
            "mounts": mounts,
            "linux": linux,
        }

    def wrap(self, process: ProcessSpec, ctx: TrialContext) -> ProcessSpec:
        assert self.layer_dir is not None and self.test_dir_host is not None and self.rootfs is not None
        name = ctx.host_name("ctr", process.label())
        self.containers.append(name)
        if self.config.runtime == "podman":
            # --rootfs is a flag: the first positional argument is then the root directory, not an image
            argv = [
                "podman",
                "--cgroup-manager=cgroupfs",
                "--runtime",
                "runc",
                "run",
                "--rm",
                "--name",
                name,
                f"--network={'none' if not self.config.network else 'private'}",
                f"--ulimit=nofile={self.nofile}:{self.nofile}",
                f"--ulimit=nproc={_hard_limit(resource.RLIMIT_NPROC)}",
                "--read-only",
                "--workdir=/",
                f"--volume={self.test_dir_host}:{GUEST_TEST_DIR}:rw",
            ]
            for mount in self.rootfs_mounts:
                argv.append(f"--volume={mount['source']}:{mount['destination']}:ro")
            for key, value in process.env.items():
                argv.append(f"--env={key}={value}")
            argv += ["--rootfs", str(self.rootfs), *process.argv]
        else:
            bundle = self.layer_dir / f"bundle-{process.label()}"
            bundle.mkdir(exist_ok=True)
            (bundle / "config.json").write_text(json.dumps(self._oci_config(process, name), indent=1))
            argv = [self.config.runtime]
            if self.cgroup_manager:
                argv.append(f"--cgroup-manager={self.cgroup_manager}")
            argv += ["run", "--bundle", str(bundle), name]
        process.argv = argv
        process.env = {}
        return process

    def teardown(self, ctx: TrialContext) -> None:
        for name in self.containers:
            remove_container(self.config.runtime, name)
        self.containers = []
        if self.layer_dir is not None:
            remove_tree(self.layer_dir)
            self.layer_dir = None


def _hard_limit(which: int) -> str:
    soft, hard = resource.getrlimit(which)

    def fmt(v: int) -> str:
        return "-1" if v == resource.RLIM_INFINITY else str(v)

    return f"{fmt(soft)}:{fmt(hard)}"


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def remove_container(runtime: str, name: str) -> None:
    """Force-remove a container (no error when it is already gone)."""
    if shutil.which(runtime) is None:
        return
    argv = (
        ["podman", "--cgroup-manager=cgroupfs", "rm", "--force", "--ignore", name]
        if runtime == "podman"
        else [runtime, "delete", "--force", name]
    )
    with contextlib.suppress(NearmetalError, OSError):
        run(argv, RUNTIME_TIMEOUT_S)


def list_containers(runtime: str) -> list[str]:
    if shutil.which(runtime) is None:
        return []
    argv = (
        ["podman", "--cgroup-manager=cgroupfs", "ps", "--all", "--format", "json"]
        if runtime == "podman"
        else [runtime, "list", "--format", "json"]
    )
    try:
        proc = run(argv, RUNTIME_TIMEOUT_S)
        data = json.loads(proc.stdout or "[]") or []
    except (NearmetalError, OSError, ValueError):
        return []
    names: list[str] = []
    for entry in data:
        if runtime == "podman":
            names += entry.get("Names") or []
        else:
            names.append(entry.get("id", ""))
    return names


@finder
def find_containers(run_id: str | None = None) -> list[Leftover]:
    """Containers of runc, crun and podman named for nearmetal (for one run, or any)."""

    prefix = f"{HOST_PREFIX}-{run_id}-" if run_id else f"{HOST_PREFIX}-"
    found = []
    for runtime in ("runc", "crun", "podman"):
        for name in list_containers(runtime):
            if name.startswith(prefix):

                def remove(runtime: str = runtime, name: str = name) -> None:
                    remove_container(runtime, name)

                found.append(Leftover(f"container ({runtime})", name, remove, priority=5))
    return found
