"""The weather family of the corruption benchmark (Hendrycks & Dietterich 2019, github
hendrycks/robustness, ImageNet-C/create_c): fog, frost, snow, spatter, as batched torch code.

Every corruption is `fn(x, severity, table, rand) -> y` (see `lrn_cli.data.imageops`): x float32
(N, 3, H, W) on [0, 1] (uint8 / 255: the reference's input is 8-bit, so x is taken at its nearest
grey level), y float32 bytes / 255, the reference's own truncation already done (the caller's
clip and truncation keep them). Each image draws its random numbers through its own generator
(`rand`), the same sequence for every image: the random corruptions match the reference in
distribution; given the reference's random numbers, fog, spatter and snow make its bytes (the
tests feed both the same draws). Each draws for the whole batch first, then works in chunks of
about CHUNK_PIXELS pixels (cache-sized; results never depend on the chunking).

- fog: the reference's diamond-square `plasma_fractal` over the whole batch in float64, level by
  level with the same uniforms in the same order, cropped to the image; the blend
  (x + c0 fractal) * max / (max + c0) in float32, redone in float64 for the values whose
  truncation float32 could get wrong.
- spatter: the reference's pipeline in torch: skimage's gaussian (float64 for the liquid layer,
  float32 per pass for the mud mask, as scipy stores it), and for water cv2.Canny (3x3 Sobel,
  replicated border, L1 magnitude, canny.cpp's fixed-point non-maximum suppression, hysteresis),
  cv2.distanceTransform(DIST_L2, 5) (the 5x5 chamfer mask 1 / 1.4 / 2.1969 in float32, two raster
  passes, the in-row dependency as a running minimum), THRESH_TRUNC, cv2.blur in double sums,
  equalizeHist's LUT, filter2D's saturated 8-bit correlation, the 8-bit blur's fixed-point
  division, the float32 blend. One deviation: where an image has no liquid over the threshold
  the reference divides 0 by 0 (NaN, undefined bytes); here the water layer is then zero.
- frost: the reference blends a random crop of one of five frost photographs (frost1..frost5;
  its np.random.randint(5) never picks frost6; frost2 and frost3 are the same picture), resized
  by 0.2 (CIFAR) or 0.3 (Tiny-ImageNet). The photographs cannot ship with this package: each is
  replaced by a procedural plate of the photo's size, synthesized once per process from a fixed
  seed (`frost_plate`): per principal colour axis of the photo a Gaussian random field with the
  photo's radially averaged power spectrum, a few Heeger-Bergen rounds (impose the photo's
  histogram, re-impose the spectrum), the histogram last; the photo's colour axes, stds and mean;
  8 bits; cv2.resize(INTER_LINEAR) bit for bit; then each channel set to the photo's mean and std
  over the crops the reference takes. The crop and the blend are then the reference's exactly.
  Brightness, colour, contrast, histogram and spectrum follow the photos; crystal shapes don't.
- snow: the reference's layer (normal draws, clipped_zoom, threshold, 8-bit PNG), ImageMagick's
  motion blur (`blur.motion_blur`, with the reference's Q16 / 8-bit PNG round trip), its rot180
  copy, and the blend towards cv2's grey in float32 (cvtColor's fused multiply-adds) as there.
"""
from __future__ import annotations

import math
from functools import cache

import torch
import torch.nn.functional as F

from .blur import clipped_zoom, gaussian_filter, motion_blur
from .imageops import Rand

__all__ = ["APPROXIMATE", "FUNCTIONS", "PARAMS", "canny", "distance_transform_5x5", "fog", "frost",
           "frost_plate", "plasma_fractal", "snow", "spatter"]


# --------------------------------------------------------------------------- parameters

# Literal per-table severity lists of the reference: "cifar10" from make_cifar_c.py,
# "tinyimagenet" from make_tinyimagenet_c.py, "imagenet" from make_imagenet_c.py.
PARAMS: dict[str, dict[str, list]] = {
    "fog": {  # (strength, wibbledecay)
        "cifar10": [(.2, 3), (.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],
        "tinyimagenet": [(.4, 3), (.7, 3), (1, 2.5), (1.5, 2), (2, 1.75)],
        "imagenet": [(1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)],
    },
    "frost": {  # (image weight, frost weight)
        "cifar10": [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)],
        "tinyimagenet": [(1, 0.3), (0.9, 0.4), (0.8, 0.45), (0.75, 0.5), (0.7, 0.55)],
        "imagenet": [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)],
    },
    "snow": {  # (loc, scale, zoom, threshold, blur radius, blur sigma, image weight)
        "cifar10": [(0.1, 0.2, 1, 0.6, 8, 3, 0.95),
                    (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
                    (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
                    (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
                    (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)],
        "tinyimagenet": [(0.1, 0.2, 1, 0.6, 8, 3, 0.8),
                         (0.1, 0.2, 1, 0.5, 10, 4, 0.8),
                         (0.15, 0.3, 1.75, 0.55, 10, 4, 0.7),
                         (0.25, 0.3, 2.25, 0.6, 12, 6, 0.65),
                         (0.3, 0.3, 1.25, 0.65, 14, 12, 0.6)],
        "imagenet": [(0.1, 0.3, 3, 0.5, 10, 4, 0.8),
                     (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
                     (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
                     (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
                     (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)],
    },
    "spatter": {  # (loc, scale, sigma, threshold, intensity / mud sigma, mud?)
        "cifar10": [(0.62, 0.1, 0.7, 0.7, 0.5, 0),
                    (0.65, 0.1, 0.8, 0.7, 0.5, 0),
                    (0.65, 0.3, 1, 0.69, 0.5, 0),
                    (0.65, 0.1, 0.7, 0.69, 0.6, 1),
                    (0.65, 0.1, 0.5, 0.68, 0.6, 1)],
        "tinyimagenet": [(0.62, 0.1, 0.7, 0.7, 0.6, 0),
                         (0.65, 0.1, 0.8, 0.7, 0.6, 0),
                         (0.65, 0.3, 1, 0.69, 0.6, 0),
                         (0.65, 0.1, 0.7, 0.68, 0.6, 1),
                         (0.65, 0.1, 0.5, 0.67, 0.6, 1)],
        "imagenet": [(0.65, 0.3, 4, 0.69, 0.6, 0),
                     (0.65, 0.3, 3, 0.68, 0.6, 0),
                     (0.65, 0.3, 2, 0.68, 0.5, 0),
                     (0.65, 0.3, 1, 0.65, 1.5, 1),
                     (0.67, 0.4, 1, 0.65, 1.5, 1)],
    },
}

# plasma_fractal's mapsize in each script (its default there); fog crops it to the image
FOG_MAPSIZE = {"cifar10": 32, "tinyimagenet": 64, "imagenet": 256}
# cv2.resize factor of the frost photos in each script (none in make_imagenet_c.py)
FROST_RESIZE = {"cifar10": 0.2, "tinyimagenet": 0.3, "imagenet": None}


def _levels(x: torch.Tensor) -> torch.Tensor:
    """The reference's input bytes: x (uint8 / 255) at its nearest grey level, float32 0..255.
    (The reference only ever sees 8-bit images; an x off the levels is taken at the nearest.)"""
    return (x * 255.0).round_().clamp_(0, 255)


def _levels32(x: torch.Tensor) -> torch.Tensor:
    """The reference's np.array(x, dtype=np.float32) / 255. (float32 levels / 255)."""
    return _levels(x).div_(255.0)


def _bytes(r255: torch.Tensor) -> torch.Tensor:
    """The reference's bytes np.uint8(np.clip(r, 0, 255)) of its 0..255 result r255, as float32
    bytes / 255 (which the caller's clip and truncation keep as they are)."""
    return r255.clamp(0, 255).floor_().to(torch.float32).div_(255.0)


def _exact_bytes(t32: torch.Tensor, exact64, tol: float = 1e-3) -> torch.Tensor:
    """float32 bytes / 255 of the reference's float64 result, from t32, its float32 evaluation
    before the clip (on the 0..255 scale): with v32 = t32 clipped to 0..255, floor(v32) wherever
    v32 is farther than `tol` from an integer (float32's error here is far below it) or t32 lies
    half a level or more outside 0..255 (clipped in float64 too), elsewhere floor of
    exact64(flat indices) -> float64 values (clipped there)."""
    v32 = t32.clamp(0, 255)
    out = v32.floor()
    near = ((v32 - v32.round()).abs_() < tol).view(-1).nonzero().view(-1)
    t = t32.view(-1)[near]
    near = near[(t > -0.5) & (t < 255.5)]
    if len(near):
        out.view(-1)[near] = exact64(near).floor().to(out.dtype)
    return out.div_(255.0)


# Work on chunks of about this many pixels (images x H x W): the elementwise passes then stay in
# the CPU's cache, which matters more than the per-call overhead once images are large. Each
# corruption draws all its random numbers first; the chunking never changes a result.
CHUNK_PIXELS = 1 << 17


def _chunks(n: int, h: int, w: int, scale: int = 1) -> list[tuple[int, int]]:
    """(start, stop) of consecutive chunks of about scale * CHUNK_PIXELS pixels."""
    step = max(1, scale * CHUNK_PIXELS // max(1, h * w))
    return [(s, min(n, s + step)) for s in range(0, n, step)]


def _chunked(x: torch.Tensor, corrupt_rows, scale: int = 1) -> torch.Tensor:
    """`corrupt_rows(x[s:e], s, e)` over cache-sized chunks of the batch (`_chunks`), into one
    float32 result: the draws were made for the whole batch, each chunk takes its rows of them."""
    n, _, h, w = x.shape
    out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    for s, e in _chunks(n, h, w, scale):
        out[s:e] = corrupt_rows(x[s:e], s, e)
    return out


def _param(name: str, table: str, severity: int):
    if not 1 <= severity <= 5:
        raise ValueError(f"severity must be 1..5, got {severity}")
    try:
        return PARAMS[name][table][severity - 1]
    except KeyError:
        raise ValueError(f"unknown table {table!r} (expected one of {sorted(PARAMS[name])})") from None


# --------------------------------------------------------------------------- fog

def fractal_draws(mapsize: int) -> int:
    """How many uniforms plasma_fractal(mapsize) draws: 3 (M/s)^2 at each step s = M .. 2."""
    total, step = 0, mapsize
    while step >= 2:
        total += 3 * (mapsize // step) ** 2
        step //= 2
    return total


def plasma_fractal(u: torch.Tensor, mapsize: int, wibbledecay: float) -> torch.Tensor:
    """The reference's diamond-square heightmap for a batch: u is (N, fractal_draws(mapsize))
    uniforms on [0, 1), consumed in the reference's order (per step: the squares, then the two
    diamond sets, each in raster order); returns (N, mapsize, mapsize) float64 on [0, 1]."""
    if mapsize & (mapsize - 1) or mapsize < 2:
        raise ValueError(f"mapsize must be a power of two, got {mapsize}")
    n = u.shape[0]
    u = u.to(torch.float64)
    a = torch.zeros(n, mapsize, mapsize, dtype=torch.float64, device=u.device)
    step, wibble, used = mapsize, 100.0, 0

    def wibbled(s: torch.Tensor) -> torch.Tensor:
        nonlocal used
        k = s.shape[1] * s.shape[2]
        noise = u[:, used:used + k].reshape(s.shape)
        used += k
        # np.random.uniform(-wibble, wibble) is low + (high - low) * U
        return s / 4 + wibble * (-wibble + (2 * wibble) * noise)

    while step >= 2:
        h = step // 2
        corner = a[:, 0::step, 0::step]
        sq = corner + corner.roll(-1, 1)
        sq = sq + sq.roll(-1, 2)
        a[:, h::step, h::step] = wibbled(sq)
        dr = a[:, h::step, h::step]
        ul = a[:, 0::step, 0::step]
        lt = (dr + dr.roll(1, 1)) + (ul + ul.roll(-1, 2))
        a[:, 0::step, h::step] = wibbled(lt)
        tt = (dr + dr.roll(1, 2)) + (ul + ul.roll(-1, 1))
        a[:, h::step, 0::step] = wibbled(tt)
        step //= 2
        wibble /= wibbledecay
    a = a - a.amin((1, 2), keepdim=True)
    return a / a.amax((1, 2), keepdim=True)


def fog_mapsize(table: str, h: int, w: int) -> int:
    """The table's mapsize, or the next power of two above the image where that is too small."""
    m = FOG_MAPSIZE[table]
    while m < max(h, w):
        m *= 2
    return m


def fog(x: torch.Tensor, severity: int, table: str, rand: Rand) -> torch.Tensor:
    """x + c0 * plasma_fractal(wibbledecay=c1) (cropped to the image), times max/(max + c0)."""
    strength, decay = _param("fog", table, severity)
    m = fog_mapsize(table, *x.shape[-2:])
    u = rand.uniform(fractal_draws(m)).to(x.device)
    # the fractals in one go (their small steps cost per call), the blend in cache-sized chunks
    frac = plasma_fractal(u, m, decay)[:, :x.shape[-2], :x.shape[-1]]
    return _chunked(x, lambda xs, s, e: _fog_blend(xs, strength, frac[s:e]))


def fog_from_draws(x: torch.Tensor, strength: float, decay: float, m: int, u: torch.Tensor) -> torch.Tensor:
    """The reference's fog of the (N, 3, H, W) batch, given plasma_fractal's uniforms u (N, k)."""
    return _fog_blend(x, strength, plasma_fractal(u, m, decay)[:, :x.shape[-2], :x.shape[-1]])


def _fog_blend(x: torch.Tensor, strength: float, frac: torch.Tensor) -> torch.Tensor:
    """The reference's fog of the (N, 3, H, W) batch given its (N, H, W) float64 fractals."""
    n, c, h, w = x.shape
    frac = frac.unsqueeze(1)
    levels = _levels(x)
    x = levels / 255.0
    # the reference's float64 arithmetic, evaluated in float32 and redone in float64 only for
    # the values whose truncation float32 could get wrong
    top = levels.amax((1, 2, 3), keepdim=True).to(torch.float64) / 255.0  # np.array(x).max() / 255.
    gain = (top / (top + strength)).to(torch.float32)
    v = ((x + strength * frac.to(torch.float32)) * gain).mul_(255.0)

    def exact64(i: torch.Tensor) -> torch.Tensor:
        img, pix = i // (c * h * w), i % (h * w)
        xi = levels.view(-1)[i].to(torch.float64) / 255.0
        fi = frac.reshape(n, h * w)[img, pix]
        ti = top.view(-1)[img]
        return ((xi + strength * fi) * ti / (ti + strength)).clamp(0, 1) * 255.0

    return _exact_bytes(v, exact64)


# --------------------------------------------------------------------------- frost

# The five photographs the reference picks from (np.random.randint(5): frost1..frost5; frost2.png
# and frost3.png are the same image, so both map to the second entry). Statistics of each (RGB,
# as cv2.imread gives it reversed), measured once from github hendrycks/robustness
# ImageNet-C/create_c: size (rows, cols); mean colour; the principal axes of its pixel colours
# (columns) and the std along each; per axis, log10 of the radially averaged power spectrum
# (Hann-windowed periodogram over variance) in 16 log-spaced bands of frequency from
# 1/max(rows, cols) to sqrt(1/2) cycles per pixel; per axis, the quantiles FROST_Q of the
# projection over its std.
FROST_CHOICE = (0, 1, 1, 2, 3)
FROST_Q = (0, .005, .01, .025, .05, .1, .2, .3, .4, .5, .6, .7, .8, .9, .95, .975, .99, .995, 1)
FROST_PHOTOS: tuple[dict, ...] = (
    {  # frost1.png
        "size": (600, 900),
        "mean": (77.67, 149.12, 165.74),
        "basis": ((0.7954, -0.5700, 0.2059), (0.4814, 0.3878, -0.7860), (0.3682, 0.7244, 0.5829)),
        "std": (32.482, 13.217, 1.034),
        "psd": (
            (4.63, 4.17, 3.72, 3.36, 2.49, 2.11, 1.74, 1.31, 0.81, 0.37, 0.14, -0.02, -0.15, -0.31, -0.72, -1.32),
            (4.07, 4.08, 3.42, 3.27, 2.92, 2.19, 1.62, 1.10, 0.67, 0.30, 0.08, -0.12, -0.25, -0.45, -0.92, -1.54),
            (2.77, 2.95, 2.93, 2.79, 2.28, 1.91, 1.31, 1.12, 0.66, 0.35, 0.16, 0.05, -0.04, -0.14, -0.41, -0.71),
        ),
        "q": (
            (-2.520, -1.876, -1.786, -1.621, -1.438, -1.200, -0.880, -0.620, -0.370, -0.116,
             0.154, 0.457, 0.831, 1.377, 1.841, 2.229, 2.654, 2.923, 4.821),
            (-2.708, -1.807, -1.694, -1.518, -1.361, -1.174, -0.923, -0.690, -0.431, -0.149,
             0.157, 0.520, 0.938, 1.408, 1.776, 2.108, 2.520, 2.782, 3.877),
            (-4.861, -2.268, -2.025, -1.689, -1.421, -1.115, -0.756, -0.502, -0.283, -0.078,
             0.130, 0.362, 0.651, 1.130, 1.676, 2.322, 3.271, 4.020, 10.418),
        ),
    },
    {  # frost2.png (= frost3.png)
        "size": (315, 560),
        "mean": (200.79, 205.38, 214.48),
        "basis": ((0.5600, 0.6878, 0.4620), (0.5799, 0.0728, -0.8114), (0.5917, -0.7223, 0.3581)),
        "std": (38.048, 2.196, 1.194),
        "psd": (
            (3.71, 3.64, 2.84, 2.30, 1.86, 1.80, 1.54, 1.29, 1.13, 0.98, 0.62, 0.23, 0.03, -0.31, -0.82, -1.53),
            (3.44, 3.33, 2.75, 2.50, 2.33, 2.09, 1.79, 1.49, 1.17, 0.95, 0.57, 0.14, -0.33, -0.79, -1.30, -1.74),
            (2.93, 2.95, 2.79, 2.57, 2.33, 2.12, 1.77, 1.65, 1.26, 1.06, 0.66, 0.24, -0.14, -0.62, -1.12, -1.39),
        ),
        "q": (
            (-6.825, -3.484, -2.988, -2.362, -1.861, -1.344, -0.753, -0.388, -0.085, 0.157,
             0.382, 0.599, 0.839, 1.114, 1.341, 1.523, 1.733, 1.854, 2.125),
            (-4.039, -1.909, -1.739, -1.529, -1.337, -1.110, -0.796, -0.534, -0.347, -0.188,
             -0.011, 0.368, 0.798, 1.314, 1.775, 2.305, 2.915, 3.644, 11.040),
            (-5.746, -2.400, -2.223, -1.910, -1.728, -1.583, -0.907, -0.546, -0.169, 0.148,
             0.487, 0.755, 0.864, 0.972, 1.457, 1.807, 1.930, 2.010, 4.301),
        ),
    },
    {  # frost4.jpg
        "size": (350, 527),
        "mean": (137.62, 152.77, 165.18),
        "basis": ((0.5681, 0.5008, -0.6530), (0.5687, 0.3346, 0.7514), (0.5948, -0.7982, -0.0947)),
        "std": (50.040, 2.893, 1.393),
        "psd": (
            (3.93, 3.30, 2.68, 1.58, 1.27, 1.51, 1.31, 1.14, 1.06, 0.79, 0.60, 0.45, 0.20, -0.08, -0.55, -1.20),
            (3.08, 2.69, 2.31, 1.30, 1.71, 1.77, 1.57, 1.45, 1.34, 1.13, 0.85, 0.53, 0.17, -0.30, -0.69, -1.23),
            (3.96, 3.51, 2.86, 1.96, 1.62, 1.69, 1.67, 1.51, 1.45, 1.19, 0.84, 0.34, 0.01, -0.52, -0.92, -1.66),
        ),
        "q": (
            (-4.451, -2.778, -2.419, -1.980, -1.657, -1.240, -0.768, -0.479, -0.237, 0.005,
             0.236, 0.460, 0.746, 1.182, 1.621, 2.129, 2.829, 3.176, 3.517),
            (-7.347, -3.118, -2.586, -1.874, -1.368, -1.002, -0.682, -0.489, -0.309, -0.141,
             0.090, 0.422, 0.795, 1.238, 1.525, 1.932, 2.732, 3.504, 7.838),
            (-8.225, -3.224, -2.528, -2.251, -1.646, -1.562, -0.819, -0.467, 0.221, 0.300,
             0.344, 0.386, 0.467, 1.135, 1.213, 1.410, 2.127, 2.394, 8.983),
        ),
    },
    {  # frost5.jpg
        "size": (495, 660),
        "mean": (112.38, 123.37, 134.75),
        "basis": ((0.5946, -0.6669, 0.4491), (0.5793, -0.0320, -0.8145), (0.5576, 0.7445, 0.3673)),
        "std": (74.672, 2.063, 0.631),
        "psd": (
            (3.99, 3.46, 2.51, 2.15, 1.97, 1.85, 1.67, 1.42, 1.07, 0.75, 0.46, 0.13, -0.19, -0.48, -0.75, -0.92),
            (3.26, 2.85, 2.27, 2.43, 2.17, 1.84, 1.63, 1.33, 1.13, 0.75, 0.52, 0.19, -0.15, -0.45, -0.73, -0.94),
            (2.35, 2.08, 2.09, 2.16, 2.02, 1.93, 1.85, 1.65, 1.43, 1.19, 0.78, 0.30, -0.19, -0.58, -0.90, -1.56),
        ),
        "q": (
            (-2.268, -1.898, -1.820, -1.658, -1.473, -1.226, -0.878, -0.600, -0.360, -0.105,
             0.167, 0.468, 0.823, 1.380, 1.853, 2.247, 2.651, 2.858, 3.055),
            (-6.503, -3.787, -3.175, -2.498, -1.881, -1.270, -0.696, -0.321, -0.062, 0.158,
             0.357, 0.562, 0.783, 1.070, 1.328, 1.549, 1.814, 2.013, 3.757),
            (-6.394, -3.019, -2.914, -2.796, -2.660, -0.609, -0.466, -0.382, -0.312, -0.080,
             0.147, 0.678, 0.753, 0.964, 1.155, 1.864, 2.296, 3.379, 6.220),
        ),
    },
)
# Per table, the mean and std of each channel of the photo as the script's crops see it: over
# the photo resized by FROST_RESIZE[table], each pixel weighted by the number of crops of the
# table's side (np.random.randint(0, side - crop) starts) that contain it. A plate is set to these.
FROST_CROP_STATS: dict[str, tuple] = {
    "cifar10": (
        ((76.71, 148.10, 164.71), (27.61, 16.27, 14.82)),  # frost1.png
        ((198.45, 202.91, 212.21), (19.72, 20.42, 21.19)),  # frost2.png
        ((143.52, 158.35, 171.07), (27.78, 27.81, 29.04)),  # frost4.jpg
        ((102.75, 114.08, 125.87), (39.02, 38.38, 37.34)),  # frost5.jpg
    ),
    "tinyimagenet": (
        ((76.94, 147.75, 164.19), (26.88, 15.66, 14.06)),
        ((198.11, 202.48, 211.75), (18.85, 19.63, 20.47)),
        ((144.58, 159.38, 172.26), (24.34, 24.40, 25.90)),
        ((101.28, 112.66, 124.52), (35.63, 34.99, 33.95)),
    ),
    "imagenet": (
        ((76.98, 147.73, 164.15), (28.31, 16.53, 14.83)),
        ((197.89, 202.25, 211.47), (20.24, 21.00, 21.83)),
        ((144.86, 159.68, 172.58), (26.91, 26.95, 28.31)),
        ((100.83, 112.22, 124.10), (38.28, 37.71, 36.76)),
    ),
}
FROST_SIDE = {"cifar10": 32, "tinyimagenet": 64, "imagenet": 224}  # the crop FROST_CROP_STATS assume
FROST_SEED = 20190328  # the plates' fixed seed


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """np.interp for increasing xp (clamped at the ends)."""
    x = x.clamp(xp[0], xp[-1])
    i = torch.searchsorted(xp, x.contiguous(), right=True).clamp(1, len(xp) - 1)
    x0, x1, f0, f1 = xp[i - 1], xp[i], fp[i - 1], fp[i]
    t = torch.where(x1 > x0, (x - x0) / (x1 - x0).clamp_min(1e-300), torch.zeros_like(x))
    return f0 + t * (f1 - f0)


def _match_histogram(z: torch.Tensor, ranked: torch.Tensor) -> torch.Tensor:
    """z with its values replaced, rank for rank, by the sorted target values `ranked`."""
    flat = z.flatten()
    out = torch.empty_like(flat)
    out[flat.argsort()] = ranked
    return out.view_as(z)


def _spectrum_amplitude(h: int, w: int, scale: int, log_psd: tuple[float, ...]) -> torch.Tensor:
    """sqrt of the photo's radial power spectrum on the (h, w) FFT grid (log-log interpolated
    between band centres, DC zero)."""
    nb = len(log_psd)
    lo, hi = math.log(1.0 / scale), math.log(math.sqrt(0.5) + 1e-9)
    centres = torch.tensor([lo + (hi - lo) * (i + 0.5) / nb for i in range(nb)], dtype=torch.float64)
    fy = torch.fft.fftfreq(h, dtype=torch.float64).view(h, 1)
    fx = torch.fft.fftfreq(w, dtype=torch.float64).view(1, w)
    fr = torch.sqrt(fy * fy + fx * fx)
    logp = _interp(fr.clamp_min(1e-12).log(), centres, torch.tensor(log_psd, dtype=torch.float64) * math.log(10))
    amp = (0.5 * logp).exp()
    amp[0, 0] = 0.0
    return amp


@cache
def _synthesize_photo(k: int, h: int, w: int, rounds: int = 2) -> torch.Tensor:
    """A (3, h, w) uint8 stand-in for frost photo k (FROST_PHOTOS[k]), from the fixed seed: per
    colour axis a Gaussian field with the photo's spectrum, `rounds` Heeger-Bergen rounds (impose
    the histogram, re-impose the spectrum's amplitudes), the histogram last; then the photo's
    colour basis, stds and mean, rounded to 8 bits."""
    photo = FROST_PHOTOS[k]
    g = torch.Generator().manual_seed(FROST_SEED + k)
    scale = max(photo["size"])
    n = h * w
    p = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    fields = []
    for j in range(3):
        amp = _spectrum_amplitude(h, w, scale, photo["psd"][j])
        spec = torch.fft.fft2(torch.randn(h, w, generator=g, dtype=torch.float64)) * amp
        target = spec.abs()
        z = torch.fft.ifft2(spec).real
        q = torch.tensor(photo["q"][j], dtype=torch.float64)
        ranked = _interp(p, torch.tensor(FROST_Q, dtype=torch.float64), q)
        ranked = (ranked - ranked.mean()) / ranked.std()  # the interpolated quantiles, moments exact
        for _ in range(rounds):
            z = _match_histogram(z, ranked)
            z = torch.fft.ifft2(torch.polar(target, torch.fft.fft2(z).angle())).real
        fields.append(_match_histogram(z, ranked))
    z = torch.stack(fields)  # (3, h, w), zero mean and unit std along each axis
    basis = torch.tensor(photo["basis"], dtype=torch.float64)  # rows: R, G, B; columns: axes
    std = torch.tensor(photo["std"], dtype=torch.float64)
    mean = torch.tensor(photo["mean"], dtype=torch.float64)
    rgb = torch.einsum("ca,a,ahw->chw", basis, std, z) + mean.view(3, 1, 1)
    return (rgb + 0.5).floor_().clamp_(0, 255).to(torch.uint8)


def _resize_taps(n_in: int, n_out: int, f: float):
    """cv2.resize's INTER_LINEAR taps along one axis: source pixels and 11-bit weights."""
    pos = (torch.arange(n_out, dtype=torch.float64) + 0.5) * (1.0 / f) - 0.5
    i0 = pos.floor()
    frac = (pos - i0).to(torch.float32)
    i0 = i0.long()
    w0 = ((1.0 - frac) * 2048).round().long()  # saturate_cast<short>((1 - fx) * INTER_RESIZE_COEF_SCALE)
    edge = (i0 < 0) | (i0 >= n_in - 1)  # outside: the edge pixel alone
    w0 = torch.where(edge, 2048, w0)
    return i0.clamp(0, n_in - 1), (i0 + 1).clamp(0, n_in - 1), w0, 2048 - w0


def _resize_linear(img: torch.Tensor, f: float) -> torch.Tensor:
    """cv2.resize(img, (0, 0), fx=f, fy=f) (INTER_LINEAR) of a (3, h, w) uint8 image, bit for bit:
    11-bit weights, the horizontal pass in integers, the vertical one as OpenCV's vector code
    rounds it, ((b0 * (s0 >> 4)) >> 16) + ((b1 * (s1 >> 4)) >> 16) + 2) >> 2."""
    _, h, w = img.shape
    oh, ow = round(h * f), round(w * f)
    r0, r1, b0, b1 = _resize_taps(h, oh, f)
    c0, c1, a0, a1 = _resize_taps(w, ow, f)
    x = img.to(torch.int64)
    rows = x[:, :, c0] * a0 + x[:, :, c1] * a1  # (3, h, ow)
    s0, s1 = rows[:, r0] >> 4, rows[:, r1] >> 4
    y = (((b0.view(-1, 1) * s0) >> 16) + ((b1.view(-1, 1) * s1) >> 16) + 2) >> 2
    return y.clamp_(0, 255).to(torch.uint8)


def _coverage(n: int, crop: int) -> torch.Tensor:
    """The share of crops (starts 0 .. n - crop - 1) covering each of n positions."""
    starts = torch.arange(max(n - crop, 1), dtype=torch.float64)
    pos = torch.arange(n, dtype=torch.float64).view(-1, 1)
    c = ((pos >= starts) & (pos < starts + crop)).sum(1).to(torch.float64)
    return c / c.sum()


@cache
def frost_plate(k: int, table: str, min_h: int = 0, min_w: int = 0) -> torch.Tensor:
    """The (3, h, w) uint8 plate standing in for frost photo k as the table's script uses it
    (resized by FROST_RESIZE[table]), at least (min_h + 1, min_w + 1) after resizing (a plate
    larger than the photo where an image is too large for it, where the reference would fail),
    its channels set to the photo's mean and std over the table's crops (FROST_CROP_STATS)."""
    f = FROST_RESIZE[table]
    ph, pw = FROST_PHOTOS[k]["size"]
    s = 1.0 if f is None else f
    need_h = max(ph, math.ceil((min_h + 2) / s))
    need_w = max(pw, math.ceil((min_w + 2) / s))
    plate = _synthesize_photo(k, need_h, need_w)
    if f is not None:
        plate = _resize_linear(plate, f)
    _, h, w = plate.shape
    side = FROST_SIDE[table]
    wgt = _coverage(h, min(side, h - 1)).view(-1, 1) * _coverage(w, min(side, w - 1)).view(1, -1)
    v = plate.to(torch.float64)
    mu = (v * wgt).sum((1, 2), keepdim=True)
    sd = ((v - mu) ** 2 * wgt).sum((1, 2), keepdim=True).sqrt()
    t_mu, t_sd = (torch.tensor(a, dtype=torch.float64).view(3, 1, 1) for a in FROST_CROP_STATS[table][k])
    v = (v - mu) * (t_sd / sd) + t_mu
    return (v + 0.5).floor_().clamp_(0, 255).to(torch.uint8)


@cache
def _frost_lut(w_img: float, w_frost: float) -> torch.Tensor:
    """np.uint8(np.clip(w_img * level + w_frost * frost, 0, 255)) / 255 for every pair of bytes,
    (256 * 256,) float32, indexed by level * 256 + frost (float64 arithmetic, as the reference)."""
    lv = torch.arange(256, dtype=torch.float64)
    return _bytes(w_img * lv.view(-1, 1) + w_frost * lv.view(1, -1)).flatten()


def frost_crops(u: torch.Tensor, table: str, h: int, w: int) -> torch.Tensor:
    """(N, 3, h, w) uint8 crops of the frost plates for the (N, 3) uniforms u (photo, crop row,
    crop column): photo FROST_CHOICE[floor(5 u0)], crop start floor(u (side - crop)), the
    reference's np.random.randint(5) and np.random.randint(0, side - crop)."""
    n = u.shape[0]
    u = u.to(torch.float64)
    choice = torch.tensor(FROST_CHOICE)[(u[:, 0] * 5).floor().long().clamp(0, 4)]
    out = torch.empty(n, 3, h, w, dtype=torch.uint8)
    for k in sorted(set(FROST_CHOICE)):
        sel = (choice == k).nonzero().flatten()
        if len(sel) == 0:
            continue
        plate = frost_plate(k, table, h, w)
        _, ph, pw = plate.shape
        top = (u[sel, 1] * (ph - h)).floor().long().clamp(0, ph - h - 1)
        left = (u[sel, 2] * (pw - w)).floor().long().clamp(0, pw - w - 1)
        windows = plate.unfold(1, h, 1).unfold(2, w, 1)  # (3, ph - h + 1, pw - w + 1, h, w), a view
        out[sel] = windows[:, top, left].transpose(0, 1)
    return out


def frost(x: torch.Tensor, severity: int, table: str, rand: Rand) -> torch.Tensor:
    """c0 * x + c1 * (a random crop of a random frost plate), as the reference with its photos."""
    w_img, w_frost = _param("frost", table, severity)
    u = rand.uniform(3)
    return _chunked(x, lambda xs, s, e: frost_from_draws(xs, w_img, w_frost, table, u[s:e]))


def frost_from_draws(x: torch.Tensor, w_img: float, w_frost: float, table: str, u: torch.Tensor) -> torch.Tensor:
    """The frost of the (N, 3, H, W) batch given the (N, 3) uniforms of frost_crops."""
    n, c, h, w = x.shape
    crops = frost_crops(u, table, h, w).to(x.device)
    # a byte in, a byte out: one lookup per pixel
    lut = _frost_lut(float(w_img), float(w_frost)).to(x.device)
    idx = (x * 255.0 + 0.5).to(torch.int32).mul_(256).add_(crops)  # x's byte (x on [0, 1])
    return lut.index_select(0, idx.view(-1)).view(n, c, h, w)


# --------------------------------------------------------------------------- spatter

def _pad1(a: torch.Tensor, reflect: bool) -> torch.Tensor:
    """(N, H, W) -> (N, H+2, W+2): BORDER_REFLECT_101 (reflect) or BORDER_REPLICATE, any dtype."""
    n, h, w = a.shape
    out = a.new_empty(n, h + 2, w + 2)
    out[:, 1:-1, 1:-1] = a
    r0, r1 = (1, h - 2) if reflect else (0, h - 1)
    c0, c1 = (1, w - 2) if reflect else (0, w - 1)
    out[:, 0, 1:-1] = a[:, r0]
    out[:, -1, 1:-1] = a[:, r1]
    out[:, :, 0] = out[:, :, c0 + 1]
    out[:, :, -1] = out[:, :, c1 + 1]
    return out


def _replicate1(a: torch.Tensor) -> torch.Tensor:
    return _pad1(a, reflect=False)


def _reflect1(a: torch.Tensor) -> torch.Tensor:
    return _pad1(a, reflect=True)


def _box3_sum(a: torch.Tensor) -> torch.Tensor:
    """Sums over 3x3 windows (BORDER_REFLECT_101) of (N, H, W), in a's dtype."""
    p = _reflect1(a)
    r = p[:, :, :-2] + p[:, :, 1:-1] + p[:, :, 2:]
    return r[:, :-2] + r[:, 1:-1] + r[:, 2:]


_TG22 = int(0.4142135623730950488016887242097 * (1 << 15) + 0.5)  # OpenCV canny.cpp, CANNY_SHIFT 15


def canny(img: torch.Tensor, low: int = 50, high: int = 150) -> torch.Tensor:
    """cv2.Canny(img, low, high) (aperture 3, L1 gradient) of a (N, H, W) uint8 batch -> bool edges.

    Sobel with replicated border; non-maximum suppression as OpenCV's canny.cpp (tan 22.5 deg in
    15-bit fixed point, magnitudes outside the image 0); then hysteresis, 8-connected growth
    from the pixels over `high` through the other pixels kept over `low`."""
    p = _replicate1(img.to(torch.int32))
    dx = (p[:, :-2, 2:] - p[:, :-2, :-2]) + 2 * (p[:, 1:-1, 2:] - p[:, 1:-1, :-2]) + (p[:, 2:, 2:] - p[:, 2:, :-2])
    dy = (p[:, 2:, :-2] - p[:, :-2, :-2]) + 2 * (p[:, 2:, 1:-1] - p[:, :-2, 1:-1]) + (p[:, 2:, 2:] - p[:, :-2, 2:])
    ax, ay = dx.abs(), dy.abs()
    m = ax + ay
    mp = F.pad(m, (1, 1, 1, 1))  # magnitudes outside the image are 0
    left, right = mp[:, 1:-1, :-2], mp[:, 1:-1, 2:]
    up, down = mp[:, :-2, 1:-1], mp[:, 2:, 1:-1]
    ul, ur, dl, dr = mp[:, :-2, :-2], mp[:, :-2, 2:], mp[:, 2:, :-2], mp[:, 2:, 2:]
    tg22x = ax * _TG22
    y = ay << 15
    horiz = y < tg22x
    vert = y > tg22x + (ax << 16)  # (never together with horiz)
    same = (dx ^ dy) >= 0  # diagonal with s = 1: previous row's j-1 and next row's j+1
    keep = torch.where(horiz, (m > left) & (m >= right),
                       torch.where(vert, (m > up) & (m >= down),
                                   torch.where(same, (m > ul) & (m > dr), (m > ur) & (m > dl))))
    cand = keep & (m > low)
    e = cand & (m > high)
    if torch.equal(cand, e):
        return e
    while True:  # hysteresis: grow the strong edges through 8-connected candidates
        grown = cand & _dilate3(e)
        if torch.equal(grown, e):
            return e
        e = grown


def _dilate3(e: torch.Tensor) -> torch.Tensor:
    """3x3 dilation of a (N, H, W) bool batch (nothing outside the image)."""
    h = e.clone()
    h[:, :, 1:] |= e[:, :, :-1]
    h[:, :, :-1] |= e[:, :, 1:]
    v = h.clone()
    v[:, 1:] |= h[:, :-1]
    v[:, :-1] |= h[:, 1:]
    return v


# cv2.distanceTransform(DIST_L2, 5): the 5x5 chamfer mask 1, 1.4, 2.1969 (float32). The wheel's
# OpenCV (IPP) adds in float32, two raster passes; that is what is reproduced here (older builds
# used 16-bit fixed point, a difference in the last digits).
_HV = 1.0
_DIAG = float(torch.tensor(1.4, dtype=torch.float32))
_LONG = float(torch.tensor(2.1969, dtype=torch.float32))


def _row_candidates(t: torch.Tensor, i: int, step: int) -> torch.Tensor:
    """min over the mask's taps in rows i - step and i - 2 step of t (float32 sums), and t[i]."""
    r2, r1 = t[:, i - 2 * step], t[:, i - step]
    c = torch.minimum(t[:, i, 2:-2], torch.minimum(r2[:, 1:-3], r2[:, 3:-1]) + _LONG)
    c = torch.minimum(c, torch.minimum(r1[:, 0:-4], r1[:, 4:]) + _LONG)
    c = torch.minimum(c, torch.minimum(r1[:, 1:-3], r1[:, 3:-1]) + _DIAG)
    return torch.minimum(c, r1[:, 2:-2] + _HV)


def distance_transform_5x5(zero: torch.Tensor, cap: float | None = None) -> torch.Tensor:
    """cv2.distanceTransform(src, cv2.DIST_L2, 5) of a (N, H, W) batch where `zero` marks src's
    zero pixels, float32: OpenCV's two raster passes of its 5x5 chamfer mask, each row's taps in
    the rows before it vectorized, the in-row tap (left in the forward pass, right in the
    backward one) as a running minimum of c[k] + (j - k), rounded once to float32 (equal to the
    repeated float32 additions for these magnitudes). `cap` bounds the result, as THRESH_TRUNC."""
    n, h, w = zero.shape
    big = 1e30
    t = torch.full((n, h + 4, w + 4), big, dtype=torch.float32, device=zero.device)
    t[:, 2:-2, 2:-2] = torch.where(zero, 0.0, big)
    ramp = torch.arange(w, dtype=torch.float64, device=zero.device)
    for i in range(2, h + 2):  # forward
        c = _row_candidates(t, i, 1).to(torch.float64)
        t[:, i, 2:-2] = ((c - ramp).cummin(1).values + ramp).to(torch.float32)
    for i in range(h + 1, 1, -1):  # backward
        c = _row_candidates(t, i, -1).to(torch.float64)
        t[:, i, 2:-2] = ((c + ramp).flip(1).cummin(1).values.flip(1) - ramp).to(torch.float32)
    d = t[:, 2:-2, 2:-2]
    return d if cap is None else d.clamp_max(cap)


def _equalize_hist(a: torch.Tensor) -> torch.Tensor:
    """cv2.equalizeHist of a (N, H, W) batch of integer levels 0..255 (int64)."""
    n = a.shape[0]
    flat = a.reshape(n, -1)
    total = flat.shape[1]
    hist = torch.zeros(n, 256, dtype=torch.int64, device=a.device).scatter_add_(1, flat, torch.ones_like(flat))
    first = (hist > 0).to(torch.int64).argmax(1, keepdim=True)  # the lowest level present
    h0 = hist.gather(1, first)
    cum = hist.cumsum(1) - h0  # sum over (first, i]
    scale = torch.tensor(255.0, dtype=torch.float32) / (total - h0).clamp_min(1).to(torch.float32)
    lut = torch.round(cum.to(torch.float32) * scale).clamp_(0, 255).to(torch.int64)
    lut = torch.where(torch.arange(256, device=a.device).view(1, -1) <= first, 0, lut)
    out = lut.gather(1, flat).view_as(a)
    constant = (h0 == total).view(n, 1, 1)
    return torch.where(constant, first.view(n, 1, 1), out)


_SPATTER_KERNEL = ((-2, -1, 0), (-1, 1, 1), (0, 1, 2))


def _water_dist(liquid_u8: torch.Tensor) -> torch.Tensor:
    """The reference's `dist` (float32) for the (N, H, W) uint8 levels of the liquid layer."""
    edges = canny(liquid_u8, 50, 150)
    dist = distance_transform_5x5(edges, cap=20.0)  # 255 - Canny is zero on the edges; THRESH_TRUNC 20
    # cv2.blur (3, 3) of float32: double sums times 1/9, to float32; .astype(np.uint8) truncates
    dist = (_box3_sum(dist.to(torch.float64)) * (1.0 / 9.0)).to(torch.float32).floor().to(torch.int64)
    dist = _equalize_hist(dist).to(torch.int32)
    # cv2.filter2D(dist, cv2.CV_8U, ker): correlation, BORDER_REFLECT_101, saturated to 0..255
    p = _reflect1(dist)
    h, w = dist.shape[1:]
    acc = torch.zeros_like(dist)
    for a, row in enumerate(_SPATTER_KERNEL):
        for b, k in enumerate(row):
            if k:
                acc.add_(p[:, a:a + h, b:b + w], alpha=k)
    dist = acc.clamp_(0, 255)
    # cv2.blur (3, 3) of uint8: OpenCV's fixed-point division by 9, ((s + 4) * 7282) >> 16
    s = _box3_sum(dist)
    return (((s + 4) * 7282) >> 16).to(torch.float32)


def _gaussian_float32(a: torch.Tensor, sigma: float) -> torch.Tensor:
    """skimage's gaussian of a float32 (N, H, W) batch as scipy computes it: each axis in turn
    (rows first) in float64, the result of each pass stored as float32."""
    radius = int(4.0 * float(sigma) + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    phi = torch.exp(-0.5 / float(sigma) ** 2 * t * t)
    phi = (phi / phi.sum()).to(a.device)
    y = a.unsqueeze(1).to(torch.float64)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="replicate"), phi.view(1, 1, -1, 1))
    y = y.to(torch.float32).to(torch.float64)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="replicate"), phi.view(1, 1, 1, -1))
    return y.to(torch.float32).squeeze(1)


def spatter_from_noise(x: torch.Tensor, c, noise: torch.Tensor) -> torch.Tensor:
    """The reference's spatter of the (N, 3, H, W) batch with parameters c, given the (N, H, W)
    standard normal draws behind its liquid layer."""
    loc, scale, sigma, threshold, intensity, mud = c
    x = _levels32(x)  # np.array(x, dtype=np.float32) / 255.
    liquid = noise.to(torch.float64) * scale + loc
    liquid = gaussian_filter(liquid.unsqueeze(1), sigma).squeeze(1)
    liquid = torch.where(liquid < threshold, 0.0, liquid)
    if mud == 0:
        # (liquid * 255).astype(np.uint8): truncation (wrapping above 255, as numpy's cast does)
        lu8 = torch.remainder((liquid * 255.0).floor(), 256).to(torch.int32)
        dist = _water_dist(lu8)
        m = lu8.to(torch.float32) * dist
        top = m.amax((1, 2), keepdim=True)
        m = torch.where(top > 0, m / top.clamp_min(1e-30), 0.0) * torch.tensor(intensity, dtype=torch.float32)
        # pale turquoise (175, 238, 238) / 255 added to x's channels 0, 1, 2
        color = torch.tensor([175 / 255., 238 / 255., 238 / 255.], dtype=torch.float32, device=x.device)
        y = (x + m.unsqueeze(1) * color.view(1, 3, 1, 1)).clamp(0, 1)
        return _bytes(y * torch.tensor(255.0, dtype=torch.float32))  # float32 as there
    m = (liquid > threshold).to(torch.float32)
    m = _gaussian_float32(m, intensity).unsqueeze(1)
    m = torch.where(m < 0.8, 0.0, m)
    color = torch.tensor([63 / 255., 42 / 255., 20 / 255.], dtype=torch.float32, device=x.device)
    y = (x * (1 - m) + color.view(1, 3, 1, 1) * m).clamp(0, 1)
    return _bytes(y * torch.tensor(255.0, dtype=torch.float32))


def spatter(x: torch.Tensor, severity: int, table: str, rand: Rand) -> torch.Tensor:
    """Water (severities with c[5] == 0) or mud drops from a thresholded, smoothed normal layer."""
    c = _param("spatter", table, severity)
    noise = rand.normal(*x.shape[-2:]).to(x.device)
    # chunks 8x larger: its row loops cost per call
    return _chunked(x, lambda xs, s, e: spatter_from_noise(xs, c, noise[s:e]), scale=8)


# --------------------------------------------------------------------------- snow

def snow_layer(noise: torch.Tensor, c, angle: torch.Tensor) -> torch.Tensor:
    """The reference's snow layer (N, 1, H, W) on the 0..1 scale (multiples of 1/255) for the
    (N, H, W) standard normal draws and the (N,) motion blur angles in degrees."""
    loc, scale, zoom, threshold, radius, sigma = c[:6]
    layer = noise.to(torch.float64).unsqueeze(1) * scale + loc
    if float(zoom) != 1.0:  # clipped_zoom by 1 is the identity (weights 0 and 1)
        layer = clipped_zoom(layer, float(zoom))
    layer = torch.where(layer < threshold, 0.0, layer)
    # PIL 'L' image of (np.clip(layer, 0, 1) * 255).astype(np.uint8), through wand's motion blur
    layer = (layer.clamp(0, 1) * 255.0).floor() / 255.0
    return motion_blur(layer, radius, sigma, angle, quantize=True)


_GRAY = [float(torch.tensor(v, dtype=torch.float32)) for v in (0.299, 0.587, 0.114)]


def _rgb2gray(x: torch.Tensor) -> torch.Tensor:
    """cv2.cvtColor(x, cv2.COLOR_RGB2GRAY) of float32 images, (N, 3, H, W) -> (N, 1, H, W): the
    float32 coefficients 0.299, 0.587, 0.114 in the order and with the fused multiply-adds of
    OpenCV's vector code, fma(B, cb, fma(R, cr, G * cg)) (bit for bit on the tested wheel)."""
    r, g, b = (x[:, i:i + 1].to(torch.float64) for i in range(3))
    cr, cg, cb = _GRAY
    y = (g * cg).to(torch.float32).to(torch.float64)
    y = (r * cr + y).to(torch.float32).to(torch.float64)
    return (b * cb + y).to(torch.float32)


def snow_from_draws(x: torch.Tensor, c, noise: torch.Tensor, angle: torch.Tensor,
                    layer: torch.Tensor | None = None) -> torch.Tensor:
    """The reference's snow of the (N, 3, H, W) batch with parameters c, given the (N, H, W)
    standard normal draws behind its layer and the (N,) blur angles in degrees (or the layer
    itself, snow_layer of them)."""
    layer = (snow_layer(noise, c, angle) if layer is None else layer).to(torch.float64)
    weight = c[6]
    x = _levels32(x)  # np.array(x, dtype=np.float32) / 255.
    gray = _rgb2gray(x)
    x = weight * x + (1 - weight) * torch.maximum(x, gray * 1.5 + 0.5)
    # (x + layer + rot180(layer)) in float64 there: float32 here, float64 where truncation is close
    n, c, h, w = x.shape
    layer32 = layer.to(torch.float32)
    v = (x + layer32 + layer32.flip(2, 3)).mul_(255.0)

    def exact64(i: torch.Tensor) -> torch.Tensor:
        img, pix = i // (c * h * w), i % (h * w)
        flipped = layer.reshape(n, h * w)[img, h * w - 1 - pix]  # rot180: pixel p reads pixel hw - 1 - p
        y = x.view(-1)[i].to(torch.float64) + layer.reshape(n, h * w)[img, pix] + flipped
        return y.clamp(0, 1) * 255.0

    return _exact_bytes(v, exact64)


def snow(x: torch.Tensor, severity: int, table: str, rand: Rand) -> torch.Tensor:
    """x lifted towards its grey (c6), plus the motion-blurred snow layer and its rot180 copy."""
    c = _param("snow", table, severity)
    noise = rand.normal(*x.shape[-2:]).to(x.device)  # the layer, then the blur angle, as the reference draws
    angle = rand.uniform(1)[:, 0].to(torch.float64) * 90.0 - 135.0  # np.random.uniform(-135, -45)
    # the layer in one go (its motion blur costs per call), the blend in cache-sized chunks
    layer = snow_layer(noise, c, angle)
    return _chunked(x, lambda xs, s, e: snow_from_draws(xs, c, noise[s:e], angle[s:e], layer[s:e]))


FUNCTIONS = {"fog": fog, "frost": frost, "snow": snow, "spatter": spatter}

APPROXIMATE: dict[str, str] = {
    "frost": "the reference's frost photographs cannot ship: crops come from procedural plates "
             "matching each photo's size, colour, histogram and power spectrum, not its crystals",
}
