"""The layer-list builder and presets."""
import sys

import pytest
import torch
from torch import nn

from lrn_cli import config
from lrn_cli.config import load_config
from lrn_cli.errors import UserError
from lrn_cli.lrn import LocalResponseNorm, conventions
from lrn_cli.models import build_model, count_params, param_groups
from lrn_cli.presets import CAFFE, PRESETS

from conftest import REPO


def model_of(layers=None, norm=None, preset=None, size=32, classes=10, **model):
    raw = {"model": {"preset": preset, "layers": layers, "norm": norm or {}, **model}}
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
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_cifar10_quick_preset_is_caffes_network():
    """Caffe's examples/cifar10/cifar10_quick_train_test.prototxt: no LRN, ip1 (64) straight into
    ip2 (no ReLU between them)."""
    m = model_of(preset="cifar10_quick")
    kinds = [type(x).__name__ for x in m]
    assert kinds == ["Conv2d", "MaxPool2d", "ReLU", "Conv2d", "ReLU", "AvgPool2d",
                     "Conv2d", "ReLU", "AvgPool2d", "Flatten", "Linear", "Linear"]
    assert [(x.in_features, x.out_features) for x in m if isinstance(x, nn.Linear)] == [(64 * 4 * 4, 64), (64, 10)]
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def conv(c_in, c_out, k):
    return c_in * c_out * k * k + c_out


def fc(n_in, n_out):
    return n_in * n_out + n_out


@pytest.mark.parametrize("preset, source, expected", [
    # BVLC/caffe examples/cifar10/cifar10_full_train_test.prototxt: conv1, conv2, conv3 (5x5, pad 2;
    # 32, 32, 64 outputs), ceil-mode 3/2 pools (32 -> 16 -> 8 -> 4), ip1 (10)
    ("cifar10_full", "examples/cifar10/cifar10_full_train_test.prototxt",
     conv(3, 32, 5) + conv(32, 32, 5) + conv(32, 64, 5) + fc(64 * 4 * 4, 10)),  # 89,578
    # BVLC/caffe examples/cifar10/cifar10_quick_train_test.prototxt: the same convs and pools,
    # ip1 (64), ip2 (10)
    ("cifar10_quick", "examples/cifar10/cifar10_quick_train_test.prototxt",
     conv(3, 32, 5) + conv(32, 32, 5) + conv(32, 64, 5) + fc(64 * 4 * 4, 64) + fc(64, 10)),  # 145,578
])
def test_caffe_presets_have_their_prototxts_parameter_count(preset, source, expected):
    assert count_params(model_of(preset=preset)) == expected, source
    assert count_params(model_of(preset=preset, norm={"type": "none"})) == expected  # LRN has no parameters


# the weight_filler std of each conv and fc layer, as BVLC/caffe's prototxts write it (all biases:
# bias_filler constant, value 0)
PROTOTXT_STD = {
    "cifar10_full": [1e-4, 0.01, 0.01, 0.01],        # examples/cifar10/cifar10_full_train_test.prototxt
    "cifar10_quick": [1e-4, 0.01, 0.01, 0.1, 0.1],   # examples/cifar10/cifar10_quick_train_test.prototxt
}


@pytest.mark.parametrize("preset", sorted(PROTOTXT_STD))
def test_caffe_init_draws_the_prototxts_fillers(preset):
    # the cuda_convnet presets' entries (their layer files' initW) are checked in test_classic_nets.py
    assert set(CAFFE) == set(PROTOTXT_STD) | {p for p in CAFFE if p.startswith("cuda_convnet_")}
    torch.manual_seed(0)
    m = model_of(preset=preset, init="caffe")
    layers = [x for x in m if isinstance(x, (nn.Conv2d, nn.Linear))]
    assert len(layers) == len(PROTOTXT_STD[preset])
    for layer, std in zip(layers, PROTOTXT_STD[preset]):
        w, n = layer.weight.detach().double(), layer.weight.numel()
        # a sample std of n normal draws is off by about std / sqrt(2n); the mean by std / sqrt(n)
        assert w.std().item() == pytest.approx(std, rel=5 / (2 * n) ** 0.5), (layer, std)
        assert abs(w.mean().item()) < 5 * std / n ** 0.5
        assert layer.bias.abs().max().item() == 0
    torch.manual_seed(0)
    again = model_of(preset=preset, init="caffe").state_dict()
    assert all(torch.equal(v, again[k]) for k, v in m.state_dict().items())


@pytest.mark.parametrize("model, needle", [
    ({"preset": "alexnet", "init": "caffe"}, "model.init: caffe: only the presets cifar10_full, cifar10_quick"),
    ({"layers": [{"conv": 8}, "flatten", "fc"], "init": "caffe"}, "a layer list has none"),
    ({"preset": "alexnet", "caffe_multipliers": True}, "model.caffe_multipliers: only the presets"),
])
def test_caffe_settings_need_a_preset_that_has_them(model, needle):
    with pytest.raises(UserError, match=needle) as e:
        load_config({"model": model})
    assert "\n" not in str(e.value)
    assert set(CAFFE) <= set(PRESETS)


def groups_by_name(model, lr=0.001, wd=0.004):
    names = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for g in param_groups(model, lr, wd):
        for p in g["params"]:
            out[names[id(p)]] = (g.get("lr", lr) / lr, g["weight_decay"] / wd)
    assert sorted(out) == sorted(names.values())  # every parameter, once
    return out


def test_caffe_multipliers_are_the_prototxts_lr_mult_and_decay_mult():
    """examples/cifar10/cifar10_full_train_test.prototxt: conv1, conv2 and ip1 biases lr_mult 2;
    conv3 has no param blocks (1, 1); ip1's weights decay_mult 250, its bias 0; Caffe's other
    biases decay (decay_mult defaults to 1)."""
    m = model_of(preset="cifar10_full", caffe_multipliers=True)
    got = groups_by_name(m)
    conv1, conv2, conv3, ip1 = (name for name, x in m.named_children() if isinstance(x, (nn.Conv2d, nn.Linear)))
    assert got == {f"{conv1}.weight": (1, 1), f"{conv1}.bias": (2, 1), f"{conv2}.weight": (1, 1),
                   f"{conv2}.bias": (2, 1), f"{conv3}.weight": (1, 1), f"{conv3}.bias": (1, 1),
                   f"{ip1}.weight": (1, 250), f"{ip1}.bias": (2, 0)}
    first = param_groups(m, 0.001, 0.004)[0]  # the group at the schedule's own rate comes first
    assert (first["lr"], first["weight_decay"]) == (0.001, 0.004)
    assert [id(p) for p in first["params"]] == [id(p) for p in (m[0].weight, m[4].weight, m[8].weight, m[8].bias)]
    quick = groups_by_name(model_of(preset="cifar10_quick", caffe_multipliers=True))
    assert all(v == ((1, 1) if k.endswith("weight") else (2, 1)) for k, v in quick.items()) and len(quick) == 10
    # a BatchNorm in a norm slot is no Caffe layer: the base rate, no decay
    bn = groups_by_name(model_of(preset="cifar10_full", norm={"type": "batchnorm"}, caffe_multipliers=True))
    assert bn["3.weight"] == bn["3.bias"] == (1, 0) and bn["0.bias"] == (2, 1)


def test_default_groups_decay_weights_only():
    m = model_of(preset="cifar10_full", init="caffe")
    got = groups_by_name(m)
    assert all(v == ((1, 1) if k.endswith("weight") else (1, 0)) for k, v in got.items())
    assert [len(g["params"]) for g in param_groups(m, 0.1, 5e-4)] == [4, 4]
    assert all("lr" not in g for g in param_groups(m, 0.1, 5e-4))


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


def test_make_optimizer_takes_caffes_multipliers():
    from lrn_cli.engine import make_optimizer

    cfg = load_config(REPO / "configs" / "caffe_cifar10_full.yaml")
    m = build_model(cfg.model, 3, 32, 10)
    opt = make_optimizer(m, cfg.train)
    by = {id(p): (g["lr"], g["weight_decay"]) for g in opt.param_groups for p in g["params"]}
    assert by[id(m[0].bias)] == pytest.approx((0.002, 0.004))  # conv1 bias: lr_mult 2, decay_mult 1
    assert by[id(m[-1].weight)] == pytest.approx((0.001, 1.0)) and by[id(m[-1].bias)] == pytest.approx((0.002, 0.0))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.001)  # the (1, 1) group: the logged lr is the schedule's
