"""vm: the workload runs inside a QEMU guest with the test directory shared from the host by virtio-9p
(``-virtfs``/``-fsdev``, the seed's kata-qemu row) or virtio-fs (``virtiofsd`` + ``vhost-user-fs-pci`` with
memfd shared memory, the seed's kata-virtiofs rows).

The guest is Debian's kernel (``linux-image-amd64``: the cloud kernel lacks 9p) booted with nearmetal's
initramfs (busybox, the workload's programs and their libraries, the 9p/virtio-fs/virtio-serial modules; see
``vm_guest``). Each wrapped process becomes one boot: the guest mounts the share at ``/nearmetal/test``, runs
the command (its arguments and environment passed as data: each item base64-encoded on the kernel command
line, never evaluated by a shell), writes the command's stdout to a virtio-serial port of its own and its
exit status to another, and powers off; ``vm_guest.relay`` turns those into the wrapped process's stdout
and exit code, and the console (boot log, the command's stderr) into its stderr.

O_DIRECT: virtio-fs passes the guest's O_DIRECT on to the host file when ``direct_io`` is on
(``virtiofsd -o allow_direct_io``; virtiofsd's own default drops it). QEMU's 9p server always drops it, so a
9p row's direct I/O is served by the host's page cache; fio's ``disk_read_share_pct`` shows which. The
kernel and initramfs a boot reads are read (and their disk reads counted) before the guest starts, in
``io-excluded.json``, so that fio leaves them out of the disk's bytes.

Acceleration: ``accel: auto`` uses KVM only when a short timing probe (a boot under KVM vs under TCG, cached
per host) shows it really is faster; otherwise TCG with ``-cpu max``, and every trial of this layer then
carries the caveat "emulated CPU: not representative of production". On hosts where ``-cpu host`` aborts
(nested PVM) KVM runs with ``-cpu host,-arch-capabilities``. DAX for virtio-fs needs a QEMU whose
``vhost-user-fs-pci`` has a ``cache-size`` property (the virtio-fs development branch); the layer refuses
``dax: true`` with that reason when it has none.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import sys
import time
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from nearmetal.errors import NearmetalError, PrivilegeError
from nearmetal.host import hostcmd
from nearmetal.layers.base import Layer, LayerConfig, TrialContext, register_layer
from nearmetal.layers.container import cache_dir
from nearmetal.layers.mounts import remove_tree
from nearmetal.metrics import Metric
from nearmetal.units import parse_size
from nearmetal.workloads.base import ProcessSpec, Requirement

QEMU = "qemu-system-x86_64"
VIRTIOFSD_PATHS = ("/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd", "/usr/bin/virtiofsd")
GUEST_TEST_DIR = "/nearmetal/test"
EMULATED_CAVEAT = "emulated CPU: not representative of production"
CMDLINE_LIMIT = 2000  # x86 COMMAND_LINE_SIZE is 2048
PROBE_TIMEOUT_S = 180.0
KVM_SPEEDUP_NEEDED = 1.5


class VmConfig(LayerConfig):
    layer: Literal["vm"] = "vm"
    share: Literal["9p", "virtiofs"] = Field("9p", description="how the test directory reaches the guest")
    cache: Literal["none", "auto", "always", "loose", "mmap", "fscache"] = Field(
        "auto",
        description="virtio-fs: virtiofsd -o cache= (none, auto, always); 9p: the guest's cache= mount option "
        "(none, loose, mmap, fscache; auto means none)",
    )
    dax: bool = Field(False, description="virtio-fs DAX window (needs a QEMU with cache-size)")
    direct_io: bool = Field(
        True,
        description="virtio-fs: keep the guest's O_DIRECT on the host file (virtiofsd -o allow_direct_io); "
        "false: virtiofsd's default, which drops it (9p always drops it)",
    )
    dax_window: str = Field("1g", description="DAX window size")
    msize: int = Field(512 * 1024, ge=8192, le=16 * 1024 * 1024, description="9p message size")
    accel: Literal["auto", "kvm", "tcg"] = Field(
        "auto", description="auto: KVM only when a probe shows it helps"
    )
    cpus: int = Field(2, ge=1, le=256, description="guest vCPUs")
    memory: str = Field("1g", description="guest memory")
    kernel: Path | None = Field(None, description="guest kernel (default: the newest /boot/vmlinuz-*-amd64)")
    boot_timeout: float = Field(120.0, gt=0, description="seconds the probe boot may take")

    @field_validator("memory", "dax_window")
    @classmethod
    def _size(cls, value: str) -> str:
        parse_size(value)
        return value


def socket_dir() -> Path:
    for candidate in (Path("/run"), Path("/tmp")):
        if os.access(candidate, os.W_OK):
            return candidate
    return Path("/tmp")


def find_kernel(explicit: Path | None = None) -> Path:
    if explicit is not None:
        if not explicit.exists():
            raise NearmetalError(f"no guest kernel at {explicit}", fix="give vm.kernel an existing vmlinuz")
        return explicit
    candidates = [
        p
        for p in Path("/boot").glob("vmlinuz-*")
        if (Path("/lib/modules") / p.name.removeprefix("vmlinuz-")).is_dir()
    ]
    # Debian's cloud kernel has no 9p: prefer the generic one
    candidates.sort(key=lambda p: ("cloud" in p.name, [-ord(c) for c in p.name]))
    if not candidates:
        raise NearmetalError(
            "no guest kernel with modules in /boot and /lib/modules",
            fix="apt-get install -y linux-image-amd64",
        )
    return candidates[0]


def find_virtiofsd() -> Path | None:
    found = shutil.which("virtiofsd")
    if found:
        return Path(found)
    return next((Path(p) for p in VIRTIOFSD_PATHS if Path(p).exists()), None)


@cache
def qemu_supports_dax() -> bool:
    out = hostcmd.output([QEMU, "-device", "vhost-user-fs-pci,help"], 30)
    return out is not None and "cache-size" in out


def kvm_usable() -> bool:
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
    except OSError:
        return False
    os.close(fd)
    return True


def kvm_cpu_flags() -> str:
    # nested PVM hosts abort on -cpu host unless the arch-capabilities MSR is hidden
    return "host,-arch-capabilities"


def qemu_argv(
    config: VmConfig, kernel: Path, initrd: Path, accel: str, name: str, append: str, share: list[str]
) -> list[str]:
    memory_mib = parse_size(config.memory) // (1024 * 1024)
    argv = [
        QEMU,
        "-name", name,
        "-machine", f"q35,accel={accel}",
        "-cpu", kvm_cpu_flags() if accel == "kvm" else "max",
        "-smp", str(config.cpus),
        "-m", f"{memory_mib}M",
        "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-monitor", "none",
        "-no-reboot",
        "-kernel", str(bootable_kernel(kernel)),
        "-initrd", str(initrd),
        "-append", append,
        *share,
    ]  # fmt: skip
    return argv


ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _items(values: list[str]) -> str:
    """Each value base64-encoded on its own, comma-separated (no comma in the base64 alphabet); "-" for
    none (the kernel drops an empty ``name=``)."""
    return ",".join(base64.b64encode(v.encode()).decode() for v in values) or "-"


def kernel_append(share: str, options: str, argv: list[str], env: dict[str, str] | None = None) -> str:
    """The guest kernel's command line: the share, and the command and its environment as data."""
    for key, value in (env or {}).items():
        if not ENV_KEY_RE.match(key):
            raise NearmetalError(
                f"environment variable name {key!r} cannot be passed to the VM guest",
                fix="use letters, digits and _ only, not starting with a digit",
            )
        if "\0" in value:
            raise NearmetalError(f"environment variable {key} holds a NUL byte", fix="remove it")
    if not argv or not argv[0] or "=" in argv[0] or argv[0].startswith("-") or any("\0" in a for a in argv):
        raise NearmetalError(f"cannot run {argv[:1]!r} in the VM guest", fix="give a program name")
    append = (
        # no_timer_check: under a slow emulated CPU the IO-APIC timer check fails and the boot panics
        "console=ttyS0 quiet loglevel=1 panic=-1 no_timer_check rdinit=/init "
        f"nearmetal_fs={share} nearmetal_opts={options or 'defaults'} "
        f"nearmetal_env={_items([f'{k}={v}' for k, v in (env or {}).items()])} nearmetal_argv={_items(argv)}"
    )
    if len(append) > CMDLINE_LIMIT:
        raise NearmetalError(
            f"the guest command is too long for the kernel command line ({len(append)} > {CMDLINE_LIMIT} bytes)",
            fix="shorten the workload's arguments",
        )
    return append


@register_layer
class VmLayer(Layer[VmConfig]):
    kind = "vm"
    family = "vm"
    Config = VmConfig
    description = "the workload inside a QEMU guest, test directory over virtio-9p or virtio-fs"
    needs_root = True

    def __init__(self, config: VmConfig) -> None:
        super().__init__(config)
        self.layer_dir: Path | None = None
        self.test_dir_host: Path | None = None
        self.kernel: Path | None = None
        self.accel = "tcg"
        self.daemons: list[hostcmd.Process[bytes]] = []
        self.boots = 0
        self.sockets: list[Path] = []

    @classmethod
    def example_config(cls) -> dict[str, Any]:
        return {"layer": "vm", "share": "9p", "accel": "tcg"}

    def requires(self) -> list[Requirement]:
        reqs = [
            Requirement(QEMU, "qemu-system-x86", purpose="the vm layer"),
            Requirement("busybox", "busybox-static", purpose="the vm layer's guest"),
        ]
        return reqs

    # set-up --------------------------------------------------------------------------------------------
    def setup(self, ctx: TrialContext) -> None:
        if os.geteuid() != 0:
            raise PrivilegeError(
                "the vm layer shares host directories with a guest and needs root", fix="run as root"
            )
        if shutil.which(QEMU) is None:
            raise NearmetalError(f"{QEMU} is not installed", fix="apt-get install -y qemu-system-x86")
        seen, host = ctx.endpoints.get("test_dir"), ctx.endpoints.get("test_dir_host")
        if seen is not None and host is not None and str(seen) != str(host):
            raise NearmetalError(
                "the vm layer cannot go inside another container or VM layer",
                fix="keep one container or vm layer per variant",
            )
        if self.config.share == "virtiofs" and find_virtiofsd() is None:
            raise NearmetalError(
                "virtiofsd is not installed (vm share: virtiofs)",
                fix="apt-get install -y qemu-system-common (Debian 12) or virtiofsd",
            )
        if self.config.dax and (self.config.share != "virtiofs" or not qemu_supports_dax()):
            raise NearmetalError(
                "this QEMU has no DAX window for virtio-fs (vhost-user-fs-pci has no cache-size property)"
                if self.config.share == "virtiofs"
                else "DAX applies to virtio-fs only",
                fix="drop dax, or use a QEMU built from the virtio-fs development branch",
            )
        self.kernel = find_kernel(self.config.kernel)
        self.layer_dir = ctx.trial_dir.resolve() / ctx.host_name("vm")
        self.layer_dir.mkdir(parents=True)
        if host:
            self.test_dir_host = Path(str(host))
        else:
            self.test_dir_host = self.layer_dir / "test"
            self.test_dir_host.mkdir()
        self.accel = self._choose_accel()
        if self.accel == "tcg":
            ctx.caveats.append(EMULATED_CAVEAT)
        ctx.endpoints["test_dir_host"] = str(self.test_dir_host)
        ctx.endpoints["test_dir"] = GUEST_TEST_DIR
        ctx.placement["vm"] = {
            "share": self.config.share,
            "cache": self.config.cache,
            "dax": self.config.dax,
            "accel": self.accel,
            "cpus": self.config.cpus,
            "memory": self.config.memory,
            "kernel": self.kernel.name,
            "test_dir_host": str(self.test_dir_host),
        }

    def _choose_accel(self) -> str:
        if self.config.accel == "tcg":
            return "tcg"
        if self.config.accel == "kvm":
            if not kvm_usable():
                raise NearmetalError(
                    "/dev/kvm cannot be opened (vm accel: kvm)", fix="use accel: auto or tcg"
                )
            return "kvm"
        probe = kvm_probe(self.kernel or find_kernel(), self.config.boot_timeout)
        return "kvm" if probe.get("use_kvm") else "tcg"

    # wrapping ------------------------------------------------------------------------------------------
    def _share(self, name: str) -> tuple[list[str], str]:
        """QEMU arguments for the share, and the guest's mount options."""
        assert self.layer_dir is not None and self.test_dir_host is not None
        if self.config.share == "9p":
            cache_mode = "none" if self.config.cache in ("auto", "none") else self.config.cache
            return (
                [
                    "-fsdev",
                    f"local,id=nmfs,path={self.test_dir_host},security_model=passthrough,multidevs=remap",
                    "-device",
                    "virtio-9p-pci,fsdev=nmfs,mount_tag=nmtest",
                ],
                f"msize={self.config.msize},cache={cache_mode}",
            )
        # a UNIX socket path must fit in 108 bytes: keep it short, named for the run (cleanup finds it)
        socket = socket_dir() / f"{name}.sock"
        self.sockets.append(socket)
        self._start_virtiofsd(socket, name)
        memory_mib = parse_size(self.config.memory) // (1024 * 1024)
        device = "vhost-user-fs-pci,chardev=vfs,tag=nmtest"
        if self.config.dax:
            device += f",cache-size={parse_size(self.config.dax_window) // (1024 * 1024)}M"
        return (
            [
                "-chardev",
                f"socket,id=vfs,path={socket}",
                "-device",
                device,
                "-object",
                f"memory-backend-memfd,id=mem,size={memory_mib}M,share=on",
                "-numa",
                "node,memdev=mem",
            ],
            "dax" if self.config.dax else "",
        )

    def _start_virtiofsd(self, socket: Path, name: str) -> None:
        virtiofsd = find_virtiofsd()
        assert virtiofsd is not None and self.layer_dir is not None
        cache_mode = self.config.cache if self.config.cache in ("none", "auto", "always") else "auto"
        argv = [
            str(virtiofsd),
            f"--socket-path={socket}",
            "-o",
            f"source={self.test_dir_host}",
            "-o",
            f"cache={cache_mode}",
            *(["-o", "allow_direct_io"] if self.config.direct_io else []),
            "-f",
        ]
        log = open(self.layer_dir.parent / f"virtiofsd-{name}.log", "wb")  # noqa: SIM115
        try:
            daemon = hostcmd.start(
                argv, stdout=log, stderr=log, new_session=True, context="vm share: virtiofs"
            )
        finally:
            log.close()
        self.daemons.append(daemon)
        deadline = time.monotonic() + 20
        while not socket.exists():
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise NearmetalError(
                    f"virtiofsd did not start (see virtiofsd-{name}.log in the trial directory)"
                )
            time.sleep(0.02)

    def wrap(self, process: ProcessSpec, ctx: TrialContext) -> ProcessSpec:
        assert self.kernel is not None and self.layer_dir is not None
        binaries = []
        program = shutil.which(process.argv[0])
        if program is None:
            raise NearmetalError(f"{process.argv[0]} is not installed (needed inside the VM)")
        binaries.append(Path(program))
        initrd = build_initramfs_for(self.kernel, binaries)
        name = ctx.host_name("vm", process.label())
        guest_argv = ["/usr/bin/" + Path(program).name, *process.argv[1:]]
        kernel_append(self.config.share, "", guest_argv, process.env)  # refuse before virtiofsd starts
        share_args, options = self._share(name)
        append = kernel_append(self.config.share, options, guest_argv, process.env)
        self.boots += 1
        # the workload's stdout and exit status, each on a virtio-serial port of its own
        out_fifo = self.layer_dir / f"stdout-{self.boots}"
        status_file = self.layer_dir / f"status-{self.boots}"
        os.mkfifo(out_fifo, 0o600)
        ports = serial_ports(out_fifo, status_file)
        argv = qemu_argv(self.config, self.kernel, initrd, self.accel, name, append, [*share_args, *ports])
        self._read_boot_files(ctx, [bootable_kernel(self.kernel), initrd])
        process.argv = [
            sys.executable, "-m", "nearmetal.layers.vm_guest",
            "--stdout", str(out_fifo), "--status", str(status_file), "--", *argv,
        ]  # fmt: skip
        process.env = {}
        return process

    def _read_boot_files(self, ctx: TrialContext, files: list[Path]) -> None:
        """Read the kernel and initramfs QEMU will load now, and record what that cost the disk they are on,
        so that a workload measuring its disk's counters (fio) leaves it out."""
        from nearmetal.telemetry import diskio

        for path in files:
            backing = diskio.backing_of(path)
            before = diskio.counters(backing.majmin) if backing.kind == "disk" else None
            with open(path, "rb") as f:
                while f.read(1 << 20):
                    pass
            after = diskio.counters(backing.majmin) if backing.kind == "disk" else None
            if before is None or after is None:
                continue
            record_path = ctx.trial_dir / "io-excluded.json"
            record: dict[str, Any] = {"device": backing.device, "read_bytes": 0, "write_bytes": 0}
            with contextlib.suppress(OSError, ValueError):
                record = json.loads(record_path.read_text())
            if record.get("device") != backing.device:
                continue
            record["read_bytes"] += after[0] - before[0]
            record["why"] = "the VM's kernel and initramfs, read before the guest started"
            record_path.write_text(json.dumps(record) + "\n")

    def collect(self, ctx: TrialContext) -> list[Metric]:
        """A flag the loss tables show beside the row (``report.tables.MODE_COLUMNS``): 1 = the guest ran on
        an emulated CPU (TCG), so its figures are not representative of production."""
        return [Metric("cpu_emulated", 1.0 if self.accel == "tcg" else 0.0, "flag", "lower", "vm")]

    def teardown(self, ctx: TrialContext) -> None:
        for daemon in self.daemons:
            if daemon.poll() is None:
                hostcmd.stop(daemon, terminate=True)
        self.daemons = []
        for socket in self.sockets:
            with contextlib.suppress(OSError):
                socket.unlink()
        self.sockets = []
        if self.layer_dir is not None:
            remove_tree(self.layer_dir)
            self.layer_dir = None


def _chardev_path(path: Path) -> str:
    return str(path).replace(",", ",,")  # QEMU's option syntax doubles a comma in a value


def serial_ports(out_fifo: Path, status_file: Path) -> list[str]:
    """QEMU arguments for the guest's output and status ports (virtio-serial), apart from its console."""
    from nearmetal.layers.vm_guest import OUT_PORT, STATUS_PORT

    return [
        "-device", "virtio-serial-pci,id=nmser",
        "-chardev", f"file,id=nmout,path={_chardev_path(out_fifo)}",
        "-device", f"virtserialport,bus=nmser.0,chardev=nmout,name={OUT_PORT}",
        "-chardev", f"file,id=nmstatus,path={_chardev_path(status_file)}",
        "-device", f"virtserialport,bus=nmser.0,chardev=nmstatus,name={STATUS_PORT}",
    ]  # fmt: skip


def bootable_kernel(kernel: Path) -> Path:
    from nearmetal.layers.vm_guest import uncompressed_kernel

    return uncompressed_kernel(kernel, cache_dir() / "vm")


def build_initramfs_for(kernel: Path, binaries: list[Path]) -> Path:
    from nearmetal.layers.vm_guest import build_initramfs

    return build_initramfs(kernel, binaries, cache_dir() / "vm")


def kvm_probe(kernel: Path, timeout: float = PROBE_TIMEOUT_S) -> dict[str, Any]:
    """Boot the guest with ``true`` under TCG, then under KVM with a deadline of the TCG time divided by the
    speed-up KVM must show; KVM is used only when it boots within that. On hosts where /dev/kvm opens but
    guests run at emulation speed (nested PVM) this says no, at the cost of about two TCG boots. The result
    is cached per kernel and QEMU binary."""
    qemu = shutil.which(QEMU) or QEMU
    key = f"v2-{kernel.name}-{int(Path(qemu).stat().st_mtime) if Path(qemu).exists() else 0}"
    cache_file = cache_dir() / "vm" / f"kvm-probe-{key}.json"
    with contextlib.suppress(OSError, ValueError):
        cached: dict[str, Any] = json.loads(cache_file.read_text())
        return cached
    result: dict[str, Any] = {"kvm_usable": kvm_usable(), "use_kvm": False}
    if result["kvm_usable"]:
        initrd = build_initramfs_for(kernel, [Path(shutil.which("true") or "/bin/true")])
        config = VmConfig(accel="tcg")
        tcg_s = _timed_boot(config, kernel, initrd, "tcg", timeout)
        result["tcg_boot_s"] = tcg_s
        deadline = tcg_s / KVM_SPEEDUP_NEEDED if tcg_s else timeout
        kvm_s = _timed_boot(config, kernel, initrd, "kvm", deadline)
        result["kvm_boot_s"] = kvm_s
        result["use_kvm"] = kvm_s is not None
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    cache_file.write_text(json.dumps(result, indent=1) + "\n")
    return result


def _timed_boot(config: VmConfig, kernel: Path, initrd: Path, accel: str, timeout: float) -> float | None:
    # named like every nearmetal host object, so `nearmetal cleanup` would find a probe that outlived us
    argv = qemu_argv(
        config, kernel, initrd, accel, "nearmetal-kvm-probe-", kernel_append("none", "", ["true"]), []
    )
    started = time.perf_counter()
    # its own session, so a boot that misses the deadline goes down with QEMU (the relay's child) too
    proc = hostcmd.start(
        [sys.executable, "-m", "nearmetal.layers.vm_guest", *argv],
        stdout=hostcmd.DEVNULL,
        stderr=hostcmd.DEVNULL,
        new_session=True,
    )
    try:
        returncode = hostcmd.wait(proc, timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return time.perf_counter() - started if returncode == 0 else None
