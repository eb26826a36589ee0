"""Lighting corruptions: how exposure, tone curve, sensor noise, illumination and white balance
vary between cameras and scenes, to test directly the claim that Local Response Normalization
makes CNNs "less sensitive to variations in lighting". Beyond Hendrycks & Dietterich (2019)'s
benchmark, whose `brightness` adds to HSV value and `contrast` scales about the mean.

Light adds and scales in *linear* light, not in the sRGB-encoded pixels a dataset stores, so every
corruption but `gamma` decodes with the sRGB transfer function (IEC 61966-2-1), changes the light,
clips to [0, 1] as a sensor or an 8-bit file does, and encodes again:

    linear(v) = v / 12.92                     v <= 0.04045
                ((v + 0.055) / 1.055) ** 2.4  otherwise
    srgb(l)   = 12.92 l                       l <= 0.0031308
                1.055 l ** (1 / 2.4) - 0.055  otherwise

The parameters are relative to the image (stops, kelvin, photo-electrons per pixel, fractions of
its extent), so every size table has the same list. Only `low_light`, `illumination_gradient`,
`gamma` and `color_cast` draw random numbers (through `rand`, the same draws for every image).

    name                   severities 1..5                                  based on
    underexposure          -0.5, -1, -1.5, -2, -3 EV                        exposure compensation (+-3 EV)
    overexposure           +0.5, +1, +1.5, +2, +3 EV, clipped               exposure compensation (+-3 EV)
    gamma                  exponent 1.2, 1.4, 1.6, 1.9, 2.2 (or 1/it)       display gamma 1.8 vs 2.2; a missing
                                                                            or doubled transfer function
    low_light              -3 .. -7 EV below a 4000 e- full well, shot      Poisson-Gaussian noise (Foi et al.
                           + read noise, gained back (ISO 800 .. 12800)     2008; Brooks et al. 2019's levels)
    illumination_gradient  1 .. 3 EV ramp across the image, random          cos^4 natural vignetting
                           direction, and cos^4 vignetting 20 .. 40 deg
    color_cast             white balance off by 5500 .. 2850 K vs 6504 K,   von Kries gains; Afifi & Brown
                           warm or cool                                     2019's WB presets; Planckian locus
"""
from __future__ import annotations

import math

import torch

from .imageops import TABLES, Rand

# Rec. 709 / sRGB luminance of linear R, G, B (IEC 61966-2-1)
LUMA = (0.2126, 0.7152, 0.0722)
# CIE XYZ -> linear sRGB (IEC 61966-2-1)
XYZ_TO_RGB = ((3.2406, -1.5372, -0.4986), (-0.9689, 1.8758, 0.0415), (0.0557, -0.2040, 1.0570))
WHITE_K = 6504.0  # sRGB's white, D65, has this correlated colour temperature


def srgb_to_linear(x: torch.Tensor) -> torch.Tensor:
    """sRGB-encoded values in [0, 1] -> linear light in [0, 1] (IEC 61966-2-1); clips first."""
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.04045, x / 12.92, x.add(0.055).div_(1.055).pow_(2.4))


def linear_to_srgb(lin: torch.Tensor) -> torch.Tensor:
    """Linear light -> sRGB-encoded values in [0, 1] (IEC 61966-2-1); clips to [0, 1] first, as a
    sensor saturates and an 8-bit file cannot hold negative light."""
    lin = lin.clamp(0.0, 1.0)
    return torch.where(lin <= 0.0031308, lin * 12.92, lin.pow(1 / 2.4).mul_(1.055).sub_(0.055))


def _p(name: str, table: str, severity: int):
    return PARAMS[name][table][severity - 1]


def underexposure(x: torch.Tensor, severity: int, table: str, rand: Rand) -> torch.Tensor:
    """Too little exposure: `srgb(2 ** -EV * linear(x))`, EV = 0.5, 1, 1.5, 2, 3 stops.

    A stop (EV) halves the light reaching the sensor; cameras' exposure compensation and
    auto-exposure bracketing span +-3 EV, the top severity. No noise (that is `low_light`): this
    is a dark picture of a well-lit scene, so what is lost is the shadows' 8-bit levels."""
    return linear_to_srgb(srgb_to_linear(x) * 2.0 ** -_p("underexposure", table, severity))


def overexposure(x: torch.Tensor, severity: int, table: str, rand: Rand) -> torch.Tensor:
    """Too much exposure: `srgb(min(1, 2 ** EV * linear(x)))`, EV = 0.5, 1, 1.5, 2, 3 stops.

    The same +-3 EV range as `underexposure`; light above the sensor's full scale clips, so the
    highlights blow out to white (at +3 EV everything brighter than linear 1/8, sRGB 0.39)."""
    return linear_to_srgb(srgb_to_linear(x) * 2.0 ** _p("overexposure", table, severity))


def gamma(x: torch.Tensor, severity: int, table: str, rand: Rand) -> torch.Tensor:
    """A tone-curve (gamma) mismatch: `x ** k` or `x ** (1 / k)` on the encoded values, the
    direction drawn per image (`rand.uniform() < 0.5`: darker mid-tones, else lighter), k = 1.2,
    1.4, 1.6, 1.9, 2.2.

    An image encoded for one display gamma and shown with another is `x ** (g_shown / g_encoded)`:
    content for a gamma 1.8 display (classic Mac) on a 2.2 one (sRGB) is k = 2.2 / 1.8 = 1.22, the
    other way 1 / 1.22; linear data stored as if encoded (a pipeline that skips the transfer
    function) is about x ** 2.2, an encoding applied twice about x ** (1 / 2.2), the top severity.
    Both directions happen, and a fixed one would only repeat under/overexposure's darker or
    brighter, so each image gets one at random: the corruption measures the tone curve, not the
    brightness. Black and white stay black and white; contrast moves between shadows and highlights."""
    k = _p("gamma", table, severity)
    darker = rand.uniform() < 0.5
    k = torch.where(darker, k, 1.0 / k).view(-1, 1, 1, 1).to(x.dtype)
    return x.clamp(0.0, 1.0).pow(k)


def low_light(x: torch.Tensor, severity: int, table: str, rand: Rand) -> torch.Tensor:
    """A dim scene at auto gain: each value collects `Poisson(N * linear(x))` photo-electrons plus
    Normal(0, read_e) read noise, and the camera's gain (ISO) divides by N to restore the
    brightness, so the mean is kept and the noise is that of N electrons at full scale:

        srgb((Poisson(N * linear(x)) + read_e * Normal(0, 1)) / N)

    (N, read_e) = (500, 1.04), (250, 1.11), (125, 1.18), (62.5, 1.26), (31.25, 1.34): the scene 3,
    4, 5, 6, 7 stops darker than fills a 4000 e- full well (a small-pixel sensor's capacity), i.e.
    ISO 800 .. 12800 on a base ISO of 100. This is the Poisson-Gaussian model of raw data (Foi et
    al. 2008, "Practical Poissonian-Gaussian noise modeling"): variance `lin / N + (read_e / N) ** 2`
    in linear light, growing with the signal as shot noise does. In Brooks et al. (2019,
    "Unprocessing images for learned raw denoising")'s terms the shot level is 1 / N = 0.002 ..
    0.032 (their range, sampled from real phone sensors, is 0.0001 .. 0.012: severities 1-3 lie in
    it, 4-5 are darker), and read_e = N sqrt(l_read) from their fit log(l_read) = 2.18 log(l_shot)
    + 1.20, about one electron. Independent per RGB value (no Bayer mosaic); light below black
    clips to 0. Unlike the benchmark's `shot_noise` (Poisson on the encoded values) the noise is in
    linear light, so the shadows get the most noise for their level."""
    photons, read_e = _p("low_light", table, severity)
    electrons = rand.poisson(srgb_to_linear(x) * photons)
    electrons += rand.normal(*x.shape[1:], std=read_e)
    return linear_to_srgb(electrons / photons)


def illumination_gradient(x: torch.Tensor, severity: int, table: str, rand: Rand) -> torch.Tensor:
    """Uneven light: `srgb(linear(x) * 2 ** (EV / 2 * t) * cos^4(atan(r * tan(a))))`.

    t in [-1, 1] is the position along a direction drawn per image (`rand.uniform(0, 2 pi)`, the
    side the light comes from) scaled to the image's extent along it, so the exposure ramps by EV =
    1, 1.5, 2, 2.5, 3 stops from one side to the other, 0 EV at the centre (a window or lamp to
    one side; beyond the ramp's +EV/2 the light clips). r is the distance from the centre over
    the half-diagonal and `a` = 20, 25, 30, 35, 40 degrees the half-diagonal field of view of a lens
    with cos^4 natural vignetting (the cos^4 law of illumination), so the corners lose 0.36 .. 1.54
    stops. Both are smooth: the corruption changes no fine detail."""
    ev, half_angle = _p("illumination_gradient", table, severity)
    n, _, h, w = x.shape
    theta = rand.uniform(low=0.0, high=2 * math.pi).view(n, 1, 1, 1)
    u = torch.arange(w, dtype=torch.float32).add_(0.5 - w / 2).view(1, 1, 1, w)  # pixels from the centre
    v = torch.arange(h, dtype=torch.float32).add_(0.5 - h / 2).view(1, 1, h, 1)
    c, s = theta.cos(), theta.sin()
    t = (u * c + v * s) / (c.abs() * (w / 2) + s.abs() * (h / 2))
    r2 = (u * u + v * v) / ((w * w + h * h) / 4)
    vignette = (1.0 + r2 * math.tan(math.radians(half_angle)) ** 2).pow_(-2)  # cos^4(atan(r tan a))
    return linear_to_srgb(srgb_to_linear(x) * torch.exp2(t * (ev / 2)) * vignette)


def planckian_xy(kelvin: float) -> tuple[float, float]:
    """CIE 1931 (x, y) of a black body at `kelvin` (1667-25000 K): the cubic-spline approximation
    of Kim et al. (2002), US patent 7024034 / "Design of advanced color temperature control
    system for HDTV applications"."""
    t = kelvin
    if t < 4000:
        x = -0.2661239e9 / t ** 3 - 0.2343589e6 / t ** 2 + 0.8776956e3 / t + 0.179910
    else:
        x = -3.0258469e9 / t ** 3 + 2.1070379e6 / t ** 2 + 0.2226347e3 / t + 0.240390
    if t < 2222:
        y = -1.1063814 * x ** 3 - 1.34811020 * x ** 2 + 2.18555832 * x - 0.20219683
    elif t < 4000:
        y = -0.9549476 * x ** 3 - 1.37418593 * x ** 2 + 2.09137015 * x - 0.16748867
    else:
        y = 3.0817580 * x ** 3 - 5.87338670 * x ** 2 + 3.75112997 * x - 0.37001483
    return x, y


def cast_gains(kelvin: float, warm: bool = True) -> tuple[float, float, float]:
    """Linear R, G, B gains of a white balance off by `kelvin` vs sRGB's 6504 K white, scaled to
    keep a grey's luminance: warm (scene lit at `kelvin`, camera balanced for daylight) is the
    ratio of the two black bodies' linear sRGB, cool (camera set to `kelvin` in daylight) its
    inverse."""
    def rgb(k: float) -> list[float]:
        x, y = planckian_xy(k)
        xyz = (x / y, 1.0, (1.0 - x - y) / y)
        return [sum(m * c for m, c in zip(row, xyz)) for row in XYZ_TO_RGB]

    g = [a / b for a, b in zip(rgb(kelvin), rgb(WHITE_K))]
    if not warm:
        g = [1.0 / v for v in g]
    luma = sum(w * v for w, v in zip(LUMA, g))
    return tuple(v / luma for v in g)


def color_cast(x: torch.Tensor, severity: int, table: str, rand: Rand) -> torch.Tensor:
    """A white-balance error: von Kries gains on linear R, G, B, `srgb(g_c * linear(x))`, for a
    light of T = 5500, 4500, 3800, 3300, 2850 K where the camera assumed 6504 K (warm: R up, B
    down) or the other way (cool: the inverse gains), the direction drawn per image
    (`rand.uniform() < 0.5`: warm).

    The gains are the linear sRGB of the Planckian locus at T over that at 6504 K, luminance kept
    (`cast_gains`), so a grey stays as bright and takes the colour of the light: at 2850 K about
    (1.8, 0.84, 0.23), -2.1 stops of blue. 5500, 3800 and 2850 K are the daylight, fluorescent
    and tungsten presets Afifi & Brown (2019, "What else can fool deep learning? Addressing
    color constancy errors") render wrong white balances with; the steps are about 28, 68, 109,
    149, 197 mired from 6504 K."""
    kelvin = _p("color_cast", table, severity)
    warm = rand.uniform() < 0.5
    gains = torch.where(warm.view(-1, 1), torch.tensor(cast_gains(kelvin, True)),
                        torch.tensor(cast_gains(kelvin, False)))
    return linear_to_srgb(srgb_to_linear(x) * gains.view(-1, 3, 1, 1))


FUNCTIONS = {
    "underexposure": underexposure,
    "overexposure": overexposure,
    "gamma": gamma,
    "low_light": low_light,
    "illumination_gradient": illumination_gradient,
    "color_cast": color_cast,
}

_SEVERITIES = {
    "underexposure": [0.5, 1.0, 1.5, 2.0, 3.0],  # EV (stops) less
    "overexposure": [0.5, 1.0, 1.5, 2.0, 3.0],  # EV more
    "gamma": [1.2, 1.4, 1.6, 1.9, 2.2],  # exponent k (or 1 / k)
    # (photo-electrons at full scale N, read noise in electrons)
    "low_light": [(500.0, 1.04), (250.0, 1.11), (125.0, 1.18), (62.5, 1.26), (31.25, 1.34)],
    # (ramp across the image in EV, half-diagonal field angle in degrees)
    "illumination_gradient": [(1.0, 20.0), (1.5, 25.0), (2.0, 30.0), (2.5, 35.0), (3.0, 40.0)],
    "color_cast": [5500.0, 4500.0, 3800.0, 3300.0, 2850.0],  # K of the light vs 6504 K assumed
}
# the same parameters for every size table: none of them is in pixels
PARAMS = {name: {table: list(values) for table in TABLES} for name, values in _SEVERITIES.items()}
APPROXIMATE: dict[str, str] = {}
