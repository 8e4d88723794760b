"""bindfs: a FUSE passthrough of a directory. Nothing changes but the path every I/O takes (kernel →
/dev/fuse → a user-space daemon → kernel), so the loss it shows is the cost of FUSE itself."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from nearmetal.layers.base import TrialContext
from nearmetal.layers.mounts import FilesystemConfig, FilesystemLayer
from nearmetal.workloads.base import Requirement


class BindfsConfig(FilesystemConfig):
    layer: Literal["bindfs"] = "bindfs"
    multithreaded: bool = Field(
        False,
        description="serve requests in parallel (--multithreaded; bindfs runs single-threaded by default)",
    )
    options: str = Field("", pattern=r"^[A-Za-z0-9_=,.:-]*$", description="more -o options")


class BindfsLayer(FilesystemLayer):
    kind = "bindfs"
    Config = BindfsConfig
    description = "FUSE passthrough of a directory (the cost of FUSE itself)"
    fstype = "fuse"

    def __init__(self, config: BindfsConfig) -> None:
        super().__init__(config)
        self.config: BindfsConfig = config

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
        if self.config.options:
            argv += ["-o", self.config.options]
        self.start_daemon([*argv, str(source), str(self.mountpoint)], ctx)
