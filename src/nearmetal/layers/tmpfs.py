"""tmpfs: files in memory, the ceiling no disk-backed layer can beat (and what ``/dev/shm`` or an
``emptyDir: {medium: Memory}`` gives a pod)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from nearmetal.host.machine import TooLargeError
from nearmetal.layers.base import TrialContext, register_layer
from nearmetal.layers.mounts import FilesystemConfig, FilesystemLayer, run_tool
from nearmetal.units import mem_available_bytes, parse_size


class TmpfsConfig(FilesystemConfig):
    layer: Literal["tmpfs"] = "tmpfs"
    size: str = Field("1g", description="the tmpfs size limit (memory is used only as files fill it)")
    huge: Literal["never", "always", "within_size", "advise"] = Field("never", description="huge pages")

    @field_validator("size")
    @classmethod
    def _size(cls, value: str) -> str:
        parse_size(value)
        return value


@register_layer
class TmpfsLayer(FilesystemLayer[TmpfsConfig]):
    kind = "tmpfs"
    Config = TmpfsConfig
    description = "memory-backed filesystem (the I/O ceiling)"
    fstype = "tmpfs"

    @classmethod
    def example_config(cls) -> dict[str, Any]:
        return {"layer": "tmpfs", "size": "64m"}

    def check_resources(self) -> None:
        """Before a run (``run.preflight.check_resources``) and again at mount: the size fits in memory."""
        size = parse_size(self.config.size)
        available = mem_available_bytes()
        if available is not None and size > available * 0.8:
            raise TooLargeError(
                f"a tmpfs of {self.config.size} could use more memory than this machine has available "
                f"({available / 1024**2:,.0f} MiB)",
                fix="lower the tmpfs layer's size (and fio's size × numjobs with it)",
            )

    def mount(self, ctx: TrialContext) -> None:
        assert self.mountpoint is not None
        self.check_resources()
        size = parse_size(self.config.size)
        options = f"size={size},mode=0755,huge={self.config.huge}"
        run_tool(
            ["mount", "-t", "tmpfs", "-o", options, ctx.host_name("tmpfs"), str(self.mountpoint)],
            "mounting a tmpfs",
        )

    def mount_options(self) -> dict[str, Any]:
        return {"size": self.config.size}
