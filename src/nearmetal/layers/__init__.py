"""Layers: one module per isolation or sharing mechanism, each registering its classes with
``@register_layer`` (``LAYERS``)."""

from __future__ import annotations

from typing import Any

from nearmetal.layers.base import (
    FAMILIES,
    LAYERS,
    Layer,
    LayerConfig,
    TrialContext,
    layer_kinds,
    register_layer,
)


def layer_class(kind: str) -> type[Layer[Any]]:
    return LAYERS.get_or_fail(kind)


def all_layer_classes() -> dict[str, type[Layer[Any]]]:
    return dict(LAYERS)


def make_layer(config: LayerConfig) -> Layer[Any]:
    return layer_class(config.layer)(config)


__all__ = [
    "FAMILIES",
    "LAYERS",
    "Layer",
    "LayerConfig",
    "TrialContext",
    "all_layer_classes",
    "layer_class",
    "layer_kinds",
    "make_layer",
    "register_layer",
]
