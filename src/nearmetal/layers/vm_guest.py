"""The guest side of the vm layer: nearmetal's initramfs (busybox, the workload's binaries and their shared
libraries, the kernel modules for 9p, virtio-fs and virtio-serial, and an init script) and the relay that
turns what the guest reports into the wrapped process's output and exit status.

Channels: the workload's stdout goes to its own virtio-serial port (``nearmetal.out``, a FIFO on the host
that the relay copies to its stdout as it comes), its exit status to another (``nearmetal.status``, a file);
the serial console carries the boot log and the workload's stderr only, and goes to the relay's stderr. A
kernel message printed while the workload writes (``reboot: Power down``) can no longer land inside its
output.

The command and its environment reach the guest as data: every argument and every ``NAME=value`` is
base64-encoded on its own (comma-separated on the kernel command line); the init script decodes each into
one positional parameter and runs ``env -i PATH=… NAME=value… PROGRAM ARG…``: nothing of the plan is ever
parsed by the guest's shell.

The initramfs is an uncompressed ``newc`` cpio archive written here (no ``cpio`` program needed), cached in
``~/.cache/nearmetal/vm`` under a hash of everything that goes into it, so it is built once per host.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import lzma
import os
import re
import shutil
import stat
import sys
import threading
from pathlib import Path
from typing import BinaryIO

from nearmetal.errors import NearmetalError
from nearmetal.host import hostcmd

EXIT_MARKER = "nearmetal-exit="
START_MARKER = "nearmetal-guest-start"
GUEST_MODULES = (
    "virtio_pci",
    "9pnet_virtio",
    "9p",
    "virtiofs",
    "virtio_console",
)
OUT_PORT = "nearmetal.out"
STATUS_PORT = "nearmetal.status"
GUEST_PATH = "/bin:/sbin:/usr/bin:/usr/sbin"
INIT_VERSION = "4"
INIT_SCRIPT = (
    r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mkdir -p /dev/shm && mount -t tmpfs tmpfs /dev/shm
for module in $(cat /etc/nearmetal-modules); do insmod "/lib/modules/$module" 2>/dev/null; done
set -f
fs=; opts=; argv=; envs=
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    nearmetal_fs=*) fs="${arg#nearmetal_fs=}" ;;
    nearmetal_opts=*) opts="${arg#nearmetal_opts=}" ;;
    nearmetal_argv=*) argv="${arg#nearmetal_argv=}" ;;
    nearmetal_env=*) envs="${arg#nearmetal_env=}" ;;
  esac
done
# the virtio-serial ports, by name (no udev here)
out=/dev/console; status=
set +f
for port in /sys/class/virtio-ports/*; do
  [ -e "$port/name" ] || continue
  case "$(cat "$port/name")" in
    __OUT__) out="/dev/${port##*/}" ;;
    __STATUS__) status="/dev/${port##*/}" ;;
  esac
done
# one positional parameter per item: data, never code (the x keeps a trailing newline); no globbing
set -f
decode() { printf '%s' "$1" | base64 -d; printf x; }
set -- env -i "PATH=__PATH__"
IFS=,
for item in $envs $argv; do
  [ "$item" = - ] && continue
  value="$(decode "$item")"; set -- "$@" "${value%x}"
done
unset IFS
mkdir -p /nearmetal/test
rc=0
case "$fs" in
  9p) mount -t 9p -o "trans=virtio,version=9p2000.L,$opts" nmtest /nearmetal/test || rc=90 ;;
  virtiofs) mount -t virtiofs -o "$opts" nmtest /nearmetal/test || rc=91 ;;
  none) ;;
esac
if [ "$rc" = 0 ]; then
  echo "__START__"
  "$@" > "$out"
  rc=$?
fi
cd /
sync
umount /nearmetal/test 2>/dev/null
[ -n "$status" ] && echo "$rc" > "$status"
echo "__EXIT__$rc"
poweroff -f
""".replace("__START__", START_MARKER)
    .replace("__EXIT__", EXIT_MARKER)
    .replace("__OUT__", OUT_PORT)
    .replace("__STATUS__", STATUS_PORT)
    .replace("__PATH__", GUEST_PATH)
)


def newc_entry(name: str, mode: int, data: bytes = b"", ino: int = 0) -> bytes:
    """One entry of a ``newc`` cpio archive (the format the kernel unpacks as an initramfs)."""
    encoded = name.encode() + b"\0"
    header = "070701" + "".join(
        f"{v:08x}" for v in (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
    )
    out = header.encode() + encoded
    out += b"\0" * (-len(out) % 4)
    out += data
    out += b"\0" * (-len(out) % 4)
    return out


class Cpio:
    def __init__(self) -> None:
        self.buffer = io.BytesIO()
        self.dirs: set[str] = set()
        self.ino = 1

    def _add(self, name: str, mode: int, data: bytes = b"") -> None:
        self.ino += 1
        self.buffer.write(newc_entry(name.lstrip("/"), mode, data, self.ino))

    def directory(self, name: str) -> None:
        parts = Path(name.lstrip("/")).parts
        for i in range(1, len(parts) + 1):
            path = "/".join(parts[:i])
            if path not in self.dirs:
                self.dirs.add(path)
                self._add(path, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o755) -> None:
        self.directory(str(Path(name).parent))
        self._add(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self.directory(str(Path(name).parent))
        self._add(name, stat.S_IFLNK | 0o777, target.encode())

    def finish(self) -> bytes:
        self._add("TRAILER!!!", 0)
        return self.buffer.getvalue()


def ldd(binary: Path) -> str | None:
    """What ``ldd BINARY`` printed (stdout, then stderr); None when ldd is missing or hangs."""
    return hostcmd.output(["ldd", str(binary)], 30, stderr=True)


def shared_libraries(binary: Path) -> list[Path]:
    """The shared libraries ``binary`` loads (``ldd``), as the paths the loader will look for."""
    out = ldd(binary)
    if out is None:
        return []
    libs = []
    for line in out.splitlines():
        match = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if match:
            libs.append(Path(match.group(1)))
    return libs


def module_files(release: str, names: tuple[str, ...]) -> list[tuple[str, Path]]:
    """(path under /lib/modules/<release>, file) for the modules and their dependencies, in load order;
    modules built into the kernel are left out."""
    base = Path("/lib/modules") / release
    dep_file = base / "modules.dep"
    if not dep_file.exists():
        raise NearmetalError(
            f"no modules for kernel {release} (/lib/modules/{release}/modules.dep)",
            fix="apt-get install -y linux-image-amd64 (the vm layer boots Debian's kernel)",
        )
    deps: dict[str, list[str]] = {}
    for line in dep_file.read_text().splitlines():
        module, _, rest = line.partition(":")
        deps[module] = rest.split()
    by_name = {re.sub(r"\.ko(\.\w+)?$", "", Path(m).name).replace("-", "_"): m for m in deps}
    order: list[str] = []

    def visit(module: str) -> None:
        if module in order:
            return
        for dep in reversed(deps.get(module, [])):
            visit(dep)
        order.append(module)

    for name in names:
        found = by_name.get(name.replace("-", "_"))
        if found is not None:
            visit(found)
    return [(m, base / m) for m in order]


def _module_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".xz":
        return lzma.decompress(data)
    if path.suffix == ".zst":
        raise NearmetalError(f"{path} is zstd-compressed; nearmetal's initramfs needs plain or .xz modules")
    return data


XZ_MAGIC = b"\xfd7zXZ\x00"
ELF_MAGIC = b"\x7fELF"


def uncompressed_kernel(kernel: Path, cache: Path) -> Path:
    """The ELF ``vmlinux`` inside a ``bzImage`` (xz-compressed, as Debian ships it), cached.

    QEMU boots an ELF kernel with a PVH note straight into 64-bit code; a ``bzImage`` first decompresses
    itself in the guest, which under TCG takes longer than the rest of the boot (20 s of a 36 s boot here).
    Returns ``kernel`` itself when it holds no xz stream that decompresses to an ELF image."""
    st = kernel.stat()
    target = cache / f"vmlinux-{kernel_release(kernel)}-{st.st_size}-{int(st.st_mtime)}"
    if target.exists():
        return target
    data = kernel.read_bytes()
    start = data.find(XZ_MAGIC)
    while start >= 0:
        try:
            image = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[start:])
        except lzma.LZMAError:
            image = b""
        if image.startswith(ELF_MAGIC):
            cache.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".partial")
            partial.write_bytes(image)
            partial.rename(target)
            return target
        start = data.find(XZ_MAGIC, start + 1)
    return kernel


def kernel_release(kernel: Path) -> str:
    """``vmlinuz-6.1.0-56-amd64`` → ``6.1.0-56-amd64``."""
    return kernel.name.removeprefix("vmlinuz-")


def build_initramfs(kernel: Path, binaries: list[Path], cache: Path) -> Path:
    """nearmetal's initramfs for ``kernel`` with ``binaries`` (and their libraries), cached by content."""
    busybox = Path(shutil.which("busybox") or "/bin/busybox")
    if not busybox.exists():
        raise NearmetalError(
            "busybox is not installed (the vm layer's guest shell)", fix="apt-get install -y busybox-static"
        )
    said = ldd(busybox)
    if said is None:
        raise NearmetalError(f"ldd {busybox} did not answer (is libc-bin installed?)")
    if "not a dynamic executable" not in said:
        raise NearmetalError(f"{busybox} is not statically linked", fix="apt-get install -y busybox-static")
    release = kernel_release(kernel)
    modules = module_files(release, GUEST_MODULES)
    files: dict[str, Path] = {"bin/busybox": busybox}
    for binary in binaries:
        files["usr/bin/" + binary.name] = binary
        for lib in shared_libraries(binary):
            files[str(lib).lstrip("/")] = lib.resolve()
    hasher = hashlib.sha256(INIT_VERSION.encode() + INIT_SCRIPT.encode() + release.encode())
    for name, path in sorted(files.items()):
        st = path.stat()
        hasher.update(f"{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    for name, path in modules:
        hasher.update(f"{name}:{path.stat().st_size}".encode())
    target = cache / f"initramfs-{release}-{hasher.hexdigest()[:12]}.cpio"
    if target.exists():
        return target
    archive = Cpio()
    for directory in ("proc", "sys", "dev", "tmp", "etc", "sbin", "usr/sbin", "nearmetal/test", "root"):
        archive.directory(directory)
    for name, path in files.items():
        archive.file(name, path.read_bytes())
    for name in ("lib64", "lib"):
        # merged /usr: the loader path /lib64/ld-linux… must resolve as on the host
        if Path("/" + name).is_symlink() and not any(f.startswith(name + "/") for f in files):
            archive.symlink(name, os.readlink("/" + name))
    loaded = []
    for name, path in modules:
        plain = re.sub(r"\.(xz|zst)$", "", name)
        archive.file(f"lib/modules/{plain}", _module_bytes(path), 0o644)
        loaded.append(plain)
    archive.file("etc/nearmetal-modules", ("\n".join(loaded) + "\n").encode(), 0o644)
    archive.file("init", INIT_SCRIPT.encode())
    cache.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.write_bytes(archive.finish())
    partial.rename(target)
    return target


EXIT_RE = re.compile(re.escape(EXIT_MARKER) + r"(\d+)")


def _pump(fifo: Path, sink: BinaryIO) -> None:
    """Copy what the guest writes to its output port (a FIFO QEMU writes) to ``sink`` as it comes."""
    with contextlib.suppress(OSError), open(fifo, "rb", buffering=0) as source:
        while chunk := source.read(65536):
            sink.write(chunk)
            sink.flush()


def _release(fifo: Path) -> None:
    """Unblock a reader still waiting for QEMU to open the FIFO (QEMU failed before it did)."""
    with contextlib.suppress(OSError):
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def relay(args: list[str]) -> int:
    """``[--stdout FIFO] [--status FILE] [--] QEMU ARGV…``: run QEMU, copy the guest's output port to
    stdout and its console (CR LF → LF) to stderr, and exit with the status the guest wrote to its status
    port (the console's exit marker when there is no port: the KVM probe)."""
    out_fifo: Path | None = None
    status_file: Path | None = None
    while args and args[0] in ("--stdout", "--status"):
        if args[0] == "--stdout":
            out_fifo = Path(args[1])
        else:
            status_file = Path(args[1])
        args = args[2:]
    if args and args[0] == "--":
        args = args[1:]
    pump = None
    if out_fifo is not None:
        pump = threading.Thread(target=_pump, args=(out_fifo, sys.stdout.buffer), daemon=True)
        pump.start()
    proc = hostcmd.start(args, stdout=hostcmd.PIPE, error=None)
    assert proc.stdout is not None
    console_status: int | None = None
    started = False
    for raw in proc.stdout:
        line = raw.replace(b"\r\n", b"\n").replace(b"\r", b"")
        text = line.decode(errors="replace")
        found = EXIT_RE.search(text)
        if found:
            console_status = int(found.group(1))
            continue
        if text.strip() == START_MARKER:
            started = True
            continue
        # without an output port (the KVM probe) the command's output is on the console after the start
        target = sys.stdout.buffer if started and out_fifo is None else sys.stderr.buffer
        target.write(line)
        target.flush()
    proc.wait()
    if pump is not None and out_fifo is not None:
        _release(out_fifo)
        pump.join(timeout=30)
    status: int | None = None
    if status_file is not None:
        with contextlib.suppress(OSError, ValueError):
            status = int(status_file.read_text().strip())
    if status is None:
        status = console_status
    if status is None:
        sys.stderr.write(
            f"nearmetal: the VM ended (qemu exit {proc.returncode}) before the guest reported a status\n"
        )
        return 125
    return status


if __name__ == "__main__":
    sys.exit(relay(sys.argv[1:]))
