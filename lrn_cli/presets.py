"""Named networks, as layer lists (see `models.py` for the layer language), and for the presets
taken from Caffe, each conv and fc layer's fillers and solver multipliers from its prototxt
(`CAFFE`). Plain data: the config schema checks preset names without importing torch."""
from __future__ import annotations

from typing import Any, NamedTuple


def _conv(out: int, kernel: int, padding: int, stride: int = 1) -> dict[str, Any]:
    return {"conv": {"out": out, "kernel": kernel, "stride": stride, "padding": padding}}


def _pool(kind: str, kernel: int = 3, stride: int = 2, ceil: bool = False) -> dict[str, Any]:
    return {"pool": {"kind": kind, "kernel": kernel, "stride": stride, "ceil": ceil}}


def _fc(out: int | None = None) -> dict[str, Any]:
    return {"fc": {"out": out}}


class CaffeLayer(NamedTuple):
    """One Caffe Convolution or InnerProduct layer's prototxt settings: `weight_filler` gaussian
    with this std (mean 0), `bias_filler` constant (value 0 where the prototxt leaves it out), and
    its two `param` blocks' `lr_mult` and `decay_mult` (weights, bias; 1 where left out)."""
    name: str
    std: float
    bias: float = 0.0
    lr_mult: tuple[float, float] = (1.0, 1.0)
    decay_mult: tuple[float, float] = (1.0, 1.0)


PRESETS: dict[str, list[Any]] = {
    # Caffe's examples/cifar10/cifar10_full_train_test.prototxt (Caffe sizes pooling with ceil)
    "cifar10_full": [
        _conv(32, 5, 2), _pool("max", ceil=True), "relu", "norm",
        _conv(32, 5, 2), "relu", _pool("avg", ceil=True), "norm",
        _conv(64, 5, 2), "relu", _pool("avg", ceil=True),
        "flatten", "fc",
    ],
    # Caffe's examples/cifar10/cifar10_quick_train_test.prototxt: cifar10_full without its LRNs,
    # with a 64-wide ip1 before ip2 (no ReLU between them, as in the prototxt)
    "cifar10_quick": [
        _conv(32, 5, 2), _pool("max", ceil=True), "relu",
        _conv(32, 5, 2), "relu", _pool("avg", ceil=True),
        _conv(64, 5, 2), "relu", _pool("avg", ceil=True),
        "flatten", _fc(64), "fc",
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

# The presets' Caffe layers, in the order of their conv and fc layers: `model.init: caffe` fills
# them so, `model.caffe_multipliers: true` gives them these learning-rate and decay multipliers.
# From BVLC/caffe master (9b89154, 2020) examples/cifar10/*_train_test.prototxt.
CAFFE: dict[str, list[CaffeLayer]] = {
    "cifar10_full": [
        CaffeLayer("conv1", std=1e-4, lr_mult=(1, 2)),
        CaffeLayer("conv2", std=0.01, lr_mult=(1, 2)),
        CaffeLayer("conv3", std=0.01),  # the prototxt gives conv3 no param blocks: lr_mult 1 and 1
        CaffeLayer("ip1", std=0.01, lr_mult=(1, 2), decay_mult=(250, 0)),
    ],
    "cifar10_quick": [
        CaffeLayer("conv1", std=1e-4, lr_mult=(1, 2)),
        CaffeLayer("conv2", std=0.01, lr_mult=(1, 2)),
        CaffeLayer("conv3", std=0.01, lr_mult=(1, 2)),
        CaffeLayer("ip1", std=0.1, lr_mult=(1, 2)),
        CaffeLayer("ip2", std=0.1, lr_mult=(1, 2)),
    ],
}
