"""Networks: named presets and the builder that turns a layer list into an nn.Sequential.

A layer list is YAML like

    - conv: {out: 32, kernel: 5, padding: 2}
    - local: {out: 32, kernel: 3}   # locally connected: a filter of its own at each position
    - pool: {kind: max, kernel: 3, stride: 2}
    - relu
    - norm                  # becomes model.norm: LRN, BatchNorm, GroupNorm or nothing
    - flatten
    - fc: 10                # `fc` without `out` has model.num_classes outputs

Shapes are found by pushing a dummy batch through the layers as they are built, so a list never
states input sizes.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig, NormConfig, parse_layer, slot_norm
from .errors import UserError
from .lrn import LocalResponseNorm
from .ops import MaxPool2d
from .presets import CAFFE, PRESETS, CaffeLayer


class LocallyConnected2d(nn.Module):
    """A locally connected layer: a convolution whose weights are not shared, each output position
    (i, j) with a filter of its own (cuda-convnet's `type=local`, "locally-connected, unshared"),
    and a bias per output position and channel (cuda-convnet's local layers have
    `modules * filters` biases, layer.py LocalUnsharedLayerParser):

        y[n, o, i, j] = b[o, i, j] + sum_{u, v, c} W[i, j, u, v, c, o] * x[n, c, i*s + u - p, j*s + v - p]

    for u, v in 0..k-1 and c over the input channels, with zeros outside the input (padding p,
    stride s). The output positions are those of a Conv2d of the same kernel, stride and padding:
    (H + 2p - k) // s + 1 a side. `weight` is (out_h, out_w, k, k, in_channels, out_channels),
    `bias` (out_channels, out_h, out_w).

    The forward pass is one copy of the padded input channels-last, a strided view of its k x k
    patches per position (im2col without F.unfold, whose (N, C*k*k, L) layout needs a second
    copy to be multiplied per position: 1.9x slower forward and backward for cuda-convnet's
    local3 at batch 128), and one batched matrix product over the positions. Under ONNX export
    (or a trace) the same product is taken on F.unfold's columns, whose graph keeps the batch
    size dynamic, where the strided view's sizes would be traced as constants.

    Initialization follows Conv2d's with the same fan-in (in_channels * k * k): PyTorch's default
    here (weights and biases uniform in +-1/sqrt(fan_in)); `init_kaiming` and `init_caffe` treat
    it as they treat a Conv2d."""

    def __init__(self, in_channels: int, out_channels: int, in_size: tuple[int, int], kernel_size: int,
                 stride: int = 1, padding: int = 0, bias: bool = True) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.in_size = (int(in_size[0]), int(in_size[1]))
        self.out_size = tuple((n + 2 * padding - kernel_size) // stride + 1 for n in self.in_size)
        if min(self.out_size) < 1:
            raise ValueError(f"a {kernel_size}x{kernel_size} kernel with padding {padding} does not fit "
                             f"a {self.in_size[0]}x{self.in_size[1]} input")
        oh, ow = self.out_size
        k = kernel_size
        self.weight = nn.Parameter(torch.empty(oh, ow, k, k, in_channels, out_channels))
        self.bias = nn.Parameter(torch.empty(out_channels, oh, ow)) if bias else None
        self.reset_parameters()

    @property
    def fan_in(self) -> int:
        return self.in_channels * self.kernel_size ** 2

    def reset_parameters(self) -> None:
        """PyTorch's Conv2d default: kaiming_uniform_(a=sqrt(5)), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
        for the weights and the biases."""
        bound = 1 / math.sqrt(self.fan_in)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[-2:]) != self.in_size or x.shape[1] != self.in_channels:
            raise RuntimeError(f"LocallyConnected2d was built for (N, {self.in_channels}, {self.in_size[0]}, "
                               f"{self.in_size[1]}) inputs, got {tuple(x.shape)}")
        n, c = x.shape[:2]
        (oh, ow), k, s, p = self.out_size, self.kernel_size, self.stride, self.padding
        if torch.onnx.is_in_onnx_export() or torch.jit.is_tracing():
            return self.forward_unfold(x)
        xp = F.pad(x, (p, p, p, p)).permute(2, 3, 0, 1).contiguous()           # (H + 2p, W + 2p, N, C)
        st = xp.stride()
        patches = xp.as_strided((oh, ow, n, k, k, c), (st[0] * s, st[1] * s, st[2], st[0], st[1], st[3]))
        cols = patches.reshape(oh * ow, n, k * k * c)                            # (L, N, k*k*C)
        y = torch.bmm(cols, self.weight.reshape(oh * ow, k * k * c, self.out_channels))  # (L, N, O)
        y = y.permute(1, 2, 0).reshape(n, self.out_channels, oh, ow)
        return y + self.bias if self.bias is not None else y

    def forward_unfold(self, x: torch.Tensor) -> torch.Tensor:
        """The same outputs from F.unfold's (N, C*k*k, L) columns (the path ONNX export takes)."""
        (oh, ow), k, o = self.out_size, self.kernel_size, self.out_channels
        cols = F.unfold(x, k, padding=self.padding, stride=self.stride)        # rows ordered (c, u, v)
        w = self.weight.permute(0, 1, 4, 2, 3, 5).reshape(oh * ow, -1, o)     # (L, C*k*k, O)
        y = torch.bmm(cols.permute(2, 0, 1), w)                                # (L, N, O)
        y = y.permute(1, 2, 0).reshape(-1, o, oh, ow)
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, in_size={self.in_size}, out_size={self.out_size}, "
                f"bias={self.bias is not None}")


WEIGHT_LAYERS = (nn.Conv2d, LocallyConnected2d, nn.Linear)  # what init and the Caffe tables fill


def layer_list(cfg: ModelConfig) -> list[Any]:
    return PRESETS[cfg.preset] if cfg.preset else list(cfg.layers or [])


def make_norm(norm: NormConfig, channels: int, flat: bool, where: str) -> nn.Module:
    if norm.type == "none":
        return nn.Identity()
    if norm.type == "batchnorm":
        return nn.BatchNorm1d(channels) if flat else nn.BatchNorm2d(channels)
    if norm.type == "groupnorm":
        if channels % norm.groups:
            raise UserError(f"{where}: groupnorm needs the channels ({channels}) divisible by "
                            f"model.norm.groups ({norm.groups}); pick a divisor of {channels}")
        return nn.GroupNorm(norm.groups, channels)
    if flat:
        raise UserError(f"{where}: LRN needs feature maps (N, C, H, W), but this slot comes after "
                        "flatten; move it before flatten or use model.norm.type batchnorm")
    return LocalResponseNorm(norm.lrn, impl=norm.impl)  # the parameters as the config checked them


def build_model(cfg: ModelConfig, in_channels: int, image_size: int, num_classes: int) -> nn.Sequential:
    """Build the network; call after seeding so that the initial weights are reproducible."""
    x = torch.zeros(2, in_channels, image_size, image_size)
    modules: list[nn.Module] = []
    for i, item in enumerate(layer_list(cfg)):
        where = f"model.preset {cfg.preset} layer {i}" if cfg.preset else f"model.layers[{i}]"
        kind, spec = parse_layer(item, where)
        flat = x.dim() == 2
        if flat and kind in ("conv", "local", "pool", "adaptive_pool"):
            raise UserError(f"{where}: '{kind}' needs feature maps, but it comes after flatten")
        if kind == "conv":
            out = max(1, round(spec.out * cfg.width))
            pad = spec.kernel // 2 if spec.padding is None else spec.padding
            if x.shape[1] % spec.groups or out % spec.groups:
                raise UserError(f"{where}.conv.groups: {spec.groups} must divide both the input "
                                f"({x.shape[1]}) and output ({out}) channels")
            m: nn.Module = nn.Conv2d(x.shape[1], out, spec.kernel, spec.stride, pad,
                                     groups=spec.groups, bias=spec.bias)
        elif kind == "local":
            out = max(1, round(spec.out * cfg.width))
            pad = spec.kernel // 2 if spec.padding is None else spec.padding
            try:
                m = LocallyConnected2d(x.shape[1], out, tuple(x.shape[-2:]), spec.kernel, spec.stride, pad,
                                       bias=spec.bias)
            except ValueError as e:
                raise UserError(f"{where}: 'local' does not fit a {tuple(x.shape[1:])} input ({e}); "
                                "check image_size and the layer sizes") from None
        elif kind == "pool":
            pool = MaxPool2d if spec.kind == "max" else nn.AvgPool2d  # MaxPool2d: nn's, with a C kernel
            m = pool(spec.kernel, spec.stride or spec.kernel, spec.padding, ceil_mode=spec.ceil)
        elif kind == "adaptive_pool":
            m = (nn.AdaptiveMaxPool2d if spec.kind == "max" else nn.AdaptiveAvgPool2d)(spec.size)
        elif kind == "fc":
            if not flat:
                raise UserError(f"{where}: fc needs a flat input; put a 'flatten' layer before it")
            out = max(1, round(spec.out * cfg.width)) if spec.out else num_classes
            m = nn.Linear(x.shape[1], out, bias=spec.bias)
        elif kind == "dropout":
            m = nn.Dropout(spec.p)
        elif kind == "relu":
            m = nn.ReLU(inplace=True)
        elif kind == "flatten":
            m = nn.Flatten()
        else:  # norm
            m = make_norm(slot_norm(cfg.norm, spec, f"{where}.norm."), x.shape[1], flat, where)
        try:
            with torch.no_grad():
                x = m.eval()(x)
        except RuntimeError as e:  # e.g. a kernel larger than the feature map
            raise UserError(f"{where}: '{kind}' does not fit a {tuple(x.shape[1:])} input "
                            f"({str(e).splitlines()[0]}); check image_size and the layer sizes") from None
        modules.append(m)
    if x.dim() != 2 or x.shape[1] != num_classes:
        raise UserError(f"model: the network ends with shape {tuple(x.shape[1:])}, but it must end "
                        f"with {num_classes} class scores; end the layer list with 'flatten' and 'fc'")
    model = nn.Sequential(*modules).train()
    if cfg.init == "kaiming":
        init_kaiming(model)
    elif cfg.init == "caffe":
        init_caffe(model, CAFFE[cfg.preset])
    if cfg.caffe_multipliers:
        model.caffe_multipliers = caffe_multipliers(model, CAFFE[cfg.preset])
    return model


def caffe_layers(model: nn.Module, layers: list[CaffeLayer]) -> list[tuple[str, nn.Module, CaffeLayer]]:
    """The model's conv and fc layers (module name, module) paired with the prototxt's layers."""
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, WEIGHT_LAYERS)]
    if len(found) != len(layers):  # a preset and its CAFFE entry disagree: a bug, not a user's mistake
        raise AssertionError(f"{len(found)} conv/local/fc layers, but {len(layers)} Caffe layers: "
                             f"{[c.name for c in layers]}")
    return [(name, m, layer) for (name, m), layer in zip(found, layers)]


def init_caffe(model: nn.Module, layers: list[CaffeLayer]) -> None:
    """The fillers of the preset's Caffe prototxt (or cuda-convnet layer file): each conv, local and
    fc weight ~ N(0, std^2) with that layer's std, each bias the constant. The stds are for a 0-255
    input minus the mean (conv1's 1e-4 above all): pair them with data.normalize caffe."""
    for _, m, layer in caffe_layers(model, layers):
        nn.init.normal_(m.weight, 0.0, layer.std)
        if m.bias is not None:
            nn.init.constant_(m.bias, layer.bias)


def caffe_multipliers(model: nn.Module, layers: list[CaffeLayer]) -> dict[str, tuple[float, float]]:
    """Parameter name -> (lr_mult, decay_mult), from each Caffe layer's two param blocks."""
    mults: dict[str, tuple[float, float]] = {}
    for name, m, layer in caffe_layers(model, layers):
        mults[f"{name}.weight"] = (layer.lr_mult[0], layer.decay_mult[0])
        if m.bias is not None:
            mults[f"{name}.bias"] = (layer.lr_mult[1], layer.decay_mult[1])
    return mults


def param_groups(model: nn.Module, lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """The optimizer's parameter groups. By default two: weight decay on the conv, local and fc
    weights (the parameters of more than one dimension but a local layer's per-position bias),
    none on biases and norm scales, all at `lr`. A model built with model.caffe_multipliers has a
    group per (lr_mult, decay_mult) of its Caffe layers, at lr * lr_mult with weight_decay *
    decay_mult, as Caffe's SGD applies them (its biases decay too, decay_mult 1, where the prototxt
    does not say 0); a parameter of no Caffe layer (a BatchNorm in a norm slot) gets lr and no decay. The (1, 1) group comes first: param_groups[0]'s lr is the
    schedule's."""
    mults: dict[str, tuple[float, float]] | None = getattr(model, "caffe_multipliers", None)
    if not mults:  # a locally connected layer's bias has a value per position: not a weight
        decay = [p for name, p in model.named_parameters() if p.dim() > 1 and not name.endswith("bias")]
        rest = [p for name, p in model.named_parameters() if p.dim() <= 1 or name.endswith("bias")]
        return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
    groups: dict[tuple[float, float], list[nn.Parameter]] = {(1.0, 1.0): []}
    for name, p in model.named_parameters():
        groups.setdefault(mults.get(name, (1.0, 0.0)), []).append(p)
    return [{"params": ps, "lr": lr * lr_mult, "weight_decay": weight_decay * decay_mult}
            for (lr_mult, decay_mult), ps in groups.items() if ps]


def init_kaiming(model: nn.Module) -> None:
    """He et al. 2015: weights ~ N(0, 2 / fan_in), biases 0, so that ReLU activations keep their
    scale through depth. PyTorch's default (uniform, variance 1 / (3 fan_in)) shrinks them by
    about 2.4x per layer, which stalls a deep net without normalization such as AlexNet."""
    for m in model.modules():
        if isinstance(m, LocallyConnected2d):  # its fan-in is not what kaiming_normal_ reads off the shape
            nn.init.normal_(m.weight, 0.0, math.sqrt(2 / m.fan_in))
        elif isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        if isinstance(m, WEIGHT_LAYERS) and m.bias is not None:
            nn.init.zeros_(m.bias)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
