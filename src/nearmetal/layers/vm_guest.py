"""The guest side of the vm layer: nearmetal's initramfs (busybox, the workload's binaries and their shared
libraries, the kernel modules for 9p and virtio-fs, and an init script) and the console relay that turns a
guest's exit status into the wrapped process's own.

The initramfs is an uncompressed ``newc`` cpio archive written here (no ``cpio`` program needed), cached in
``~/.cache/nearmetal/vm`` under a hash of everything that goes into it, so it is built once per host.
"""

from __future__ import annotations

import hashlib
import io
import lzma
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from nearmetal.errors import NearmetalError

EXIT_MARKER = "nearmetal-exit="
START_MARKER = "nearmetal-guest-start"
GUEST_MODULES = (
    "virtio_pci",
    "9pnet_virtio",
    "9p",
    "virtiofs",
)
INIT_VERSION = "3"
INIT_SCRIPT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mkdir -p /dev/shm && mount -t tmpfs tmpfs /dev/shm
for module in $(cat /etc/nearmetal-modules); do insmod "/lib/modules/$module" 2>/dev/null; done
fs=; opts=; cmd=
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    nearmetal_fs=*) fs="${arg#nearmetal_fs=}" ;;
    nearmetal_opts=*) opts="${arg#nearmetal_opts=}" ;;
    nearmetal_cmd=*) cmd="${arg#nearmetal_cmd=}" ;;
  esac
done
mkdir -p /nearmetal/test
rc=0
case "$fs" in
  9p) mount -t 9p -o "trans=virtio,version=9p2000.L,$opts" nmtest /nearmetal/test || rc=90 ;;
  virtiofs) mount -t virtiofs -o "$opts" nmtest /nearmetal/test || rc=91 ;;
  none) ;;
esac
if [ "$rc" = 0 ]; then
  echo "__START__"
  eval "$(echo "$cmd" | base64 -d)"
  rc=$?
fi
cd /
sync
umount /nearmetal/test 2>/dev/null
echo "__EXIT__$rc"
poweroff -f
""".replace("__START__", START_MARKER).replace("__EXIT__", EXIT_MARKER)


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


def shared_libraries(binary: Path) -> list[Path]:
    """The shared libraries ``binary`` loads (``ldd``), as the paths the loader will look for."""
    try:
        out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
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
        module = by_name.get(name.replace("-", "_"))
        if module is not None:
            visit(module)
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
    if (
        "not a dynamic executable"
        not in subprocess.run(["ldd", str(busybox)], capture_output=True, text=True, timeout=30).stdout
        + subprocess.run(["ldd", str(busybox)], capture_output=True, text=True, timeout=30).stderr
    ):
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


def relay(argv: list[str]) -> int:
    """Run QEMU, copy the guest console to stdout (CR LF → LF) and exit with the guest command's status."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    status: int | None = None
    started = False
    out = sys.stdout.buffer
    for raw in proc.stdout:
        line = raw.replace(b"\r\n", b"\n").replace(b"\r", b"")
        text = line.decode(errors="replace").strip()
        if text.startswith(EXIT_MARKER):
            status = int(text[len(EXIT_MARKER) :] or 1)
            continue
        if text == START_MARKER:
            started = True
            continue
        # the boot log goes to stderr; what the guest command prints goes to stdout
        target = out if started else sys.stderr.buffer
        target.write(line)
        target.flush()
    proc.wait()
    if status is None:
        sys.stderr.write(
            f"nearmetal: the VM ended (qemu exit {proc.returncode}) before the guest reported a status\n"
        )
        return 125
    return status


if __name__ == "__main__":
    sys.exit(relay(sys.argv[1:]))
