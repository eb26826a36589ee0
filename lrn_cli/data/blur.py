"""The blur family of the corruption benchmark (Hendrycks & Dietterich 2019, github
hendrycks/robustness, ImageNet-C/create_c): gaussian_blur, defocus_blur, glass_blur, motion_blur,
zoom_blur, as batched torch code.

Every corruption is `fn(x, severity, table, rand) -> y` (see `lrn_cli.data.imageops`): x float32
(N, 3, H, W) on [0, 1], y float32 on the 0..1 scale before the caller's clip and truncation.

Two primitives are shared with other families (snow uses the motion blur):

* `gaussian_filter(x, sigma)`: skimage.filters.gaussian(..., channel_axis=-1) semantics, i.e.
  scipy.ndimage.gaussian_filter per channel, truncate 4.0, mode 'nearest' (edge replicate).
* `motion_blur(x, radius, sigma, angle)`: ImageMagick's MotionBlurImage (MagickCore/effect.c):
  a one-sided Gaussian of `GetOptimalKernelWidth1D(radius, sigma)` taps (2*ceil(radius)+1 when
  radius > 0), weights exp(-i^2 / (2 sigma^2)) for i = 0..width-1 normalised to sum 1, tap i
  sampling the pixel at (x + ceil(i cos(angle) - 0.5), y + ceil(i sin(angle) - 0.5)) with edge
  virtual pixels; `quantize=True` adds the reference's round trip through a Q16 pixel and an
  8-bit PNG (rounded to the quantum, then truncated to 8 bits, as measured on ImageMagick 6.9).
* `clipped_zoom(x, zoom)`: the reference's clipped_zoom (scipy.ndimage.zoom order 1 of the centre
  crop, trimmed), in x's dtype.

Fidelity (tests/test_corruptions_blur.py checks each against tests/reference_c/blur.py):
* gaussian_blur, defocus_blur: computed in float64 like the reference (scipy's summation order
  for the Gaussian) and handed back so that the caller's truncation lands where the reference's
  float64 np.uint8 does: the reference's bytes, but for float rounding at an exact level.
* zoom_blur: one sparse linear map in exact arithmetic (see `_exact_weights`), within float
  rounding of the reference's float32 sums (a level off in about 0.1% of the values).
* motion_blur: ImageMagick's kernel, offsets and 8-bit round trip; given the angle, wand's bytes.
* glass_blur: the reference's loop, exactly (see `_glass_shuffle`): given the same (dx, dy) draws,
  the reference's bytes. Note the reference's "swap" of NumPy row views is a copy.
The random ones draw from torch generators (`imageops.Rand`), so they match the reference in
distribution. All work elementwise in a fixed order or in exact arithmetic, so an image's bytes
do not depend on its batch.
"""
from __future__ import annotations

import math
import warnings
from functools import cache, lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from .imageops import Rand

__all__ = [
    "APPROXIMATE",
    "FUNCTIONS",
    "PARAMS",
    "clipped_zoom",
    "defocus_blur",
    "disk_kernel",
    "gaussian_blur",
    "gaussian_filter",
    "glass_blur",
    "motion_blur",
    "motion_blur_corruption",
    "motion_offsets",
    "quantize_magick8",
    "zoom_blur",
    "zoom_factors",
]


# --------------------------------------------------------------------------- parameters

# Literal per-table severity lists of the reference (make_cifar_c.py, make_tinyimagenet_c.py,
# make_imagenet_c.py). zoom_blur's entries are np.arange(start, stop, step) arguments.
PARAMS: dict[str, dict[str, list]] = {
    "gaussian_blur": {
        "cifar10": [.4, .6, 0.7, .8, 1],
        "tinyimagenet": [.5, .75, 1, 1.25, 1.5],
        "imagenet": [1, 2, 3, 4, 6],
    },
    "glass_blur": {  # (sigma, max_delta, iterations)
        "cifar10": [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],
        "tinyimagenet": [(0.1, 1, 1), (0.5, 1, 1), (0.6, 1, 2), (0.7, 2, 1), (0.9, 2, 2)],
        "imagenet": [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)],
    },
    "defocus_blur": {  # (radius, alias_blur)
        "cifar10": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
        "tinyimagenet": [(0.5, 0.6), (1, 0.1), (1.5, 0.1), (2.5, 0.01), (3, 0.1)],
        "imagenet": [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)],
    },
    "motion_blur": {  # (radius, sigma); angle ~ U(-45, 45) per image
        "cifar10": [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)],
        "tinyimagenet": [(10, 1), (10, 1.5), (10, 2), (10, 2.5), (12, 3)],
        "imagenet": [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)],
    },
    "zoom_blur": {  # zoom factors np.arange(start, stop, step)
        "cifar10": [(1, 1.06, 0.01), (1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.01), (1, 1.26, 0.01)],
        "tinyimagenet": [(1, 1.06, 0.01), (1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.01),
                         (1, 1.26, 0.01)],
        "imagenet": [(1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.02), (1, 1.26, 0.02), (1, 1.31, 0.03)],
    },
}


def _param(name: str, table: str, severity: int):
    if not 1 <= severity <= 5:
        raise ValueError(f"severity must be 1..5, got {severity}")
    return PARAMS[name][table][severity - 1]


# --------------------------------------------------------------------------- batching

# Values per chunk of images: whole-batch temporaries of a few MB are slower (allocation, cache
# misses) than the same ops run over chunks that stay in cache. Results are per image anyway.
CHUNK_VALUES = 1 << 18


def _per_chunk(x: torch.Tensor, fn, *per_image: torch.Tensor, values: int = CHUNK_VALUES) -> torch.Tensor:
    """fn(x[a:b], *(t[a:b] for t in per_image)) over chunks of the batch, concatenated."""
    n = x.shape[0]
    step = max(1, values // max(1, x[0].numel()))
    if n <= step:
        return fn(x, *per_image)
    return torch.cat([fn(x[a:a + step], *(t[a:a + step] for t in per_image)) for a in range(0, n, step)])


# Exact arithmetic: a linear filter whose weights are multiples of 2^-_W_BITS applied to an image
# of integers (grey levels times 256) sums exactly in float64 (every partial sum needs under 53
# bits), so the result is the same whatever the summation order of the kernel doing it (BLAS,
# sparse, convolution, GPU) and whatever the batch. Exact grey levels lose nothing; other values
# move by at most 1/512 of a level, the weights by at most 2^-32.
_W_BITS = 31
_X_SCALE = 255.0 * 256.0


def _exact_weights(w: torch.Tensor) -> torch.Tensor:
    return (w.to(torch.float64) * 2.0 ** _W_BITS).round_() / 2.0 ** _W_BITS


def _exact_input(x: torch.Tensor) -> torch.Tensor:
    return (x.to(torch.float64) * _X_SCALE).round_()


def _exact_levels(x: torch.Tensor) -> torch.Tensor:
    """x in float64, the grey levels of a uint8/255 image made exact (float32 x / 255 carries a
    rounding error that would move the reference's float64 truncations); other values kept."""
    if x.dtype == torch.float32:  # first in float32: within 1e-4 there, within 1e-3 in float64
        scaled = x * 255.0
        levels = scaled.round()
        if bool((scaled.sub_(levels).abs_() < 1e-4).all()):  # (as always for uint8 / 255 input)
            return levels.to(torch.float64).div_(255.0)
    x64 = x.to(torch.float64)
    scaled = x64 * 255.0
    levels = scaled.round()
    near = scaled.sub_(levels).abs_() < 1e-3
    if bool(near.all()):  # (as always for uint8 / 255 input)
        return levels.div_(255.0)
    return torch.where(near, levels.div_(255.0), x64)


def _truncating_as_reference(y: torch.Tensor) -> torch.Tensor:
    """A float64 result on the 0..1 scale as float32 that the caller's clip, x255 and truncation
    turn into the bytes the reference's np.uint8(np.clip(y, 0, 1) * 255) gives in float64: each
    value moved by under 1/100 of a level into the interior of its float64 level, so that the
    caller's epsilon and float32 rounding cannot push it across (flat regions of the reference
    land a hair under a level when its kernel sums to a hair under 1; this keeps them there)."""
    s = y.clamp(0.0, 1.0).mul_(255.0)
    level = s.floor()
    return s.sub_(level).clamp_(0.0, 0.99).add_(level).div_(255.0).to(torch.float32)


# --------------------------------------------------------------------------- gaussian filter

@cache
def _gaussian_weights(sigma: float, truncate: float) -> tuple[float, ...]:
    """scipy.ndimage's 1-D Gaussian: radius int(truncate*sigma + 0.5), exp(-x^2/(2 sigma^2)),
    normalised to sum 1 (float64)."""
    radius = int(truncate * float(sigma) + 0.5)
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    phi = np.exp(-0.5 / (float(sigma) ** 2) * t ** 2)
    return tuple((phi / phi.sum()).tolist())


def _symmetric_axis(x: torch.Tensor, w: tuple[float, ...], dim: int) -> torch.Tensor:
    """scipy.ndimage.correlate1d of x along dim (2 or 3) with the symmetric kernel w (odd length),
    mode 'nearest', summed in scipy's order: centre * w[r], then for j = r..1 adds
    (left_j + right_j) * w[r + j] (NI_Correlate1D's symmetric branch), so float64 input gives
    scipy's float64 result to the last bit in most pixels."""
    r = (len(w) - 1) // 2
    if r == 0:
        return x * w[0]
    size = x.shape[dim]
    p = _replicate_pad(x, 0, 0, r, r) if dim == 2 else _replicate_pad(x, r, r, 0, 0)
    out = p.narrow(dim, r, size) * w[r]
    tmp = torch.empty_like(out)  # (the same roundings as out += (left + right) * w, no temporaries)
    for j in range(r, 0, -1):
        torch.add(p.narrow(dim, r - j, size), p.narrow(dim, r + j, size), out=tmp)
        out += tmp.mul_(w[r + j])
    return out


def gaussian_filter(x: torch.Tensor, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """skimage.filters.gaussian(image, sigma, channel_axis=-1) of every image of the (N, C, H, W)
    batch: each channel filtered by scipy.ndimage.gaussian_filter (truncate 4.0, mode 'nearest':
    rows first, then columns), in x's dtype. sigma 0 (or a radius of 0) returns a copy.
    Elementwise in a fixed order, so an image's result never depends on its batch."""
    if x.dim() != 4:
        raise ValueError(f"expected (N, C, H, W), got {tuple(x.shape)}")
    if sigma <= 1e-15 or int(truncate * float(sigma) + 0.5) == 0:
        return x.clone()
    k = _gaussian_weights(float(sigma), float(truncate))
    return _per_chunk(x, lambda c: _symmetric_axis(_symmetric_axis(c, k, 2), k, 3))


# --------------------------------------------------------------------------- motion blur

_MAGICK_EPSILON = 1.0e-12  # MagickEpsilon (IM6 and IM7)
_QUANTUM_SCALE = 1.0 / 65535.0  # QuantumScale of a Q16 build
_SQ2PI = 2.50662827463100024161235523934010416269302368164062


def _optimal_kernel_width_1d(radius: float, sigma: float) -> int:
    """MagickCore/gem.c GetOptimalKernelWidth1D."""
    if radius > _MAGICK_EPSILON:
        return int(2.0 * math.ceil(radius) + 1.0)
    gamma = abs(sigma)
    if gamma <= _MAGICK_EPSILON:
        return 3
    alpha = 1.0 / (2.0 * gamma * gamma)
    beta = 1.0 / (_SQ2PI * gamma)
    width = 5
    while True:
        j = (width - 1) // 2
        normalize = sum(math.exp(-(i * i) * alpha) * beta for i in range(-j, j + 1))
        value = math.exp(-(j * j) * alpha) * beta / normalize
        if value < _QUANTUM_SCALE or value < _MAGICK_EPSILON:
            break
        width += 2
    return width - 2


@cache
def _motion_weights(radius: float, sigma: float) -> tuple[float, ...]:
    """MagickCore/effect.c GetMotionBlurKernel: width taps exp(-i^2/(2 sigma^2)), sum 1."""
    width = _optimal_kernel_width_1d(radius, sigma)
    s = sigma if abs(sigma) >= _MAGICK_EPSILON else _MAGICK_EPSILON
    k = [math.exp(-(i * i) / (2.0 * s * s)) / (_SQ2PI * s) for i in range(width)]
    total = sum(k)
    return tuple(v / total for v in k)


def motion_offsets(width: int, angle: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The (N, width) column and row offsets of MotionBlurImage's taps for angles in degrees."""
    a = angle.detach().to(torch.float64).cpu().reshape(-1, 1) * (math.pi / 180.0)
    px, py = width * torch.sin(a), width * torch.cos(a)
    hyp = torch.hypot(px, py)
    i = torch.arange(width, dtype=torch.float64).view(1, -1)
    ox = torch.ceil(i * py / hyp - 0.5).long()
    oy = torch.ceil(i * px / hyp - 0.5).long()
    return ox, oy


def quantize_magick8(y: torch.Tensor) -> torch.Tensor:
    """A [0, 1] float image as the reference reads back wand's result: rounded to a Q16 quantum,
    then written to an 8-bit PNG, which (as measured on ImageMagick 6.9 Q16) truncates
    quantum/257. Back on the 0..1 scale (multiples of 1/255)."""
    return _quantize_magick8_(y.clone())


def _quantize_magick8_(y: torch.Tensor) -> torch.Tensor:
    """quantize_magick8 in place (float32 suffices: q/257 is an integer or at least 1/257 off)."""
    q = y.clamp_(0.0, 1.0).mul_(65535.0).add_(0.5).floor_()
    return q.div_(257.0).floor_().div_(255.0)


def _replicate_pad(x: torch.Tensor, left: int, right: int, top: int, bottom: int) -> torch.Tensor:
    """F.pad(x, (left, right, top, bottom), mode="replicate") of (N, C, H, W), as plain copies
    (faster than the padding kernel)."""
    if left + right + top + bottom == 0:
        return x
    n, c, h, w = x.shape
    out = x.new_empty(n, c, h + top + bottom, w + left + right)
    out[:, :, top:top + h, left:left + w] = x
    if left:
        out[:, :, top:top + h, :left] = x[:, :, :, :1]
    if right:
        out[:, :, top:top + h, left + w:] = x[:, :, :, w - 1:]
    if top:
        out[:, :, :top] = out[:, :, top:top + 1]
    if bottom:
        out[:, :, top + h:] = out[:, :, top + h - 1:top + h]
    return out


def motion_blur(x: torch.Tensor, radius: float, sigma: float, angle: torch.Tensor | float,
                quantize: bool = False) -> torch.Tensor:
    """ImageMagick's MotionBlurImage(radius, sigma, angle) of every image of the (N, C, H, W)
    batch, angle an (N,) tensor of degrees (or one number for all). Out-of-image taps read the
    nearest edge pixel (ImageMagick's default edge virtual pixels). quantize=True rounds the
    result as ImageMagick Q16 writing an 8-bit PNG does (what the reference reads back).

    The images are sorted by angle and edge-padded; then for each tap in turn, the runs of
    consecutive images that share its offset add their shifted window times the tap's weight
    (taps with many runs gather each image's window instead). Either way every value is the
    same product and the same sum over the taps in order, elementwise, so an image's result
    never depends on its batch."""
    if x.dim() != 4:
        raise ValueError(f"expected (N, C, H, W), got {tuple(x.shape)}")
    n, c, h, w = x.shape
    angle = torch.as_tensor(angle, dtype=torch.float64)
    if angle.dim() == 0:
        angle = angle.expand(n)
    if angle.numel() != n:
        raise ValueError(f"{angle.numel()} angles for {n} images")
    if n == 0:
        return x.clone()
    k = _motion_weights(float(radius), float(sigma))
    width = len(k)
    ox, oy = motion_offsets(width, angle)
    order = torch.argsort(angle.detach().cpu().reshape(-1), stable=True)
    ox, oy = ox[order], oy[order]
    # edge padding just wide enough for every offset
    left, right = max(0, -int(ox.min())), max(0, int(ox.max()))
    top, bottom = max(0, -int(oy.min())), max(0, int(oy.max()))
    sorted_x = x.index_select(0, order.to(x.device))
    xp = _replicate_pad(sorted_x, left, right, top, bottom)
    hp, wp = h + top + bottom, w + left + right
    # runs of consecutive (sorted) images with the same offset, per tap
    key = (oy + top) * wp + (ox + left)  # (N, width): the window's flat start in the padded image
    change = torch.ones(n, width, dtype=torch.bool)
    change[1:] = key[1:] != key[:-1]
    counts = change.sum(0).tolist()
    firsts = change.t().nonzero()[:, 1].tolist()  # tap by tap, each run's first image
    starts, at = [], 0
    for count in counts:
        starts.append(firsts[at:at + count])
        at += count
    keys = key.tolist()
    acc = xp[:, :, top:top + h, left:left + w] * k[0]  # tap 0 is the pixel itself
    flat = base = tap = None
    for j in range(1, width):
        runs = starts[j]
        if len(runs) * MOTION_RUN_COST > n * c * h * w:  # many short runs: one gather for the tap
            if flat is None:
                flat = xp.reshape(n, c, hp * wp)
                rows = torch.arange(h).view(h, 1) * wp + torch.arange(w).view(1, w)
                base = rows.view(1, 1, h * w).to(x.device)
            off = key[:, j].to(x.device).view(n, 1, 1)
            idx = (base + off).expand(n, c, h * w)
            acc += (flat.gather(2, idx) * k[j]).view(n, c, h, w)
            continue
        if tap is None:
            xp = xp.contiguous()
            # windows[i, s]: image i's (C, H, W) window starting at flat offset s of its padding
            span = (hp - h) * wp + (wp - w) + 1
            windows = xp.as_strided((n, span, c, h, w), (c * hp * wp, 1, hp * wp, wp, 1))
            tap = torch.empty_like(acc)
        bounds = runs + [n]
        kj = k[j]
        for a, b in zip(bounds[:-1], bounds[1:]):
            torch.mul(windows[a:b, keys[a][j]], kj, out=tap[a:b])
        acc += tap
    if quantize:
        _quantize_magick8_(acc)
    return acc.index_select(0, torch.argsort(order).to(x.device))  # back to the batch's order


# a run of images costs about as much as a gather of this many values more than a slice does
MOTION_RUN_COST = 4000


# --------------------------------------------------------------------------- corruptions

def gaussian_blur(x: torch.Tensor, severity: int, table: str, rand: Rand) -> torch.Tensor:
    """skimage gaussian of sigma c (in pixels of the table)."""
    sigma = _param("gaussian_blur", table, severity)
    return _per_chunk(x, lambda xc: _truncating_as_reference(gaussian_filter(_exact_levels(xc), sigma)))


@cache
def _disk_np(radius: float, alias_blur: float) -> np.ndarray:
    """The reference's disk(radius, alias_blur), float32, with cv2.GaussianBlur reproduced:
    a getGaussianKernel(ksize, sigma) of float32 taps on each axis, BORDER_REFLECT_101."""
    if radius <= 8:
        L = np.arange(-8, 8 + 1)
        ksize = 3
    else:
        L = np.arange(-radius, radius + 1)
        ksize = 5
    X, Y = np.meshgrid(L, L)
    d = np.array((X ** 2 + Y ** 2) <= radius ** 2, dtype=np.float32)
    d /= np.sum(d)
    # cv2.getGaussianKernel for CV_32F: float taps exp(-t^2/(2 s^2)), scaled by 1/sum in double
    t = np.arange(ksize, dtype=np.float64) - (ksize - 1) * 0.5
    g = np.exp(-(t * t) / (2.0 * alias_blur * alias_blur)).astype(np.float32)
    g = (g.astype(np.float64) * (1.0 / float(g.astype(np.float64).sum()))).astype(np.float32)
    r = ksize // 2
    out = d.astype(np.float64)
    for axis in (1, 0):  # rows then columns; separable
        pad = [(0, 0), (0, 0)]
        pad[axis] = (r, r)
        p = np.pad(out, pad, mode="reflect")  # numpy 'reflect' == BORDER_REFLECT_101
        acc = np.zeros_like(out)
        for i in range(ksize):
            sl = [slice(None), slice(None)]
            sl[axis] = slice(i, i + out.shape[axis])
            acc += g[i] * p[tuple(sl)]
        out = acc.astype(np.float32).astype(np.float64)
    return out.astype(np.float32)


def disk_kernel(radius: float, alias_blur: float) -> torch.Tensor:
    """The reference's defocus kernel as a float32 tensor (its full window)."""
    return torch.from_numpy(_disk_np(float(radius), float(alias_blur)).copy())


@cache
def _disk_cropped(radius: float, alias_blur: float) -> torch.Tensor:
    """The disk without its all-zero border rows and columns (same filter, fewer taps)."""
    k = disk_kernel(radius, alias_blur).to(torch.float64)
    nz = (k != 0).any(0).nonzero().flatten()
    m = int(min(nz.min().item(), k.shape[0] - 1 - nz.max().item()))
    return k[m:k.shape[0] - m, m:k.shape[1] - m].contiguous()


def _fft_size(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n (fast FFT lengths)."""
    m = n
    while True:
        r = m
        for f in (2, 3, 5):
            while r % f == 0:
                r //= f
        if r == 1:
            return m
        m += 1


def _filter2d_reflect(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """cv2.filter2D(channel, -1, k) of every channel (correlation, centred anchor,
    BORDER_REFLECT_101), in x's dtype. Up to 25 taps: shifted slices summed in a fixed order
    (elementwise, so batch-independent); more: a real FFT of the padded image (as cv2 itself
    switches to a DFT for large kernels)."""
    h, w = x.shape[-2:]
    r = (k.shape[0] - 1) // 2
    if r >= min(h, w):
        raise ValueError(f"a {k.shape[0]}-tap filter needs images over {r} px")
    p = F.pad(x, (r, r, r, r), mode="reflect")
    taps = _nonzero_taps(k)
    if len(taps) > 25:
        # circular correlation over at least the padded size: the valid part never wraps
        hp, wp = _fft_size(h + 2 * r), _fft_size(w + 2 * r)
        kf = torch.fft.rfft2(torch.flip(k.to(x.dtype).to(x.device), (0, 1)), s=(hp, wp))
        y = torch.fft.irfft2(torch.fft.rfft2(p, s=(hp, wp)) * kf, s=(hp, wp))
        return y[:, :, 2 * r:2 * r + h, 2 * r:2 * r + w].contiguous()
    i, j, v = taps[0]
    out = p[:, :, i:i + h, j:j + w] * v
    tmp = torch.empty_like(out)  # (the same roundings as out += p[...] * v, no temporaries)
    for i, j, v in taps[1:]:
        out += torch.mul(p[:, :, i:i + h, j:j + w], v, out=tmp)
    return out


_TAPS: dict[int, tuple[torch.Tensor, list]] = {}


def _nonzero_taps(k: torch.Tensor) -> list[tuple[int, int, float]]:
    """(row, column, weight) of k's nonzero entries in raster order (kept per kernel object: the
    kernels come from caches)."""
    hit = _TAPS.get(id(k))
    if hit is not None and hit[0] is k:
        return hit[1]
    kk = k.tolist()
    taps = [(i, j, float(v)) for i, row in enumerate(kk) for j, v in enumerate(row) if v != 0]
    if len(_TAPS) > 64:
        _TAPS.clear()
    _TAPS[id(k)] = (k, taps)
    return taps


def defocus_blur(x: torch.Tensor, severity: int, table: str, rand: Rand) -> torch.Tensor:
    """cv2.filter2D of every channel with the reference's anti-aliased disk (BORDER_REFLECT_101),
    in float64 like the reference, truncating where the reference's float64 does."""
    radius, alias = _param("defocus_blur", table, severity)
    k = _disk_cropped(float(radius), float(alias))
    return _per_chunk(x, lambda xc: _truncating_as_reference(_filter2d_reflect(_exact_levels(xc), k)))


def _glass_shuffle(x: torch.Tensor, delta: int, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """One pass of the reference's "swap" loop, exactly, for the whole batch.

    The reference runs, for h from H-delta down to delta+1 and, within each h, w from W-delta
    down to delta+1: `x[h, w], x[h', w'] = x[h', w'], x[h, w]` with (h', w') = (h+dy, w+dx).
    On NumPy row views that is a copy, x[h, w] = x[h', w'] (the second assignment writes back
    what it just read). Processed in that order, pixel p ends up with the value its source had
    when p was visited: the source's final value if the source was visited before p, its
    original value otherwise. Following sources while they were visited earlier is a chain
    that ends in a "terminal" pixel; pointer jumping resolves all chains at once.

    dx, dy: (N, nh, nw) int64 draws, row k / column l for h = H-delta-k, w = W-delta-l."""
    n, c, h, w = x.shape
    dev = x.device
    dx, dy = dx.to(dev), dy.to(dev)
    hs = torch.arange(h - delta, delta, -1, device=dev)
    ws = torch.arange(w - delta, delta, -1, device=dev)
    nh, nw = len(hs), len(ws)
    if nh <= 0 or nw <= 0:
        return x
    ph = hs.view(1, nh, 1).expand(n, nh, nw)
    pw = ws.view(1, 1, nw).expand(n, nh, nw)
    sh, sw = ph + dy, pw + dx
    p_idx = (ph * w + pw).reshape(n, -1)
    s_idx = (sh * w + sw).reshape(n, -1)
    # visited before p: source inside the visited block and later in raster order
    visited = (sh >= delta + 1) & (sh <= h - delta) & (sw >= delta + 1) & (sw <= w - delta)
    earlier = visited & ((sh > ph) | ((sh == ph) & (sw > pw)))
    ident = torch.arange(h * w, device=dev).view(1, -1).expand(n, -1)
    final = ident.clone().scatter_(1, p_idx, s_idx)  # every pixel's source
    if bool(earlier.any()):  # (never where sources lie up and left, as for delta 1)
        jump = ident.clone().scatter_(1, p_idx, torch.where(earlier.reshape(n, -1), s_idx, p_idx))
        while True:
            nxt = jump.gather(1, jump)
            if torch.equal(nxt, jump):
                break
            jump = nxt
        final = final.gather(1, jump)
    flat = x.reshape(n, c, h * w)
    return flat.gather(2, final.unsqueeze(1).expand(n, c, h * w)).reshape(n, c, h, w)


def glass_blur(x: torch.Tensor, severity: int, table: str, rand: Rand) -> torch.Tensor:
    """np.uint8(gaussian(x) * 255), the reference's local pixel shuffle (iterations passes,
    dx, dy ~ randint(-delta, delta) per visited pixel), then gaussian again. Computed in float64
    like the reference, so the truncation to uint8 lands where the reference's does."""
    sigma, delta, iterations = _param("glass_blur", table, severity)
    h, w = x.shape[-2:]
    nh, nw = max(h - 2 * delta, 0), max(w - 2 * delta, 0)
    # one (dx, dy) pair per visited pixel, in the reference's visiting order
    draws = rand.randint(-delta, delta, iterations, nh, nw, 2)
    def one(xc: torch.Tensor, dc: torch.Tensor) -> torch.Tensor:
        y = (gaussian_filter(_exact_levels(xc), sigma) * 255.0).floor_().clamp_(0, 255)
        for it in range(iterations):
            y = _glass_shuffle(y, delta, dc[:, it, :, :, 0], dc[:, it, :, :, 1])
        return _truncating_as_reference(gaussian_filter(y.div_(255.0), sigma))

    return _per_chunk(x, one, draws.to(x.device), values=1 << 17)


def motion_blur_corruption(x: torch.Tensor, severity: int, table: str, rand: Rand) -> torch.Tensor:
    """Wand's motion_blur(radius, sigma, angle ~ U(-45, 45)) read back from an 8-bit PNG."""
    radius, sigma = _param("motion_blur", table, severity)
    angle = rand.uniform(low=-45.0, high=45.0)
    return motion_blur(x, radius, sigma, angle.to(torch.float64), quantize=True)


@cache
def _zoom_taps(size: int, zoom: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For clipped_zoom along one axis of `size` pixels: output pixel i reads input pixels
    lo[i], lo[i]+1 with weight frac[i] on the second, as scipy.ndimage.zoom(order=1,
    grid_mode=False) of the centre crop, trimmed back to `size`."""
    ch = int(np.ceil(size / zoom))
    top = (size - ch) // 2
    out = round(ch * zoom)  # Python round, as scipy sizes its output
    trim = (out - size) // 2
    scale = (ch - 1) / (out - 1) if out > 1 else 0.0
    coord = np.arange(trim, trim + size, dtype=np.float64) * scale
    coord = np.clip(coord, 0, ch - 1)
    lo = np.minimum(np.floor(coord), max(ch - 2, 0)).astype(np.int64)
    frac = coord - lo
    return torch.from_numpy(lo + top), torch.from_numpy(np.minimum(lo + 1, ch - 1) + top), \
        torch.from_numpy(frac.astype(np.float64))


def clipped_zoom(x: torch.Tensor, zoom: float) -> torch.Tensor:
    """The reference's clipped_zoom (centre crop of ceil(side/zoom), scipy zoom order 1, centre
    trim) of every image of the (N, C, H, W) batch."""
    h, w = x.shape[-2:]
    lo, hi, f = _zoom_taps(h, float(zoom))
    f = f.to(x.dtype).to(x.device).view(1, 1, h, 1)
    y = x.index_select(2, lo.to(x.device)) * (1 - f) + x.index_select(2, hi.to(x.device)) * f
    lo, hi, f = _zoom_taps(w, float(zoom))
    f = f.to(x.dtype).to(x.device).view(1, 1, 1, w)
    return y.index_select(3, lo.to(x.device)) * (1 - f) + y.index_select(3, hi.to(x.device)) * f


def zoom_factors(table: str, severity: int) -> np.ndarray:
    start, stop, step = _param("zoom_blur", table, severity)
    return np.arange(start, stop, step)


@lru_cache(maxsize=8)
def _zoom_operator(h: int, w: int, zooms: tuple[float, ...], device: str) -> torch.Tensor:
    """zoom_blur as one sparse (h*w, h*w) matrix: (identity + sum of the clipped zooms) / (count+1),
    weights on the exact grid (CSR, float64)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return _zoom_operator_build(h, w, zooms, device)


def _zoom_operator_build(h: int, w: int, zooms: tuple[float, ...], device: str) -> torch.Tensor:
    taps = 1 + 4 * len(zooms)  # the identity, then 2 x 2 bilinear taps per zoom, for every pixel
    cols = torch.empty(h, w, taps, dtype=torch.int64)
    vals = torch.empty(h, w, taps, dtype=torch.float64)
    cols[:, :, 0] = torch.arange(h * w).view(h, w)
    vals[:, :, 0] = 1.0
    t = 1
    for z in zooms:
        lo_h, hi_h, f_h = _zoom_taps(h, z)
        lo_w, hi_w, f_w = _zoom_taps(w, z)
        f_h, f_w = f_h.double().view(h, 1), f_w.double().view(1, w)
        for ih, wh in ((lo_h, 1 - f_h), (hi_h, f_h)):
            for iw, ww in ((lo_w, 1 - f_w), (hi_w, f_w)):
                cols[:, :, t] = ih.view(h, 1) * w + iw.view(1, w)
                vals[:, :, t] = wh * ww
                t += 1
    # one CSR row per output pixel: sort its taps by column, sum the repeated columns
    cols, order = cols.view(h * w, taps).sort(dim=1)
    vals = vals.view(h * w, taps).gather(1, order) / (len(zooms) + 1)
    key = (torch.arange(h * w).view(-1, 1) * (h * w) + cols).flatten()
    uniq, inverse = torch.unique_consecutive(key, return_inverse=True)
    summed = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inverse, vals.flatten())
    row = torch.div(uniq, h * w, rounding_mode="floor")
    crow = torch.zeros(h * w + 1, dtype=torch.int64)
    crow[1:] = torch.bincount(row, minlength=h * w).cumsum(0)
    m = torch.sparse_csr_tensor(crow, uniq - row * (h * w), _exact_weights(summed), (h * w, h * w))
    return m.to(device)


def _apply_operator(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """m (h*w, h*w sparse, exact weights) applied to every channel of every image, exactly."""
    n, c, h, w = x.shape
    xe = _exact_input(x).reshape(n * c, h * w).t()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        y = torch.sparse.mm(m, xe)
    return (y.t().reshape(n, c, h, w) / _X_SCALE).to(x.dtype)


def zoom_blur(x: torch.Tensor, severity: int, table: str, rand: Rand) -> torch.Tensor:
    """(x + sum over zoom factors of clipped_zoom(x, z)) / (count + 1), as one exact sparse
    linear map of the image (so batch-independent whatever the sparse kernel's summation order)."""
    zs = tuple(float(z) for z in zoom_factors(table, severity))
    h, w = x.shape[-2:]
    m = _zoom_operator(h, w, zs, str(x.device))
    return _per_chunk(x, lambda xc: _apply_operator(xc, m), values=1 << 19)


FUNCTIONS = {
    "gaussian_blur": gaussian_blur,
    "glass_blur": glass_blur,
    "defocus_blur": defocus_blur,
    "motion_blur": motion_blur_corruption,
    "zoom_blur": zoom_blur,
}

# name -> why it differs from the reference (empty: faithful up to float rounding; the random
# corruptions draw from torch generators, so they match the reference in distribution)
APPROXIMATE: dict[str, str] = {}
