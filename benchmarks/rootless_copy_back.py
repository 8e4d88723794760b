"""What the descriptor-walking copy-back of a rootless trial costs (issue 26, case 3/8).

    python benchmarks/rootless_copy_back.py [--files 2000] [--mib 256]

Builds a child trial directory (``--files`` small files in 20 directories, one ``--mib`` MiB file, one sparse
1 TiB file), copies it back with ``nearmetal.run.asuser.copy_back`` (each entry opened ``O_PATH|O_NOFOLLOW``
beneath its parent, sparse files kept sparse) and prints the time, the throughput, and the space the sparse
file takes in the copy. Compare: ``cp -a`` of the same tree.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

from nearmetal.run.asuser import copy_back


def build(child: Path, files: int, mib: int) -> None:
    for i in range(files):
        sub = child / f"d{i % 20:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i}").write_bytes(b"x" * 512)
    with open(child / "big", "wb") as f:
        block = os.urandom(1 << 20)
        for _ in range(mib):
            f.write(block)
    with open(child / "sparse", "wb") as f:
        f.write(b"head")
        f.truncate(1 << 40)
    # the user's files (root's own are left behind: a hard link to one of them)
    for path in [child, *child.rglob("*")]:
        os.chown(path, 65534, 65534)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--mib", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        base = Path(tmp)
        build(base / "child", args.files, args.mib)
        subprocess.run(["sync"], check=True, timeout=120)
        (base / "trial").mkdir()
        fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
        started = time.perf_counter()
        report = copy_back(fd, "child", base / "trial")
        took = time.perf_counter() - started
        os.close(fd)
        sparse = (base / "trial" / "sparse").stat()
        started = time.perf_counter()
        subprocess.run(["cp", "-a", "--sparse=always", base / "child", base / "cp"], check=True, timeout=600)
        cp_s = time.perf_counter() - started
        print(
            f"copy_back: {report.files} files, {report.bytes / 2**20:.1f} MiB data in {took:.2f} s "
            f"({report.bytes / 2**20 / took:.0f} MiB/s); left out {len(report.left_out)}"
        )
        print(
            f"sparse 1 TiB file in the copy: size {sparse.st_size} bytes, allocated {sparse.st_blocks * 512} bytes"
        )
        print(f"cp -a --sparse=always of the same tree: {cp_s:.2f} s")


if __name__ == "__main__":
    main()
