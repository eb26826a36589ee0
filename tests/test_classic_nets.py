"""The classic networks beside their published definitions: the locally connected layer (checked
against a naive loop of its formula), cuda-convnet's CIFAR-10 nets and VGG A / A-LRN (parameter
counts computed by hand from their sources), CIFAR-10's 24 px crops, and a one-epoch smoke run
of each new config."""
import itertools
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from lrn_cli import train
from lrn_cli.config import load_config
from lrn_cli.data import load_data
from lrn_cli.data.augment import center_crop, crop_flip
from lrn_cli.engine import train_inputs
from lrn_cli.errors import UserError
from lrn_cli.lrn import LocalResponseNorm
from lrn_cli.models import LocallyConnected2d, build_model, count_params, param_groups
from lrn_cli.trained import load_trained

from conftest import REPO

pytestmark = pytest.mark.filterwarnings("ignore::lrn_cli.data.cifar.DataWarning")  # the generated CIFAR files


def model_of(preset=None, layers=None, size=24, classes=10, **model):
    raw = {"model": {"preset": preset, "layers": layers, **model}}
    return build_model(load_config(raw).model, 3, size, classes)


# ----------------------------------------------------------------------------- the local layer

def naive_local(x, weight, bias, stride, padding):
    """y[n, o, i, j] = b[o, i, j] + sum_{u, v, c} W[i, j, u, v, c, o] * x[n, c, i*s + u - p, j*s + v - p],
    zeros outside x: the docstring's formula as plain loops over numbers."""
    x, w = np.asarray(x, np.float64), np.asarray(weight, np.float64)
    n_img, n_in, h, wd = x.shape
    oh, ow, k, _, _, n_out = w.shape
    y = np.zeros((n_img, n_out, oh, ow))
    for n, o, i, j in itertools.product(range(n_img), range(n_out), range(oh), range(ow)):
        total = 0.0 if bias is None else float(bias[o, i, j])
        for u, v, c in itertools.product(range(k), range(k), range(n_in)):
            r, q = i * stride + u - padding, j * stride + v - padding
            if 0 <= r < h and 0 <= q < wd:
                total += w[i, j, u, v, c, o] * x[n, c, r, q]
        y[n, o, i, j] = total
    return y


@pytest.mark.parametrize("in_size, kernel, stride, padding, bias", [
    ((5, 5), 3, 1, 1, True),   # cuda-convnet's local3 / local4 shape: 3x3, padding 1, stride 1
    ((5, 6), 3, 2, 1, True),   # rectangular, strided
    ((4, 4), 2, 1, 0, False),  # even kernel, no padding, no bias
    ((3, 3), 3, 1, 2, True),   # more padding than the image is wide: outputs bigger than the input
])
def test_local_layer_is_its_formula(in_size, kernel, stride, padding, bias):
    torch.manual_seed(0)
    m = LocallyConnected2d(3, 4, in_size, kernel, stride, padding, bias=bias).double()
    with torch.no_grad():
        if bias:
            m.bias.normal_()
    x = torch.randn(2, 3, *in_size, dtype=torch.float64)
    y = m(x)
    oh, ow = ((n + 2 * padding - kernel) // stride + 1 for n in in_size)
    assert y.shape == (2, 4, oh, ow) == (2, 4, *m.out_size)
    want = naive_local(x.numpy(), m.weight.detach().numpy(), m.bias.detach().numpy() if bias else None,
                       stride, padding)
    np.testing.assert_allclose(y.detach().numpy(), want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m.forward_unfold(x).detach().numpy(), want, rtol=1e-12, atol=1e-12)  # export's path


@pytest.mark.parametrize("stride, padding", [(1, 1), (2, 0)])
def test_local_layer_gradients_pass_gradcheck(stride, padding):
    torch.manual_seed(1)
    m = LocallyConnected2d(2, 3, (5, 4), 3, stride, padding).double()
    x = torch.randn(2, 2, 5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: torch.func.functional_call(m, {"weight": w, "bias": b}, (x,)),
                                    (x, m.weight, m.bias), eps=1e-6, atol=1e-8)


def test_a_local_layer_with_one_filter_everywhere_is_a_conv():
    """cuda-convnet's --conv-to-local: tiling a conv layer's filter (and shared bias) over the
    positions gives the same outputs; training then unties them."""
    torch.manual_seed(2)
    conv = nn.Conv2d(3, 5, 3, stride=1, padding=1).double()
    local = LocallyConnected2d(3, 5, (6, 6), 3, 1, 1).double()
    with torch.no_grad():
        local.weight.copy_(conv.weight.permute(2, 3, 1, 0).expand(6, 6, 3, 3, 3, 5))
        local.bias.copy_(conv.bias.view(5, 1, 1).expand(5, 6, 6))
    x = torch.randn(4, 3, 6, 6, dtype=torch.float64)
    torch.testing.assert_close(local(x), conv(x), rtol=1e-12, atol=1e-12)


def test_local_layer_init_matches_the_conv_init_options():
    torch.manual_seed(0)
    default = model_of(layers=[{"local": {"out": 64, "kernel": 3}}, "flatten", "fc"], size=8)[0]
    fan_in = 3 * 9
    bound = 1 / math.sqrt(fan_in)  # Conv2d's default: uniform in +-1/sqrt(fan_in), weights and biases
    assert default.weight.abs().max().item() <= bound and default.weight.std().item() == pytest.approx(
        bound / math.sqrt(3), rel=0.05)
    assert default.bias.abs().max().item() <= bound and default.bias.abs().max().item() > 0.9 * bound
    he = model_of(layers=[{"local": 64}, "relu", "flatten", "fc"], size=8, init="kaiming")[0]
    assert he.weight.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.05)
    assert he.bias.abs().max().item() == 0 and he.bias.shape == (64, 8, 8)  # a bias per position and output


def test_local_layer_in_a_layer_list_widths_errors_and_decay():
    m = model_of(layers=[{"local": {"out": 8, "kernel": 3, "stride": 2, "padding": 0}}, "relu", "flatten", "fc"],
                 size=9, width=0.5)
    local = m[0]
    assert (local.out_channels, local.out_size, local.padding) == (4, (4, 4), 0)
    assert count_params(m) == 4 * 4 * (4 * 3 * 9 + 4) + 4 * 16 * 10 + 10
    decay, rest = param_groups(m, 0.1, 5e-4)
    assert {id(p) for p in decay["params"]} == {id(local.weight), id(m[-1].weight)}  # the biases are not weights
    assert decay["weight_decay"] == 5e-4 and rest["weight_decay"] == 0
    with pytest.raises(UserError, match=r"layers\[0\]: 'local' does not fit"):
        model_of(layers=[{"local": {"out": 8, "kernel": 7, "padding": 0}}, "flatten", "fc"], size=4)
    with pytest.raises(UserError, match="comes after flatten"):
        model_of(layers=["flatten", {"local": 8}, "fc"], size=4)
    with pytest.raises(UserError, match=r"model.layers\[0\].local.kernel"):
        load_config({"model": {"layers": [{"local": {"out": 8, "kernel": 0}}, "flatten", "fc"]}})


# ----------------------------------------------------------------------------- presets

def conv(c_in, c_out, k):  # shared weights, one bias per filter (cuda-convnet: sharedBiases=1)
    return c_in * c_out * k * k + c_out


def local(c_in, c_out, k, side):  # a filter and a bias per output position (modules * filters)
    return side * side * (c_in * k * k * c_out + c_out)


def fc(n_in, n_out):
    return n_in * n_out + n_out


@pytest.mark.parametrize("preset, size, classes, source, expected", [
    # cuda-convnet example-layers/layers-18pct.cfg: conv1 5x5/32, conv2 5x5/32, conv3 5x5/64 (padding 2),
    # pools sizeX 3 stride 2 (outputsX = ceil((32 - 3) / 2) + 1: 32 -> 16 -> 8 -> 4), fc10
    ("cuda_convnet_18pct", 32, 10, "example-layers/layers-18pct.cfg",
     conv(3, 32, 5) + conv(32, 32, 5) + conv(32, 64, 5) + fc(64 * 4 * 4, 10)),  # 89,578
    # layers-conv-local-11pct.cfg on 24 px crops: conv1 5x5/64, conv2 5x5/64, pools 24 -> 12 -> 6,
    # local3 3x3/64 and local4 3x3/32 (padding 1: 6 x 6 positions), fc10
    ("cuda_convnet_conv_local_11pct", 24, 10, "example-layers/layers-conv-local-11pct.cfg",
     conv(3, 64, 5) + conv(64, 64, 5) + local(64, 64, 3, 6) + local(64, 32, 3, 6) + fc(32 * 6 * 6, 10)),  # 2,112,970
    # layers-conv-local-13pct.cfg: the same but local3 3x3/32 (and no rnorm layers)
    ("cuda_convnet_conv_local_13pct", 24, 10, "example-layers/layers-conv-local-13pct.cfg",
     conv(3, 64, 5) + conv(64, 64, 5) + local(64, 32, 3, 6) + local(32, 32, 3, 6) + fc(32 * 6 * 6, 10)),  # 1,116,490
    # Simonyan & Zisserman 2015, Table 1 column A (Table 2: 133 million): conv3-64, conv3-128,
    # conv3-256 x2, conv3-512 x2, conv3-512 x2, FC-4096 on 7 x 7 x 512, FC-4096, FC-1000
    ("vgg_a", 224, 1000, "arXiv:1409.1556 Table 1 A",
     conv(3, 64, 3) + conv(64, 128, 3) + conv(128, 256, 3) + conv(256, 256, 3) + conv(256, 512, 3)
     + 3 * conv(512, 512, 3) + fc(512 * 7 * 7, 4096) + fc(4096, 4096) + fc(4096, 1000)),  # 132,863,336
    ("vgg_a_lrn", 224, 1000, "arXiv:1409.1556 Table 1 A-LRN (the LRN has no parameters)",
     conv(3, 64, 3) + conv(64, 128, 3) + conv(128, 256, 3) + conv(256, 256, 3) + conv(256, 512, 3)
     + 3 * conv(512, 512, 3) + fc(512 * 7 * 7, 4096) + fc(4096, 4096) + fc(4096, 1000)),
])
def test_presets_have_their_published_parameter_count(preset, size, classes, source, expected):
    # VGG is built at 32 px: the adaptive pool gives its classifier 7 x 7 maps at any size, so the count
    # is the 224 px one, without pushing 224 px images through 133M parameters
    m = model_of(preset=preset, size=32 if preset.startswith("vgg") else size, classes=classes)
    assert count_params(m) == expected, source


def kinds(m):
    return [type(x).__name__ for x in m]


def test_cuda_convnet_presets_follow_their_layer_files():
    c, p, r, n, l = "Conv2d", "MaxPool2d", "ReLU", "LocalResponseNorm", "LocallyConnected2d"
    norm = {"convention": "cuda-convnet", "size": 9, "alpha": 1e-3, "beta": 0.75}
    m = model_of(preset="cuda_convnet_conv_local_11pct", norm=norm)
    # conv1 (relu) -> pool1 -> rnorm1 -> conv2 (relu) -> rnorm2 -> pool2 -> local3 -> local4 -> fc10
    assert kinds(m) == [c, r, p, n, c, r, n, p, l, r, l, r, "Flatten", "Linear"]
    assert [(x.out_channels, x.out_size) for x in m if isinstance(x, LocallyConnected2d)] == [(64, (6, 6)), (32, (6, 6))]
    assert all(x.ceil_mode for x in m if isinstance(x, nn.MaxPool2d))
    lrn = m[3]
    assert (lrn.size, lrn.alpha, lrn.k, lrn.convention, lrn.region) == (9, 1e-3, 1.0, "cuda-convnet", "across")
    assert kinds(model_of(preset="cuda_convnet_conv_local_13pct")) == [c, r, p, c, r, p, l, r, l, r, "Flatten", "Linear"]
    # layers-18pct.cfg: conv1 -> pool1 (neuron=relu: after the max) -> rnorm1 -> conv2 (relu) -> avg pool2
    # -> rnorm2 -> conv3 (relu) -> avg pool3 -> fc10; Caffe's cifar10_full is the same list
    m = model_of(preset="cuda_convnet_18pct", size=32)
    assert kinds(m) == [c, p, r, n, c, r, "AvgPool2d", n, c, r, "AvgPool2d", "Flatten", "Linear"]
    from lrn_cli.presets import PRESETS
    assert PRESETS["cuda_convnet_18pct"] == PRESETS["cifar10_full"]


def test_vgg_presets_width_and_lrn_slot():
    a, a_lrn = (model_of(preset=p, size=112, width=0.25) for p in ("vgg_a", "vgg_a_lrn"))
    assert kinds(a_lrn)[:4] == ["Conv2d", "ReLU", "LocalResponseNorm", "MaxPool2d"]  # one LRN, after conv1
    assert sum(isinstance(x, LocalResponseNorm) for x in a_lrn) == 1 and not any(
        isinstance(x, LocalResponseNorm) for x in a)
    convs = [x.out_channels for x in a if isinstance(x, nn.Conv2d)]
    assert convs == [16, 32, 64, 64, 128, 128, 128, 128]
    fcs = [(x.in_features, x.out_features) for x in a if isinstance(x, nn.Linear)]
    assert fcs == [(128 * 7 * 7, 1024), (1024, 1024), (1024, 10)]
    assert count_params(a) == count_params(a_lrn)
    assert a(torch.randn(2, 3, 112, 112)).shape == (2, 10)


CUDA_CONVNET_INITW = {  # initW of each conv, local and fc layer in the layer files
    "cuda_convnet_18pct": [1e-4, 0.01, 0.01, 0.01],                      # layers-18pct.cfg
    "cuda_convnet_conv_local_11pct": [1e-4, 0.01, 0.04, 0.04, 0.01],     # layers-conv-local-11pct.cfg
    "cuda_convnet_conv_local_13pct": [1e-4, 0.01, 0.04, 0.04, 0.01],     # layers-conv-local-13pct.cfg
}
# wc / 0.004 (train.weight_decay of the configs) of each layer's weights, from the layer-params files
CUDA_CONVNET_DECAY = {
    "cuda_convnet_18pct": [1, 1, 1, 250],                 # layer-params-18pct.cfg: 0.004 x3, fc10 1
    "cuda_convnet_conv_local_11pct": [0, 0, 1, 1, 2.5],   # layer-params-conv-local-11pct.cfg: 0, 0, 0.004 x2, 0.01
    "cuda_convnet_conv_local_13pct": [0, 0, 1, 1, 1],     # layer-params-conv-local-13pct.cfg: 0, 0, 0.004 x3
}


@pytest.mark.parametrize("preset", sorted(CUDA_CONVNET_INITW))
def test_cuda_convnet_init_and_multipliers_are_its_layer_files(preset):
    torch.manual_seed(0)
    m = model_of(preset=preset, size=24, init="caffe", caffe_multipliers=True)
    layers = [x for x in m if isinstance(x, (nn.Conv2d, LocallyConnected2d, nn.Linear))]
    assert len(layers) == len(CUDA_CONVNET_INITW[preset])
    for layer, std in zip(layers, CUDA_CONVNET_INITW[preset]):
        n = layer.weight.numel()
        assert layer.weight.double().std().item() == pytest.approx(std, rel=5 / (2 * n) ** 0.5), (layer, std)
        assert layer.bias.abs().max().item() == 0
    names = {id(p): name for name, p in m.named_parameters()}
    got = {}
    for g in param_groups(m, 0.001, 0.004):
        for p in g["params"]:
            got[names[id(p)]] = (round(g["lr"] / 0.001, 9), round(g["weight_decay"] / 0.004, 9))
    index = [name for name, x in m.named_children() if isinstance(x, (nn.Conv2d, LocallyConnected2d, nn.Linear))]
    # epsB = 2 epsW everywhere; cuda-convnet decays no bias
    assert got == {**{f"{i}.weight": (1, d) for i, d in zip(index, CUDA_CONVNET_DECAY[preset])},
                   **{f"{i}.bias": (2, 0) for i in index}}


# ----------------------------------------------------------------------------- 24 px crops

def test_crop_windows_of_24_px_are_every_window_inside_the_image():
    x = torch.arange(32 * 32, dtype=torch.int32).view(1, 1, 32, 32).expand(4000, 3, 32, 32).contiguous()
    g = torch.Generator().manual_seed(0)
    out = crop_flip(x, 4, False, g, size=24)
    assert out.shape == (4000, 3, 24, 24)
    tops, lefts = out[:, 0, 0, 0] // 32, out[:, 0, 0, 0] % 32
    assert set(tops.tolist()) == set(range(9)) and set(lefts.tolist()) == set(range(9))  # offsets 0..8, uniform
    assert (out[:, 0] == x[0, 0, tops.view(-1, 1, 1) + torch.arange(24).view(1, 24, 1),
                           lefts.view(-1, 1, 1) + torch.arange(24).view(1, 1, 24)]).all()  # windows, no padding
    flipped = crop_flip(x[:200], 0, True, torch.Generator().manual_seed(1), size=24)
    centre = x[:200, :, 4:28, 4:28]
    assert all(torch.equal(f, c) or torch.equal(f, c.flip(-1)) for f, c in zip(flipped, centre))
    assert torch.equal(crop_flip(x[:3], 0, False, g, size=24), center_crop(x[:3], 24))
    # the whole-image crop draws as before: the same crops for a size of None and 32
    a = crop_flip(x[:50] + 1, 4, True, torch.Generator().manual_seed(5))
    b = crop_flip(x[:50] + 1, 4, True, torch.Generator().manual_seed(5), size=32)
    assert torch.equal(a, b) and (a == 0).any()  # shifted by up to 4 into the zero padding


def test_cifar_at_24_px_trains_on_random_crops_and_tests_on_the_centre(tiny_cifar):
    cfg = load_config({"data": {"root": str(tiny_cifar), "image_size": 24, "augment": {"crop": 4, "flip": True}}})
    data = load_data(cfg.data)
    assert data.image_size == 24 and data.train.x.shape[-1] == 32  # stored whole, cropped per batch
    assert data.info["image_size"] == 24 and data.info["stored_size"] == 32
    torch.manual_seed(0)
    xb = train_inputs(data, cfg.data.augment, torch.arange(16), torch.device("cpu"), data.mean, data.std)
    assert xb.shape == (16, 3, 24, 24) and xb.dtype == torch.float32
    assert torch.equal(data.eval_transform(data.test.x), data.test.x[..., 4:28, 4:28])
    whole = load_data(load_config({"data": {"root": str(tiny_cifar)}}).data)
    assert whole.image_size == 32 and whole.eval_transform is None and whole.train_transform is None
    for bad in ({"image_size": 40}, ):
        with pytest.raises(UserError, match="data.image_size: CIFAR-10 images are 32 px"):
            load_config({"data": {"root": str(tiny_cifar), **bad}})
    with pytest.raises(UserError, match="eval.corruptions_root: released CIFAR-10-C images are 32 px"):
        load_config({"data": {"image_size": 24}, "eval": {"corruptions_root": str(tiny_cifar)}})


# ----------------------------------------------------------------------------- the configs

def tiny_folder(root, classes=3, per_split=4):
    """root/{train,val}/c<i>/*.png: a few small images of a colour per class."""
    for i in range(classes):
        for split in ("train", "val"):
            for j in range(per_split):
                path = root / split / f"c{i}" / f"{j}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (40 + j, 36), (60 * i + 20, 200 - 50 * i, 30 * j)).save(path)
    return root


@pytest.mark.parametrize("config, crop", [
    ("cuda_convnet_18pct", 32),
    ("cuda_convnet_conv_local_11pct", 24),
    ("cuda_convnet_conv_local_13pct", 24),
])
def test_cuda_convnet_configs_train_an_epoch(tiny_cifar, tmp_path, config, crop):
    r = train(REPO / "configs" / f"{config}.yaml",
              [f"data.root={tiny_cifar}", "data.download=false", "train.epochs=1", "train.threads=1"],
              out=tmp_path, name="run", quiet=True)
    assert r.summary["status"] == "completed" and r.summary["data"]["image_size"] == crop
    trained = load_trained(r.run_dir)
    assert trained.image_size == crop and trained.model(torch.zeros(1, 3, crop, crop)).shape == (1, 10)


def test_a_local_net_exports_to_onnx_with_a_dynamic_batch(tiny_cifar, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason='the onnx extra is not installed: pip install -e ".[onnx]"')
    pytest.importorskip("onnx")
    from lrn_cli.export import export_onnx

    r = train(REPO / "configs" / "cuda_convnet_conv_local_13pct.yaml",
              [f"data.root={tiny_cifar}", "data.download=false", "train.epochs=1", "train.threads=1"],
              out=tmp_path, name="run", quiet=True)
    result = export_onnx(r.run_dir, tmp_path / "m.onnx", input="normalized")
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-3
    trained = load_trained(r.run_dir)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    for n in (1, 5):
        x = torch.randn(n, 3, 24, 24)
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        with torch.no_grad():
            assert np.abs(got - trained.model(x).numpy()).max() < 1e-4 * max(1, float(np.abs(got).max()))


def test_vgg_config_trains_an_epoch_as_a_and_a_lrn(tmp_path):
    root = tiny_folder(tmp_path / "folder")
    for preset, norm in (("vgg_a_lrn", "lrn"), ("vgg_a", "none")):
        r = train(REPO / "configs" / "vgg_a_imagenette.yaml",
                  [f"data.root={root}", "train.epochs=1", "train.batch_size=6", "train.threads=1",
                   f"model.preset={preset}", f"model.norm.type={norm}"], out=tmp_path, name=preset, quiet=True)
        assert r.summary["status"] == "completed" and r.summary["data"]["image_size"] == 112


def test_experiment_specs_resolve():
    from lrn_cli.sweep import plan

    for name, labels in (("cuda_convnet_local", {"lrn", "no_lrn"}), ("vgg_a_lrn", {"a", "a_lrn", "a_lrn_acting"})):
        _, runs = plan(REPO / "experiments" / f"{name}.yaml")
        assert {r.label for r in runs} == labels and sorted({r.seed for r in runs}) == [0, 1, 2]
        assert len(runs) == 3 * len(labels)
    nets = {r.label: (r.config["model"]["preset"], r.config["model"]["norm"]["type"], r.config["model"]["norm"]["alpha"])
            for r in plan(REPO / "experiments" / "vgg_a_lrn.yaml")[1]}
    assert nets == {"a": ("vgg_a", "none", None), "a_lrn": ("vgg_a_lrn", "lrn", 1e-4),
                    "a_lrn_acting": ("vgg_a_lrn", "lrn", 0.33)}
    norms = {r.label: r.config["model"]["norm"]["type"] for r in plan(REPO / "experiments" / "cuda_convnet_local.yaml")[1]}
    assert norms == {"lrn": "lrn", "no_lrn": "none"}
