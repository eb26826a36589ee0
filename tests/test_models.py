"""The layer-list builder and presets."""
import sys

import pytest
import torch
from torch import nn

from lrn_cli import config
from lrn_cli.config import load_config
from lrn_cli.errors import UserError
from lrn_cli.lrn import LocalResponseNorm, conventions
from lrn_cli.models import build_model, count_params

from conftest import REPO


def model_of(layers=None, norm=None, preset=None, size=32, classes=10):
    raw = {"model": {"preset": preset, "layers": layers, "norm": norm or {}}}
    return build_model(load_config(raw).model, 3, size, classes)


def test_cifar10_full_preset_is_caffes_network():
    m = model_of(preset="cifar10_full", norm={"region": "within", "convention": "caffe", "size": 3,
                                                "alpha": 5e-5, "beta": 0.75})
    kinds = [type(x).__name__ for x in m]
    assert kinds == ["Conv2d", "MaxPool2d", "ReLU", "LocalResponseNorm", "Conv2d", "ReLU", "AvgPool2d",
                     "LocalResponseNorm", "Conv2d", "ReLU", "AvgPool2d", "Flatten", "Linear"]
    convs = [x for x in m if isinstance(x, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.padding) for c in convs] == [(32, (5, 5), (2, 2)), (32, (5, 5), (2, 2)),
                                                                         (64, (5, 5), (2, 2))]
    assert m[-1].in_features == 64 * 4 * 4  # Caffe's ceil-mode pooling: 32 -> 16 -> 8 -> 4
    lrn = m[3]
    assert (lrn.size, lrn.alpha, lrn.beta, lrn.region, lrn.convention) == (3, 5e-5, 0.75, "within", "caffe")
    assert count_params(m) == 89578  # 2432 + 25632 + 51264 + 10250, as in Caffe
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("norm_type, cls", [("none", nn.Identity), ("batchnorm", nn.BatchNorm2d),
                                            ("groupnorm", nn.GroupNorm), ("lrn", LocalResponseNorm)])
def test_norm_slots_follow_model_norm_type(norm_type, cls):
    m = model_of([{"conv": 8}, "norm", "relu", "flatten", "fc"],
                 norm={"type": norm_type, "groups": 4}, size=8)
    assert isinstance(m[1], cls)


def test_slot_overrides_and_flat_batchnorm():
    m = model_of([{"conv": 8}, {"norm": {"size": 3}}, "norm", "flatten", {"fc": 16}, {"norm": "batchnorm"},
                  {"dropout": 0.2}, "fc"], size=4)
    assert m[1].size == 3 and m[2].size == 5 and isinstance(m[5], nn.BatchNorm1d)
    assert m[-1].out_features == 10 and isinstance(m[6], nn.Dropout) and m[6].p == 0.2


@pytest.mark.parametrize("layers, needle", [
    ([{"conv": 8}, {"fc": 10}], "put a 'flatten' layer before it"),
    ([{"conv": 8}, "flatten", "norm", "fc"], "LRN needs feature maps"),
    ([{"conv": 8}, "flatten", {"conv": 4}, "fc"], "comes after flatten"),
    ([{"conv": 6}, {"norm": {"type": "groupnorm", "groups": 4}}, "flatten", "fc"], "divisible"),
    ([{"pool": {"kernel": 64}}, "flatten", "fc"], "does not fit"),
    ([{"conv": 8}, "flatten", {"fc": 7}], "must end with 10 class scores"),
    ([{"conv": {"out": 8, "groups": 2}}, "flatten", "fc"], "must divide"),
])
def test_impossible_networks_are_user_errors(layers, needle):
    with pytest.raises(UserError, match=needle):
        model_of(layers)


def test_initial_weights_depend_only_on_the_seed():
    torch.manual_seed(3)
    a = model_of(preset="cifar10_full").state_dict()
    torch.manual_seed(3)
    b = model_of(preset="cifar10_full").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_kaiming_init_keeps_relu_activations_at_scale():
    torch.manual_seed(0)
    m = build_model(
        load_config({"model": {"layers": [{"conv": 64}, "relu", {"conv": 64}, "relu", "flatten", "fc"],
                               "init": "kaiming"}}).model, 3, 8, 10)
    conv = m[2]
    fan_in = conv.in_channels * 9
    assert conv.weight.std().item() == pytest.approx((2 / fan_in) ** 0.5, rel=0.05)
    assert conv.bias.abs().max().item() == 0


def test_lrn_parameters_are_checked_once_per_parameter_set(monkeypatch):
    """From model.norm in the YAML to the kernels, cifar10_full's parameters were checked 7 times
    (the config, each slot, each layer, each layer's first forward); now the config checks them
    into one LRNParams that both layers take as they are."""
    checked = []
    original = conventions.check_params

    def counting(*args, **kwargs):
        checked.append(kwargs)
        return original(*args, **kwargs)

    for name, module in list(sys.modules.items()):  # every lrn_cli module that holds it by name
        if name.startswith("lrn_cli") and getattr(module, "check_params", None) is original:
            monkeypatch.setattr(module, "check_params", counting)
    cfg = load_config(REPO / "configs" / "cifar10_full.yaml")
    m = build_model(cfg.model, 3, 32, 10)
    m(torch.randn(2, 3, 32, 32))
    lrns = [x for x in m if isinstance(x, LocalResponseNorm)]
    assert len(checked) == 1
    assert len(lrns) == 2 and all(x.params is cfg.model.norm.lrn for x in lrns)
    # slots with keys of their own: once each (the schema's check and the builder share it)
    config._merged_norm.cache_clear()
    checked.clear()
    layers = [{"conv": 8}, {"norm": {"size": 3}}, "norm", {"norm": {"size": 7}}, "flatten", "fc"]
    m = build_model(load_config({"model": {"layers": layers}}).model, 3, 8, 10)
    m(torch.randn(2, 3, 8, 8))
    assert sorted(c["size"] for c in checked) == [3, 5, 7] and (m[1].size, m[2].size, m[3].size) == (3, 5, 7)
