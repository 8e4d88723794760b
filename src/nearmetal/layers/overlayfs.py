"""overlayfs: the kernel's union mount, as under every runC container's root filesystem.

The test directory is the overlay's merged view; new files land in the upper directory, so fio measures
what writing through an overlay costs (copy-up of existing files is not what this measures; give ``lower``
a populated directory to read through the overlay instead).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from nearmetal.layers.base import TrialContext, register_layer
from nearmetal.layers.mounts import FilesystemConfig, FilesystemLayer, run_tool


class OverlayfsConfig(FilesystemConfig):
    layer: Literal["overlayfs"] = "overlayfs"
    lower: Path | None = Field(None, description="a read-only lower directory (default: an empty one)")
    options: str = Field(
        "", pattern=r"^[A-Za-z0-9_=,.-]*$", description="more mount options, e.g. metacopy=on"
    )


@register_layer
class OverlayfsLayer(FilesystemLayer[OverlayfsConfig]):
    kind = "overlayfs"
    Config = OverlayfsConfig
    description = "kernel overlay mount (the runC rootfs mechanism)"
    fstype = "overlay"
    rootless_form = True
    root_because = "it mounts a filesystem in the host's mount namespace"
    rootless_alternative = "a kernel overlay mounted by the user's namespace root (Linux ≥ 5.11)"

    @classmethod
    def example_config(cls) -> dict[str, Any]:
        return {"layer": "overlayfs"}

    def mount(self, ctx: TrialContext) -> None:
        assert self.layer_dir is not None and self.mountpoint is not None
        lower = self.config.lower or self.layer_dir / "lower"
        lower.mkdir(exist_ok=True)
        upper, work = self.layer_dir / "upper", self.layer_dir / "work"
        if self.source is not None:
            # stacked on another filesystem layer: its mount is the lower layer
            lower = self.source
        upper.mkdir()
        work.mkdir()
        options = f"lowerdir={lower},upperdir={upper},workdir={work}"
        if self.config.options:
            options += "," + self.config.options
        run_tool(
            ["mount", "-t", "overlay", "-o", options, ctx.host_name("overlay"), str(self.mountpoint)],
            "mounting an overlay",
        )

    def mount_options(self) -> dict[str, Any]:
        return {"options": self.config.options} if self.config.options else {}

    def backing_dir(self, ctx: TrialContext) -> Path | None:
        assert self.layer_dir is not None
        return self.layer_dir / "upper"  # new files land there
