"""fuse-overlayfs: the overlay in user space (rootless podman's storage driver): overlay semantics plus
the cost of FUSE.

O_DIRECT: fuse-overlayfs (1.x, written in C) clears O_DIRECT in every open it passes on (``flags &=
~O_DIRECT`` in ``ovl_do_open``) and has no option to keep it, so a workload's direct I/O through this layer is
served from the host's page cache after the first read of each block. The fio workload lays its files out
and drops the caches before fio starts, and measures the share of bytes the disk really moved
(``disk_read_share_pct``): the fs-layers tables say "cached" for these rows rather than passing them off as
direct I/O."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from nearmetal.layers.base import TrialContext, register_layer
from nearmetal.layers.mounts import FilesystemConfig, FilesystemLayer
from nearmetal.workloads.base import Requirement


class FuseOverlayfsConfig(FilesystemConfig):
    layer: Literal["fuse-overlayfs"] = "fuse-overlayfs"
    lower: Path | None = Field(None, description="a read-only lower directory (default: an empty one)")
    options: str = Field("", pattern=r"^[A-Za-z0-9_=,.-]*$", description="more -o options")


@register_layer
class FuseOverlayfsLayer(FilesystemLayer[FuseOverlayfsConfig]):
    kind = "fuse-overlayfs"
    Config = FuseOverlayfsConfig
    description = "overlay in user space over FUSE (rootless container storage)"
    fstype = "fuse.fuse-overlayfs"
    rootless_form = True
    root_because = "it mounts a filesystem in the host's mount namespace"
    rootless_alternative = (
        "fuse-overlayfs runs as the user and mounts through /dev/fuse (rootless Podman's storage)"
    )

    @classmethod
    def example_config(cls) -> dict[str, Any]:
        return {"layer": "fuse-overlayfs"}

    def requires(self) -> list[Requirement]:
        return [Requirement("fuse-overlayfs", "fuse-overlayfs", purpose="the fuse-overlayfs layer")]

    def mount(self, ctx: TrialContext) -> None:
        assert self.layer_dir is not None and self.mountpoint is not None
        lower = self.source or self.config.lower or self.layer_dir / "lower"
        lower.mkdir(exist_ok=True)
        upper, work = self.layer_dir / "upper", self.layer_dir / "work"
        upper.mkdir()
        work.mkdir()
        options = f"lowerdir={lower},upperdir={upper},workdir={work}"
        if self.config.options:
            options += "," + self.config.options
        self.start_daemon(["fuse-overlayfs", "-f", "-o", options, str(self.mountpoint)], ctx)

    def backing_dir(self, ctx: TrialContext) -> Path | None:
        assert self.layer_dir is not None
        return self.layer_dir / "upper"
