"""Named networks, as layer lists (see `models.py` for the layer language), and for the presets
taken from Caffe and cuda-convnet, each conv, local and fc layer's fillers and solver multipliers
from its prototxt or layer files (`CAFFE`). Plain data: the config schema checks preset names
without importing torch."""
from __future__ import annotations

from typing import Any, NamedTuple


def _conv(out: int, kernel: int, padding: int, stride: int = 1) -> dict[str, Any]:
    return {"conv": {"out": out, "kernel": kernel, "stride": stride, "padding": padding}}


def _pool(kind: str, kernel: int = 3, stride: int = 2, ceil: bool = False) -> dict[str, Any]:
    return {"pool": {"kind": kind, "kernel": kernel, "stride": stride, "ceil": ceil}}


def _fc(out: int | None = None) -> dict[str, Any]:
    return {"fc": {"out": out}}


def _local(out: int, kernel: int, padding: int, stride: int = 1) -> dict[str, Any]:
    return {"local": {"out": out, "kernel": kernel, "stride": stride, "padding": padding}}


def _vgg(lrn: bool) -> list[Any]:
    """VGG configuration A (Simonyan & Zisserman 2015, Table 1: 8 conv layers of 3x3, stride 1,
    padding 1, each with a ReLU; 2x2 max pools; FC-4096, FC-4096 with dropout 0.5, FC-classes);
    A-LRN: with one LRN after the first conv layer's ReLU. The adaptive pool (torchvision's) gives the
    classifier 7 x 7 maps at any input size, so the parameter count is the paper's at any size."""
    layers: list[Any] = []
    for block, (out, convs) in enumerate(((64, 1), (128, 1), (256, 2), (512, 2), (512, 2))):
        for _ in range(convs):
            layers += [_conv(out, 3, 1), "relu"]
        if block == 0 and lrn:
            layers.append("norm")
        layers.append(_pool("max", 2, 2))
    return layers + [{"adaptive_pool": {"kind": "avg", "size": 7}}, "flatten",
                     _fc(4096), "relu", {"dropout": 0.5}, _fc(4096), "relu", {"dropout": 0.5}, _fc()]


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
    # cuda-convnet's CIFAR-10 examples (code.google.com/p/cuda-convnet, svn trunk r554, as in
    # github.com/dnouri/cuda-convnet example-layers/). Pools: sizeX 3, stride 2, outputsX 0, i.e.
    # ceil((size - 3) / 2) + 1 outputs (ceil mode), clipped at the edge. `neuron=relu` on a conv
    # is its ReLU; on pool1 of layers-18pct.cfg, after the pool. Each `norm` is the file's rnorm /
    # cmrnorm: give model.norm its convention, size, scale and pow (configs/cuda_convnet_*.yaml).
    #
    # layers-18pct.cfg ("18% error on CIFAR-10 in 20 minutes", 32 px, no augmentation): the
    # network Caffe's cifar10_full was ported from; rnorm1 and rnorm2 are within-channel (rnorm,
    # size 3, scale 5e-5, pow 0.75 in layer-params-18pct.cfg).
    "cuda_convnet_18pct": [
        _conv(32, 5, 2), _pool("max", ceil=True), "relu", "norm",
        _conv(32, 5, 2), "relu", _pool("avg", ceil=True), "norm",
        _conv(64, 5, 2), "relu", _pool("avg", ceil=True),
        "flatten", "fc",
    ],
    # layers-conv-local-11pct.cfg (the AlexNet paper's section 3.3 CIFAR-10 net "with
    # normalization", 11% error; 24 px crops): two conv layers, each with a cross-map rnorm
    # (cmrnorm, size 9, scale 0.001, pow 0.75 in layer-params-conv-local-11pct.cfg), rnorm1 after
    # pool1, rnorm2 before pool2; then two locally connected layers (64 and 32 filters, 3x3).
    "cuda_convnet_conv_local_11pct": [
        _conv(64, 5, 2), "relu", _pool("max", ceil=True), "norm",
        _conv(64, 5, 2), "relu", "norm", _pool("max", ceil=True),
        _local(64, 3, 1), "relu", _local(32, 3, 1), "relu",
        "flatten", "fc",
    ],
    # layers-conv-local-13pct.cfg (the paper's net "without normalization", 13% error): the 11pct
    # network without its two cmrnorm layers and with 32 filters, not 64, in local3.
    "cuda_convnet_conv_local_13pct": [
        _conv(64, 5, 2), "relu", _pool("max", ceil=True),
        _conv(64, 5, 2), "relu", _pool("max", ceil=True),
        _local(32, 3, 1), "relu", _local(32, 3, 1), "relu",
        "flatten", "fc",
    ],
    # Simonyan & Zisserman 2015 (arXiv:1409.1556v6), Table 1 columns A and A-LRN; A-LRN's LRN is
    # "as in Krizhevsky et al. (2012)": model.norm {convention: alexnet, size: 5, alpha: 1e-4,
    # beta: 0.75, k: 2}. model.width scales every conv and the two FC-4096.
    "vgg_a": _vgg(lrn=False),
    "vgg_a_lrn": _vgg(lrn=True),
}

# The presets' Caffe layers, in the order of their conv, local and fc layers: `model.init: caffe`
# fills them so, `model.caffe_multipliers: true` gives them these learning-rate and decay
# multipliers. From BVLC/caffe master (9b89154, 2020) examples/cifar10/*_train_test.prototxt,
# and for the cuda_convnet presets from cuda-convnet's files, which Caffe's cifar10 examples
# were ported from and which say the same things in other words: initW is the std of the
# gaussian weights (initB, 0 by default, the biases' constant); epsB / epsW = 2 is lr_mult 2 for
# the biases; wc is the weight decay (cuda-convnet decays no bias), written here as decay_mult
# relative to train.weight_decay 0.004 (configs/cuda_convnet_*.yaml): wc 0 -> 0, 0.004 -> 1,
# 0.01 -> 2.5, 1 -> 250.
CUDA_CONVNET_WD = 0.004
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
    # layers-18pct.cfg initW; layer-params-18pct.cfg: epsW 0.001, epsB 0.002, wc 0.004 (fc10: 1)
    "cuda_convnet_18pct": [
        CaffeLayer("conv1", std=1e-4, lr_mult=(1, 2), decay_mult=(1, 0)),
        CaffeLayer("conv2", std=0.01, lr_mult=(1, 2), decay_mult=(1, 0)),
        CaffeLayer("conv3", std=0.01, lr_mult=(1, 2), decay_mult=(1, 0)),
        CaffeLayer("fc10", std=0.01, lr_mult=(1, 2), decay_mult=(250, 0)),
    ],
    # layers-conv-local-11pct.cfg initW; layer-params-conv-local-11pct.cfg: epsW 0.001, epsB 0.002,
    # wc 0 (conv1, conv2), 0.004 (local3, local4), 0.01 (fc10)
    "cuda_convnet_conv_local_11pct": [
        CaffeLayer("conv1", std=1e-4, lr_mult=(1, 2), decay_mult=(0, 0)),
        CaffeLayer("conv2", std=0.01, lr_mult=(1, 2), decay_mult=(0, 0)),
        CaffeLayer("local3", std=0.04, lr_mult=(1, 2), decay_mult=(1, 0)),
        CaffeLayer("local4", std=0.04, lr_mult=(1, 2), decay_mult=(1, 0)),
        CaffeLayer("fc10", std=0.01, lr_mult=(1, 2), decay_mult=(2.5, 0)),
    ],
}
# layers-conv-local-13pct.cfg initW; layer-params-conv-local-13pct.cfg: as 11pct, but fc10's wc 0.004
CAFFE["cuda_convnet_conv_local_13pct"] = [*CAFFE["cuda_convnet_conv_local_11pct"][:-1],
                                          CAFFE["cuda_convnet_conv_local_11pct"][-1]._replace(decay_mult=(1, 0))]
