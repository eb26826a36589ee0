"""The lighting corruptions (lrn_cli/data/lighting.py) on real CIFAR-10 test images: each does what
its physics says (exposure in stops, shot noise, a smooth gain field, a white-balance cast),
grows with severity, and gives an image the same bytes alone or in any batch."""
import math
from itertools import pairwise

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lrn_cli.data.imageops import TABLES, Rand, to_float, to_uint8
from lrn_cli.data.lighting import APPROXIMATE, FUNCTIONS, LUMA, PARAMS, cast_gains, linear_to_srgb, srgb_to_linear

NAMES = ["underexposure", "overexposure", "gamma", "low_light", "illumination_gradient", "color_cast"]


pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors (conftest.one_thread)


@pytest.fixture(scope="module")
def images(cifar_test_images) -> torch.Tensor:
    """The first 400 CIFAR-10 test images, uint8 (400, 3, 32, 32)."""
    return cifar_test_images[:400]


def corrupt(name: str, x8: torch.Tensor, severity: int, seed: int = 0, start: int = 0) -> torch.Tensor:
    """uint8 images through a corruption, clipped and truncated as the caller does."""
    y = FUNCTIONS[name](to_float(x8), severity, "cifar10", Rand(seed, name, severity, start, len(x8)))
    assert y.dtype == torch.float32 and y.shape == x8.shape and torch.isfinite(y).all()
    return to_uint8(y)


def lin(x8: torch.Tensor) -> torch.Tensor:
    return srgb_to_linear(to_float(x8))


def test_exports():
    assert list(FUNCTIONS) == NAMES and list(PARAMS) == NAMES and APPROXIMATE == {}
    for name in NAMES:
        assert set(PARAMS[name]) == set(TABLES)
        assert all(len(p) == 5 and p == PARAMS[name]["cifar10"] for p in PARAMS[name].values())


def test_srgb_transfer_function(images):
    # IEC 61966-2-1: the two pieces meet at 0.04045 <-> 0.0031308; 18 % grey encodes to 0.4614
    v = torch.tensor([0.0, 0.04045, 0.5, 1.0])
    assert torch.allclose(srgb_to_linear(v), torch.tensor([0.0, 0.0031308, 0.21404, 1.0]), atol=2e-5)
    assert abs(linear_to_srgb(torch.tensor(0.18)).item() - 0.46135) < 1e-4
    # decode then encode is the identity on every 8-bit level and on real images (within a level)
    levels = torch.arange(256, dtype=torch.uint8)
    assert (to_uint8(linear_to_srgb(srgb_to_linear(to_float(levels)))).int() - levels.int()).abs().max() <= 1
    back = to_uint8(linear_to_srgb(lin(images)))
    assert (back.int() - images.int()).abs().max() <= 1


@pytest.mark.parametrize("name", NAMES)
def test_grows_with_severity(images, name):
    x = images[:200]
    change = [(corrupt(name, x, s).float() - x.float()).abs().mean().item() for s in range(1, 6)]
    assert change[0] > 1.0, change  # visible at severity 1 (mean |change| in grey levels)
    assert all(a < b for a, b in pairwise(change)), change


def test_underexposure_darkens_by_its_stops(images):
    x = images[:100]
    means = []
    for s, ev in enumerate(PARAMS["underexposure"]["cifar10"], 1):
        y = corrupt("underexposure", x, s)
        assert (y <= x).all()
        means.append(y.float().mean().item())
        # in linear light every value is 2 ** -EV of the clean one (beyond the 8-bit rounding)
        ok = y >= 64
        ratio = lin(y)[ok] / lin(x)[ok]
        assert abs(ratio.median().item() - 2.0 ** -ev) < 0.03 * 2.0 ** -ev  # 8-bit truncation: ~1 % low
    assert all(a > b for a, b in pairwise(means)), means


def test_overexposure_brightens_and_blows_highlights(images):
    x = images[:100]
    means, clipped = [], []
    for s, ev in enumerate(PARAMS["overexposure"]["cifar10"], 1):
        y = corrupt("overexposure", x, s)
        assert (y >= x).all()
        means.append(y.float().mean().item())
        clipped.append((y == 255).float().mean().item())
        # what the gain lifts beyond full scale is white
        assert (y[lin(x) * 2.0 ** ev >= 1.0] == 255).all()
    assert all(a < b for a, b in pairwise(means)), means
    assert all(a < b for a, b in pairwise(clipped)) and clipped[-1] > 0.3, clipped


def test_gamma_keeps_black_and_white_and_bends_each_image_one_way(images):
    x = images[:200].clone()
    x[:, :, 0, 0], x[:, :, 0, 1] = 0, 255
    for s, k in enumerate(PARAMS["gamma"]["cifar10"], 1):
        y = corrupt("gamma", x, s)
        assert (y[:, :, 0, 0] == 0).all() and (y[:, :, 0, 1] == 255).all()
        darker = (y <= x).flatten(1).all(1)
        lighter = (y >= x).flatten(1).all(1)
        assert (darker | lighter).all()  # one tone curve per image
        assert 0.3 < darker.float().mean().item() < 0.7  # both directions, about half each
        # the exponent is k or 1 / k: log(y) / log(x) on mid-tones
        mid = (x >= 64) & (x <= 192) & (y >= 16) & (y <= 240)
        e = torch.log(to_float(y)) / torch.log(to_float(x))
        dark_e = e[mid & darker.view(-1, 1, 1, 1)].median().item()
        light_e = e[mid & ~darker.view(-1, 1, 1, 1)].median().item()
        assert abs(dark_e - k) < 0.03 * k and abs(light_e - 1 / k) < 0.03 / k


def test_low_light_noise_is_shot_noise_and_keeps_brightness(images):
    # variance of the linear-light residual vs the clean linear level, binned: the Poisson-Gaussian
    # prediction lin / N + (read / N) ** 2, i.e. growing in proportion to the signal
    photons, read = PARAMS["low_light"]["cifar10"][2]
    x = images[:200].repeat(2, 1, 1, 1)  # each image twice: two independent noise draws (other indices)
    y = corrupt("low_light", x, 3)
    xl, res = lin(x), lin(y) - lin(x)
    edges = [0.05, 0.1, 0.2, 0.3, 0.45, 0.6]
    var, level = [], []
    for a, b in pairwise(edges):
        m = (xl >= a) & (xl < b)
        level.append(xl[m].mean().item())
        var.append(res[m].var().item())
        assert abs(var[-1] - (level[-1] / photons + (read / photons) ** 2)) < 0.08 * var[-1]
    assert all(a < b for a, b in pairwise(var)), var
    slope = np.polyfit(level, var, 1)[0]
    assert abs(slope * photons - 1.0) < 0.1  # variance per unit signal is 1 / N, as Poisson says
    # a noise of the same size at every level (additive Gaussian) would make the top bin's
    # variance equal to the bottom one's; shot noise makes it ~ the level ratio
    assert var[-1] / var[0] > 0.6 * level[-1] / level[0]
    for s in range(1, 6):
        y = corrupt("low_light", images[:200], s)
        assert abs(y.float().mean().item() - images[:200].float().mean().item()) < 5.0  # grey levels
        assert abs(lin(y).mean().item() / lin(images[:200]).mean().item() - 1.0) < 0.02


def high_frequency_fraction(d: torch.Tensor) -> torch.Tensor:
    """Per image: energy of d minus its 3x3 local mean over the energy of d (white noise ~0.87)."""
    local = F.avg_pool2d(F.pad(d, (1, 1, 1, 1), mode="replicate"), 3, 1)
    return ((d - local) ** 2).sum((1, 2, 3)) / (d ** 2).sum((1, 2, 3)).clamp_min(1e-12)


def ramp_direction(x8: torch.Tensor, y8: torch.Tensor) -> torch.Tensor:
    """Per image, the angle of the linear part of log2(gain) fitted on the unclipped pixels,
    the radial (vignetting) part fitted alongside."""
    h, w = x8.shape[-2:]
    v, u = torch.meshgrid(torch.arange(h) + 0.5 - h / 2, torch.arange(w) + 0.5 - w / 2, indexing="ij")
    r2 = (u ** 2 + v ** 2) / ((h ** 2 + w ** 2) / 4)
    design = torch.stack([torch.ones_like(u), u, v, r2, r2 ** 2], -1).expand(3, h, w, 5).reshape(-1, 5).double()
    angles = []
    for xi, yi in zip(x8, y8):
        ok = ((xi >= 48) & (yi >= 48) & (yi <= 250)).flatten()
        gain = torch.log2(lin(yi) / lin(xi).clamp_min(1e-6)).flatten().double()
        coef = torch.linalg.lstsq(design[ok], gain[ok, None]).solution[:, 0]
        angles.append(math.atan2(coef[2], coef[1]))
    return torch.tensor(angles)


def test_illumination_gradient_is_smooth_and_its_direction_varies(images):
    x = images[:200]
    clean_hf = high_frequency_fraction(to_float(x) - to_float(x).mean((2, 3), keepdim=True)).mean().item()
    for s in (1, 3, 5):
        d = to_float(corrupt("illumination_gradient", x, s)) - to_float(x)
        hf = high_frequency_fraction(d).mean().item()
        assert hf < 0.03 and hf < 0.5 * clean_hf  # smoother than the image itself
    noise = to_float(corrupt("low_light", x[:50], 3)) - to_float(x[:50])
    assert high_frequency_fraction(noise).mean().item() > 0.5  # what a per-pixel change looks like
    y = corrupt("illumination_gradient", x[:100], 5)
    theta = ramp_direction(x[:100], y)
    # directions all around: a small mean resultant, every quadrant
    assert torch.stack([theta.cos(), theta.sin()]).mean(1).norm() < 0.3
    assert len(set(((theta % (2 * math.pi)) // (math.pi / 2)).long().tolist())) == 4
    # and an image's direction is its own, whatever the batch
    for i in (0, 17, 99):
        alone = corrupt("illumination_gradient", x[i:i + 1], 5, start=i)
        assert torch.equal(alone[0], y[i])
        assert abs(math.remainder(ramp_direction(x[i:i + 1], alone)[0].item() - theta[i].item(), 2 * math.pi)) < 1e-6


def test_color_cast_is_a_von_kries_white_balance_error(images):
    x = images[:200]
    kelvin = PARAMS["color_cast"]["cifar10"][3]
    y = corrupt("color_cast", x, 4)
    xl, yl = lin(x), lin(y)
    # per image: warm (R/G up, B/G down) or cool (the opposite), never anything else
    ratio = (yl.mean((2, 3)) + 1e-4) / (xl.mean((2, 3)) + 1e-4)  # (n, 3) gain of each channel's mean
    rg, bg = ratio[:, 0] / ratio[:, 1], ratio[:, 2] / ratio[:, 1]
    warm = rg > 1
    assert ((warm & (bg < 1)) | (~warm & (bg > 1))).all()
    assert 0.3 < warm.float().mean().item() < 0.7
    # unclipped values get exactly the documented gains of the light at `kelvin` vs 6504 K
    for is_warm, rows in ((True, warm), (False, ~warm)):
        gains = cast_gains(kelvin, is_warm)
        for c in range(3):
            xc, yc = xl[rows, c], yl[rows, c]
            ok = (x[rows, c] >= 64) & (y[rows, c] >= 64) & (y[rows, c] <= 250)
            assert abs((yc[ok] / xc[ok]).median().item() / gains[c] - 1) < 0.03
    red, _, blue = cast_gains(kelvin, True)
    assert red > 1.5 and blue < 0.5  # 3300 K: strongly warm
    # grey pictures (the real images' luminance in all three channels; image i keeps its direction,
    # drawn from its index) take the light's colour, equally at every level, keep their luminance,
    # and are grey again once the gains are divided out
    luma = torch.tensor(LUMA).view(1, 3, 1, 1)
    grey8 = to_uint8(linear_to_srgb((luma * xl).sum(1, keepdim=True).expand(-1, 3, -1, -1)))
    out = lin(corrupt("color_cast", grey8, 4))
    gains = torch.tensor([cast_gains(kelvin, bool(w)) for w in warm]).view(-1, 3, 1, 1)
    ok = ((grey8[:, :1] >= 64) & (out <= 0.99).all(1, keepdim=True)).expand(-1, 3, -1, -1)
    chroma = out / out[:, 1:2]  # R/G, 1, B/G
    assert ((chroma / (gains / gains[:, 1:2]) - 1)[ok].abs().max() < 0.08)
    lum_in, lum_out = (luma * lin(grey8) * ok).sum((1, 2, 3)), (luma * out * ok).sum((1, 2, 3))
    assert ((lum_out / lum_in - 1).abs() < 0.03).all()
    undone = to_uint8(linear_to_srgb(out / gains)).int()
    assert ((undone.max(1).values - undone.min(1).values)[ok[:, 0]] <= 3).all()


@pytest.mark.parametrize("name", NAMES)
def test_same_bytes_alone_and_in_any_batch(images, name):
    x = images[:200]
    whole = corrupt(name, x, 4)
    sevens = torch.cat([corrupt(name, x[i:i + 7], 4, start=i) for i in range(0, 200, 7)])
    assert torch.equal(whole, sevens)
    for i in (0, 1, 6, 7, 100, 199):
        assert torch.equal(corrupt(name, x[i:i + 1], 4, start=i)[0], whole[i])
    assert torch.equal(corrupt(name, x, 4), whole)  # deterministic
    if name in ("gamma", "low_light", "illumination_gradient", "color_cast"):
        assert not torch.equal(corrupt(name, x, 4, seed=1), whole)  # and its draws come from the seed
