"""squashfuse: a read-only squashfs image mounted through FUSE (how Apptainer/Singularity and many HPC
sites ship software and data sets without root).

The image is built for the trial with ``mksquashfs`` from ``source`` (a directory), or from ``files``
files of ``file_size`` random bytes named like fio's (``job0.dat``, ``job1.dat``, …), so a fio read job of up to
``files`` clients finds its files already laid out and reads them through squashfuse. Random bytes keep
squashfs from deduplicating or compressing the data away; ``compression: none`` keeps mksquashfs fast.
Writes fail: this layer is for read patterns only.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from nearmetal.errors import NearmetalError
from nearmetal.layers.base import TrialContext, register_layer
from nearmetal.layers.mounts import FilesystemConfig, FilesystemLayer, free_bytes, run_tool
from nearmetal.metrics import Metric
from nearmetal.units import parse_size
from nearmetal.workloads.base import Requirement

CHUNK = 4 * 1024 * 1024


class SquashfuseConfig(FilesystemConfig):
    layer: Literal["squashfuse"] = "squashfuse"
    source: Path | None = Field(None, description="a directory to pack (default: generated files)")
    files: int = Field(64, ge=1, le=10_000, description="generated files (one per fio client)")
    file_size: str = Field("16m", description="size of each generated file (fio's size)")
    name_format: str = Field("job{index}.dat", pattern=r"^[A-Za-z0-9_.-]*\{index\}[A-Za-z0-9_.-]*$")
    compression: Literal["none", "gzip", "lz4", "zstd", "xz"] = "none"

    @field_validator("file_size")
    @classmethod
    def _size(cls, value: str) -> str:
        parse_size(value)
        return value


@register_layer
class SquashfuseLayer(FilesystemLayer[SquashfuseConfig]):
    kind = "squashfuse"
    Config = SquashfuseConfig
    description = "read-only squashfs image over FUSE"
    fstype = "fuse.squashfuse"

    def __init__(self, config: SquashfuseConfig) -> None:
        super().__init__(config)
        self.build_s: float | None = None
        self.image_bytes = 0

    @classmethod
    def example_config(cls) -> dict[str, Any]:
        return {"layer": "squashfuse", "files": 2, "file_size": "1m"}

    def requires(self) -> list[Requirement]:
        return [
            Requirement("squashfuse", "squashfuse", purpose="the squashfuse layer"),
            Requirement("mksquashfs", "squashfs-tools", purpose="the squashfuse layer's image"),
        ]

    def _generate(self, directory: Path) -> None:
        size = parse_size(self.config.file_size)
        needed = 2 * size * self.config.files
        if needed > free_bytes(directory):
            raise NearmetalError(
                f"squashfuse: the data and its image need {needed / 1024**2:,.0f} MiB, more than is free "
                f"in {directory}",
                fix="lower the layer's files or file_size, or set its base_dir to a larger filesystem",
            )
        for index in range(self.config.files):
            with open(directory / self.config.name_format.format(index=index), "wb") as f:
                left = size
                while left > 0:
                    f.write(os.urandom(min(CHUNK, left)))
                    left -= CHUNK

    def mount(self, ctx: TrialContext) -> None:
        assert self.layer_dir is not None and self.mountpoint is not None
        if self.source is not None and self.config.source is None:
            raise NearmetalError(
                "squashfuse makes its own read-only filesystem and cannot stack on another filesystem layer",
                fix="put squashfuse first in the variant, or give it a source directory",
            )
        source = self.config.source
        if source is None:
            source = self.layer_dir / "source"
            source.mkdir()
            self._generate(source)
        image = self.layer_dir / "image.squashfs"
        started = time.perf_counter()
        argv = ["mksquashfs", str(source), str(image), "-quiet", "-no-progress", "-no-xattrs"]
        argv += (
            ["-noI", "-noD", "-noF", "-noX"]
            if self.config.compression == "none"
            else ["-comp", self.config.compression]
        )
        run_tool(argv, "building the squashfs image", timeout=1800)
        self.build_s = time.perf_counter() - started
        self.image_bytes = image.stat().st_size
        if self.config.source is None:
            # the data now lives in the image only
            for path in source.iterdir():
                path.unlink()
        self.start_daemon(["squashfuse", "-f", str(image), str(self.mountpoint)], ctx)

    def mount_options(self) -> dict[str, Any]:
        return {"compression": self.config.compression, "image_bytes": self.image_bytes}

    def backing_dir(self, ctx: TrialContext) -> Path | None:
        return self.layer_dir  # the image file

    def collect(self, ctx: TrialContext) -> list[Metric]:
        if self.build_s is None:
            return []
        return [Metric("squashfs_build_s", self.build_s, "s", "lower", source="squashfuse")]
