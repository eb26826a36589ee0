"""Named networks, as layer lists (see `models.py` for the layer language). Plain data: the
config schema checks preset names without importing torch."""
from __future__ import annotations

from typing import Any


def _conv(out: int, kernel: int, padding: int, stride: int = 1) -> dict[str, Any]:
    return {"conv": {"out": out, "kernel": kernel, "stride": stride, "padding": padding}}


def _pool(kind: str, kernel: int = 3, stride: int = 2, ceil: bool = False) -> dict[str, Any]:
    return {"pool": {"kind": kind, "kernel": kernel, "stride": stride, "ceil": ceil}}


def _fc(out: int | None = None) -> dict[str, Any]:
    return {"fc": {"out": out}}


PRESETS: dict[str, list[Any]] = {
    # Caffe's examples/cifar10/cifar10_full_train_test.prototxt (Caffe sizes pooling with ceil)
    "cifar10_full": [
        _conv(32, 5, 2), _pool("max", ceil=True), "relu", "norm",
        _conv(32, 5, 2), "relu", _pool("avg", ceil=True), "norm",
        _conv(64, 5, 2), "relu", _pool("avg", ceil=True),
        "flatten", "fc",
    ],
    # Krizhevsky et al. 2012 (one tower, as torchvision's): LRN after the first two ReLUs, then
    # overlapping 3/2 max pooling; dropout in the classifier. Any input from 64 px up: the
    # adaptive pool gives the classifier 6 x 6 maps whatever the size.
    "alexnet": [
        _conv(96, 11, 2, stride=4), "relu", "norm", _pool("max"),
        _conv(256, 5, 2), "relu", "norm", _pool("max"),
        _conv(384, 3, 1), "relu", _conv(384, 3, 1), "relu", _conv(256, 3, 1), "relu", _pool("max"),
        {"adaptive_pool": {"kind": "avg", "size": 6}}, "flatten",
        {"dropout": 0.5}, _fc(4096), "relu", {"dropout": 0.5}, _fc(4096), "relu", _fc(),
    ],
}
