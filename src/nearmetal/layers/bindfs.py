"""bindfs: a FUSE passthrough of a directory. Nothing changes but the path every I/O takes (kernel →
/dev/fuse → a user-space daemon → kernel), so the loss it shows is the cost of FUSE itself.

O_DIRECT: by default bindfs clears the flag when it opens the file underneath, so a workload's direct I/O
is served from the host's page cache (and reads faster than bare metal). The layer starts bindfs with
``--forward-odirect=ALIGNMENT`` (see ``bindfs --help``), which opens the file underneath with O_DIRECT and
aligns each request to ALIGNMENT bytes, so direct I/O through the mount reaches the disk as it does without
the layer. The fio workload measures what share of its bytes the disk really moved
(``disk_read_share_pct``), whatever the daemon does."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from nearmetal.layers.base import TrialContext, register_layer
from nearmetal.layers.mounts import FilesystemConfig, FilesystemLayer
from nearmetal.workloads.base import Requirement


class BindfsConfig(FilesystemConfig):
    layer: Literal["bindfs"] = "bindfs"
    multithreaded: bool = Field(
        False,
        description="serve requests in parallel (--multithreaded; bindfs runs single-threaded by default)",
    )
    forward_odirect: bool = Field(
        True,
        description="pass a workload's O_DIRECT to the file underneath (--forward-odirect); false: bindfs's "
        "default, which clears it and serves direct I/O from the host page cache",
    )
    odirect_alignment: int = Field(
        4096, ge=512, le=1024 * 1024, description="bytes each forwarded O_DIRECT request is aligned to"
    )
    options: str = Field("", pattern=r"^[A-Za-z0-9_=,.:-]*$", description="more -o options")


@register_layer
class BindfsLayer(FilesystemLayer[BindfsConfig]):
    kind = "bindfs"
    Config = BindfsConfig
    description = "FUSE passthrough of a directory (the cost of FUSE itself)"
    fstype = "fuse"
    rootless_form = True
    root_because = "it mounts a filesystem in the host's mount namespace"
    rootless_alternative = "bindfs runs as the user and mounts through /dev/fuse"

    @classmethod
    def example_config(cls) -> dict[str, Any]:
        return {"layer": "bindfs"}

    def requires(self) -> list[Requirement]:
        return [Requirement("bindfs", "bindfs", purpose="the bindfs layer")]

    def mount(self, ctx: TrialContext) -> None:
        assert self.layer_dir is not None and self.mountpoint is not None
        source = self.source or self.layer_dir / "source"
        source.mkdir(exist_ok=True)
        argv = ["bindfs", "-f"]
        if self.config.multithreaded:
            argv.append("--multithreaded")
        if self.config.forward_odirect:
            argv.append(f"--forward-odirect={self.config.odirect_alignment}")
        if self.config.options:
            argv += ["-o", self.config.options]
        self.start_daemon([*argv, str(source), str(self.mountpoint)], ctx)

    def backing_dir(self, ctx: TrialContext) -> Path | None:
        assert self.layer_dir is not None
        if self.source is None:
            return self.layer_dir / "source"
        # bindfs over another filesystem layer: the data lands where that layer puts it
        return Path(str(ctx.endpoints.get("test_dir_backing") or self.source))

    def mount_options(self) -> dict[str, Any]:
        return {"forward_odirect": self.config.forward_odirect}
