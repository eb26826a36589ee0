"""Is the LRN acting? The factor distribution of each LRN layer against factors computed by hand."""
import math

import pytest
import torch
from torch import nn

from lrn_cli.activity import inert, measure, summarize
from lrn_cli.engine import train
from lrn_cli.lrn import LocalResponseNorm
from lrn_cli.lrn.functional import factor

from conftest import REPO

SYNTH = str(REPO / "configs" / "synthetic.yaml")


def test_a_vanishing_alpha_is_inert_with_factor_k_to_the_minus_beta():
    layer = LocalResponseNorm(5, alpha=1e-12, beta=0.75, k=2.0)
    with measure(nn.Sequential(layer)) as hists:
        layer(torch.rand(4, 8, 6, 6) + 0.1)
    a = summarize(hists)["0"]
    assert a["frac_changed_1pct"] == 0 and inert(summarize(hists))
    for key in ("median", "p05", "p95"):
        assert a[key] == pytest.approx(2.0 ** -0.75, rel=1e-9)
    assert a["activations"] == 4 * 8 * 6 * 6


def test_a_large_alpha_gives_the_factors_computed_by_hand():
    """Across 3 channels (torch's convention: scale alpha / 3), one pixel: by hand."""
    x = torch.tensor([1.0, 2.0, 0.0, 3.0]).view(1, 4, 1, 1)  # the zero is not counted
    layer = LocalResponseNorm(3, alpha=3.0, beta=0.5, k=1.0)  # scale 1
    sums = [1 + 4, 1 + 4 + 0, 4 + 0 + 9, 0 + 9]  # each channel's window of squares
    by_hand = sorted((1 + s) ** -0.5 for c, s in enumerate(sums) if c != 2)  # 1/sqrt(6), 1/sqrt(6), 1/sqrt(10)
    with measure(nn.Sequential(layer)) as hists:
        layer(x)
    a = summarize(hists)["0"]
    assert a["activations"] == 3 and a["frac_changed_1pct"] == 1.0 and not inert(summarize(hists))
    assert a["median"] == pytest.approx(by_hand[1], rel=3e-3)  # within a histogram bin
    assert a["p05"] == pytest.approx(by_hand[0], rel=3e-3) and a["p95"] == pytest.approx(by_hand[2], rel=3e-3)


@pytest.mark.parametrize("region, convention, size, k", [("across", "alexnet", 5, 2.0), ("within", "caffe", 3, 1.0),
                                                          ("across", "onnx", 4, 2.0)])
def test_percentiles_and_fraction_match_the_reference_factor(region, convention, size, k):
    torch.manual_seed(0)
    layer = LocalResponseNorm(size, alpha=2.0, beta=0.75, k=k, region=region, convention=convention)
    x = torch.relu(torch.randn(16, 12, 9, 9))
    with measure(nn.Sequential(nn.Identity(), layer)) as hists:
        layer(x[:10]), layer(x[10:])  # two batches add up
    a = summarize(hists)["1"]
    xd = x.double()
    f = factor(xd, layer.canon(xd))[xd != 0]
    base = k ** -0.75
    assert a["activations"] == len(f)
    assert a["frac_changed_1pct"] == pytest.approx(float(((f - base).abs() > 0.01 * base).double().mean()), abs=1e-12)
    for key, q in (("median", 0.5), ("p05", 0.05), ("p95", 0.95)):
        assert a[key] == pytest.approx(float(torch.quantile(f, q)), rel=3e-3), key


def test_measure_counts_only_the_first_images_when_asked():
    layer = LocalResponseNorm(3)
    with measure(nn.Sequential(layer), images=5) as hists:
        for _ in range(3):
            layer(torch.rand(4, 6, 3, 3) + 0.1)
    assert summarize(hists)["0"]["activations"] == 5 * 6 * 3 * 3
    layer(torch.rand(2, 6, 3, 3))  # outside the block: no hook left behind
    assert summarize(hists)["0"]["activations"] == 5 * 6 * 3 * 3


def test_a_run_records_its_lrn_activity(tmp_path):
    weak = train(SYNTH, ["train.epochs=1"], out=tmp_path, name="weak", quiet=True).summary
    strong = train(SYNTH, ["train.epochs=1", "model.norm.alpha=50", "model.norm.k=1"], out=tmp_path,
                   name="strong", quiet=True).summary
    assert set(weak["lrn_activity"]) == {"2", "6"}  # the two norm slots of the layer list, by module name
    assert weak["lrn_inert"] is True and strong["lrn_inert"] is False
    for a in strong["lrn_activity"].values():
        assert set(a) >= {"median", "p05", "p95", "frac_changed_1pct"} and a["frac_changed_1pct"] > 0.5
        assert 0 < a["p05"] <= a["median"] <= a["p95"] <= 1
    none = train(SYNTH, ["train.epochs=1", "model.norm.type=none"], out=tmp_path, name="none", quiet=True).summary
    assert "lrn_activity" not in none
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "strong"))
    acc.Reload()
    assert "lrn/2/factor" in acc.Tags()["histograms"] and "lrn/6/frac_changed_1pct" in acc.Tags()["scalars"]
    assert math.isclose(acc.Scalars("lrn/2/frac_changed_1pct")[-1].value,
                        strong["lrn_activity"]["2"]["frac_changed_1pct"], rel_tol=1e-6)
