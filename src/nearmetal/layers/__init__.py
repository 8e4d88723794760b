"""Layers: one module per isolation or sharing mechanism."""

from __future__ import annotations

import importlib

from nearmetal.errors import NearmetalError
from nearmetal.layers.base import Layer, LayerConfig, TrialContext

# kind -> "module:Class"; every module is imported when the plan model is built (for its Config),
# so a layer module must import only the standard library and nearmetal at top level.
LAYER_CLASSES: dict[str, str] = {
    "clusters": "nearmetal.layers.clusters:ClustersLayer",
    "colocate": "nearmetal.layers.colocate:ColocateLayer",
    "cpu-quota": "nearmetal.layers.cpu_quota:CpuQuotaLayer",
    "cpuset": "nearmetal.layers.cpuset:CpusetLayer",
    "fault": "nearmetal.layers.fault:FaultLayer",
    "gpu": "nearmetal.layers.gpu:GpuLayer",
    "netns": "nearmetal.layers.netns:NetnsLayer",
    "slirp4netns": "nearmetal.layers.usernet:Slirp4netnsLayer",
    "pasta": "nearmetal.layers.usernet:PastaLayer",
    "pod": "nearmetal.layers.pod:PodLayer",
    "overlayfs": "nearmetal.layers.overlayfs:OverlayfsLayer",
    "fuse-overlayfs": "nearmetal.layers.fuse_overlayfs:FuseOverlayfsLayer",
    "bindfs": "nearmetal.layers.bindfs:BindfsLayer",
    "squashfuse": "nearmetal.layers.squashfuse:SquashfuseLayer",
    "tmpfs": "nearmetal.layers.tmpfs:TmpfsLayer",
    "container": "nearmetal.layers.container:ContainerLayer",
    "vm": "nearmetal.layers.vm:VmLayer",
}


def layer_class(kind: str) -> type[Layer]:
    try:
        target = LAYER_CLASSES[kind]
    except KeyError:
        known = ", ".join(sorted(LAYER_CLASSES))
        raise NearmetalError(f"unknown layer {kind!r}", fix=f"use one of: {known}") from None
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def all_layer_classes() -> dict[str, type[Layer]]:
    return {kind: layer_class(kind) for kind in LAYER_CLASSES}


def make_layer(config: LayerConfig) -> Layer:
    return layer_class(config.layer)(config)  # type: ignore[attr-defined]


__all__ = [
    "LAYER_CLASSES",
    "Layer",
    "LayerConfig",
    "TrialContext",
    "all_layer_classes",
    "layer_class",
    "make_layer",
]
