"""Conversion between LRN conventions, and `lrn convert`."""
import itertools
import re

import pytest
import torch

from lrn_cli.config import parse_yaml
from lrn_cli.lrn import LocalResponseNorm
from lrn_cli.lrn.conventions import (CONVENTIONS, REGIONS_OF, NoEquivalent, convert, from_native,
                                     to_native)

from conftest import run_cli

X = torch.randn(2, 9, 6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 3


def layer(convention, size, alpha, beta, k, region):
    return LocalResponseNorm(size, alpha, beta, k, region, convention, impl="reference")


PAIRS = list(itertools.permutations(CONVENTIONS, 2))


@pytest.mark.parametrize("source, target", PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_every_conversion_computes_the_same_function_and_round_trips(source, target):
    converted = 0
    for region in REGIONS_OF[source]:
        for size in range(1, 8):
            k = 1.0 if (source, region) == ("caffe", "within") else 1.5
            try:
                src = layer(source, size, 3e-2, 0.7, k, region)
            except ValueError:
                continue  # e.g. an even size in caffe
            try:
                p = convert(source, target, size, 3e-2, 0.7, k, region)
            except NoEquivalent as e:
                assert str(e)  # it always says why
                continue
            converted += 1
            dst = layer(target, p["size"], p["alpha"], p["beta"], p["k"], p["region"])
            assert (src(X) - dst(X)).abs().max().item() <= 1e-12, (source, target, size, region, p)
            back = convert(target, source, p["size"], p["alpha"], p["beta"], p["k"], p["region"])
            # alexnet's even n sums n + 1 channels, so it comes back as that odd n
            assert back["size"] == (size + 1 if source == "alexnet" and size % 2 == 0 else size)
            assert back["alpha"] == pytest.approx(3e-2, rel=1e-12)
            assert (back["beta"], back["k"], back["region"]) == (0.7, k, region)
    assert converted > 0  # every pair shares at least the odd across-channel windows


@pytest.mark.parametrize("args, reason", [
    (("caffe", "torch", 3, 5e-5, 0.75, 1.0, "within"), "within-channel (spatial) window has no across-channel"),
    (("torch", "onnx", 4, 1e-4, 0.75, 1.0), "extra channel below the centre, and 'onnx' puts"),
    (("onnx", "torch", 4, 1e-4, 0.75, 1.0), "extra channel above the centre, and 'torch' puts"),
    (("torch", "caffe", 4, 1e-4, 0.75, 1.0), "Caffe supports only odd local_size"),
    (("torch", "tensorflow", 4, 1e-4, 0.75, 1.0), "'tensorflow' has symmetric windows only"),
    (("alexnet", "caffe", 4, 1e-4, 0.75, 2.0), None),
    (("torch", "cudnn", 17, 1e-4, 0.75, 1.0), "1 <= size <= 16"),
    (("cuda-convnet", "caffe", 3, 1e-3, 0.75, 2.0, "within"), "has no k"),
])
def test_no_equivalent_says_why(args, reason):
    if reason is None:  # alexnet n=4 is a symmetric 5-wide window: caffe has it
        assert convert(*args)["size"] == 5
        return
    with pytest.raises(NoEquivalent, match=re.escape(reason)):
        convert(*args)


def test_alexnet_even_n_is_the_next_odd_window():
    # the paper's formula with even n sums n + 1 channels: n = 4 is the same layer as n = 5
    p = convert("alexnet", "torch", 4, 1e-4, 0.75, 2.0)
    assert p["size"] == 5 and p["alpha"] == pytest.approx(5e-4)


@pytest.mark.parametrize("convention, native", [
    ("tensorflow", {"depth_radius": 2, "bias": 1.0, "alpha": 1e-4, "beta": 0.75}),
    ("caffe", {"local_size": 3, "alpha": 5e-5, "beta": 0.75, "norm_region": "WITHIN_CHANNEL"}),
    ("cuda-convnet", {"size": 5, "scale": 1e-4, "pow": 0.75, "minDiv": 2.0, "type": "cmrnorm"}),
    ("cudnn", {"lrnN": 5, "lrnAlpha": 1e-4, "lrnBeta": 0.75, "lrnK": 2.0}),
    ("onnx", {"size": 4, "alpha": 1e-4, "beta": 0.75, "bias": 1.0}),
    ("alexnet", {"n": 5, "alpha": 1e-4, "beta": 0.75, "k": 2.0}),
])
def test_native_names_round_trip(convention, native):
    ours = from_native(convention, native)
    assert to_native(convention, **ours) == native


def test_native_defaults_and_errors():
    assert from_native("tensorflow", {}) == {"size": 11, "alpha": 1.0, "beta": 0.5, "k": 1.0, "region": "across"}
    assert from_native("cudnn", {})["k"] == 2.0
    with pytest.raises(ValueError, match="has no LRN parameter 'depth_radius'"):
        from_native("torch", {"depth_radius": 2})
    with pytest.raises(ValueError, match="norm_region must be one of"):
        from_native("caffe", {"norm_region": "SPATIAL"})


def test_convert_command():
    res = run_cli("convert", "caffe", "tensorflow", "local_size=5", "alpha=1e-4", "beta=0.75", "k=2")
    assert res.returncode == 0, res.stderr
    assert "= tensorflow {depth_radius: 2, alpha: 2e-05, beta: 0.75, bias: 2}" in res.stdout
    assert "model.norm: {type: lrn, convention: tensorflow, size: 5" in res.stdout
    none = run_cli("convert", "caffe", "torch", "local_size=3", "norm_region=WITHIN_CHANNEL")
    assert none.returncode == 1 and "no equivalent" in none.stderr
    bad = run_cli("convert", "torch", "onnx", "sise=4")
    assert bad.returncode == 2 and "no LRN parameter 'sise'" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("args, alpha", [
    (("torch", "alexnet", "size=7", "alpha=1"), 1 / 7),                         # 6 digits printed 0.142857
    (("caffe", "tensorflow", "local_size=3", "alpha=1e-4", "k=2"),
     convert("caffe", "tensorflow", 3, 1e-4, 0.75, 2)["alpha"]),                # 3.33333e-05
])
def test_convert_prints_values_that_read_back_exactly(args, alpha):
    res = run_cli("convert", *args)
    assert res.returncode == 0, res.stderr
    _, target, config_line = res.stdout.splitlines()
    for line in (target, config_line):  # the converted layer, and the line to paste into a config
        (printed,) = re.findall(r"alpha: ([^,}]+)", line)
        assert parse_yaml(printed, "alpha") == alpha, line
    assert "beta: 0.75" in target and re.search(r"(k|bias): (1|2)[,}]", target)  # integral values stay short
