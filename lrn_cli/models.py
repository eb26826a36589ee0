"""Networks: named presets and the builder that turns a layer list into an nn.Sequential.

A layer list is YAML like

    - conv: {out: 32, kernel: 5, padding: 2}
    - pool: {kind: max, kernel: 3, stride: 2}
    - relu
    - norm                  # becomes model.norm: LRN, BatchNorm, GroupNorm or nothing
    - flatten
    - fc: 10                # `fc` without `out` has model.num_classes outputs

Shapes are found by pushing a dummy batch through the layers as they are built, so a list never
states input sizes.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .config import ModelConfig, NormConfig, parse_layer, slot_norm
from .errors import UserError
from .lrn import LocalResponseNorm
from .presets import CAFFE, PRESETS, CaffeLayer


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
        if flat and kind in ("conv", "pool", "adaptive_pool"):
            raise UserError(f"{where}: '{kind}' needs feature maps, but it comes after flatten")
        if kind == "conv":
            out = max(1, round(spec.out * cfg.width))
            pad = spec.kernel // 2 if spec.padding is None else spec.padding
            if x.shape[1] % spec.groups or out % spec.groups:
                raise UserError(f"{where}.conv.groups: {spec.groups} must divide both the input "
                                f"({x.shape[1]}) and output ({out}) channels")
            m: nn.Module = nn.Conv2d(x.shape[1], out, spec.kernel, spec.stride, pad,
                                     groups=spec.groups, bias=spec.bias)
        elif kind == "pool":
            pool = nn.MaxPool2d if spec.kind == "max" else nn.AvgPool2d
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
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if len(found) != len(layers):  # a preset and its CAFFE entry disagree: a bug, not a user's mistake
        raise AssertionError(f"{len(found)} conv/fc layers, but {len(layers)} Caffe layers: "
                             f"{[c.name for c in layers]}")
    return [(name, m, layer) for (name, m), layer in zip(found, layers)]


def init_caffe(model: nn.Module, layers: list[CaffeLayer]) -> None:
    """The fillers of the preset's Caffe prototxt: each conv and fc weight ~ N(0, std^2) with that
    layer's std, each bias the constant. The stds are Caffe's for its 0-255 input (conv1's 1e-4
    above all): pair them with data.normalize caffe."""
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
    """The optimizer's parameter groups. By default two: weight decay on the conv and fc weights
    (the parameters of more than one dimension), none on biases and norm scales, all at `lr`. A model
    built with model.caffe_multipliers has a group per (lr_mult, decay_mult) of its Caffe layers, at
    lr * lr_mult with weight_decay * decay_mult, as Caffe's SGD applies them (its biases decay too,
    decay_mult 1, where the prototxt does not say 0); a parameter of no Caffe layer (a BatchNorm
    in a norm slot) gets lr and no decay. The (1, 1) group comes first: param_groups[0]'s lr is the
    schedule's."""
    mults: dict[str, tuple[float, float]] | None = getattr(model, "caffe_multipliers", None)
    if not mults:
        decay = [p for p in model.parameters() if p.dim() > 1]
        rest = [p for p in model.parameters() if p.dim() <= 1]
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
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
