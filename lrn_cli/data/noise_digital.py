"""Noise and digital corruptions of the CIFAR-10-C / ImageNet-C benchmark, batched in torch.

gaussian_noise, shot_noise, impulse_noise, speckle_noise, contrast, brightness, saturate,
jpeg_compression, pixelate and elastic_transform of the reference scripts (github
hendrycks/robustness, ImageNet-C/create_c: make_cifar_c.py, make_tinyimagenet_c.py,
make_imagenet_c.py), each `fn(x, severity, table, rand)` as `imageops` describes: x float32
(N, 3, H, W) in [0, 1], the result on the same scale before the caller's clip and truncation.

How each one matches the reference:
- the noises draw the same distributions (numpy's normal / poisson / uniform there, each image's
  torch generator here), so only their statistics can agree;
- contrast, brightness and saturate are the reference's float64 arithmetic in the same order
  (brightness and saturate through skimage's rgb2hsv / hsv2rgb, written here in torch), truncated
  here to the reference's bytes: they come out identical (contrast but for the last bit of its mean);
- jpeg_compression encodes with libjpeg through torchvision at the reference's quality, with
  libjpeg's default 4:2:0 chroma subsampling as PIL's save: the decoded bytes are PIL's;
- pixelate is PIL's BOX resize down then up, with PIL's exact coefficients (for a factor that is
  not an integer BOX does not weigh by area: each output pixel is the plain mean of the input pixels
  whose centres fall in its window) and PIL's 8-bit fixed-point rounding after each pass;
- elastic_transform is cv2.warpAffine (bilinear, reflect-101 border) of a random affine, then
  scipy's map_coordinates (order 1, reflect) along displacements smoothed as skimage's gaussian
  (truncate 3, reflect): given the same random numbers its bytes are the reference's.
"""
from __future__ import annotations

import functools
import io
import warnings

import numpy as np
import torch
import torch.nn.functional as F

try:  # deprecated in torchvision 0.29 (for TorchCodec); PIL, slower, where it is gone
    from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg
except ImportError:  # pragma: no cover
    encode_jpeg = None

from .imageops import TABLES, Rand


def _elastic(size: float, rows) -> list:
    return [[size * a, size * s, size * d] for a, s, d in rows]


# severity parameters, literal per reference script: {name: {table: [severity 1..5]}}
PARAMS: dict[str, dict[str, list]] = {
    "gaussian_noise": {"cifar10": [0.04, 0.06, .08, .09, .10],
                       "tinyimagenet": [0.04, 0.08, .12, .15, .18],
                       "imagenet": [.08, .12, 0.18, 0.26, 0.38]},
    "shot_noise": {"cifar10": [500, 250, 100, 75, 50],
                   "tinyimagenet": [250, 100, 50, 30, 15],
                   "imagenet": [60, 25, 12, 5, 3]},
    "impulse_noise": {"cifar10": [.01, .02, .03, .05, .07],
                      "tinyimagenet": [.01, .02, .05, .08, .14],
                      "imagenet": [.03, .06, .09, 0.17, 0.27]},
    "speckle_noise": {"cifar10": [.06, .1, .12, .16, .2],
                      "tinyimagenet": [.15, .2, 0.25, 0.3, 0.35],
                      "imagenet": [.15, .2, 0.35, 0.45, 0.6]},
    "contrast": {"cifar10": [.75, .5, .4, .3, 0.15],
                 "tinyimagenet": [.4, .3, .2, .1, 0.05],
                 "imagenet": [0.4, .3, .2, .1, .05]},
    "brightness": {"cifar10": [.05, .1, .15, .2, .3],
                   "tinyimagenet": [.1, .2, .3, .4, .5],
                   "imagenet": [.1, .2, .3, .4, .5]},
    "saturate": {"cifar10": [[0.3, 0], [0.1, 0], [1.5, 0], [2, 0.1], [2.5, 0.2]],
                 "tinyimagenet": [[0.3, 0], [0.1, 0], [2, 0], [5, 0.1], [30, 0.2]],
                 "imagenet": [[0.3, 0], [0.1, 0], [2, 0], [5, 0.1], [20, 0.2]]},
    "jpeg_compression": {"cifar10": [80, 65, 58, 50, 40],
                         "tinyimagenet": [65, 58, 50, 40, 25],
                         "imagenet": [25, 18, 15, 10, 7]},
    "pixelate": {"cifar10": [0.95, 0.9, 0.85, 0.75, 0.65],
                 "tinyimagenet": [0.9, 0.8, 0.7, 0.6, 0.5],
                 "imagenet": [0.6, 0.5, 0.4, 0.3, 0.25]},
    # (alpha: displacement scale in px, sigma: its smoothing in px, affine: corner jitter in px);
    # ImageNet's script writes 244 for 224 ("ultimately nothing is incorrect"), kept as written
    "elastic_transform": {
        "cifar10": _elastic(32, [(0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06),
                                 (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)]),
        "tinyimagenet": _elastic(64, [(0, 0, 0.08), (0.05, 0.3, 0.06), (0.1, 0.08, 0.06),
                                      (0.1, 0.03, 0.03), (0.16, 0.03, 0.02)]),
        "imagenet": _elastic(244, [(2, 0.7, 0.1), (2, 0.08, 0.2), (0.05, 0.01, 0.02),
                                   (0.07, 0.01, 0.02), (0.12, 0.01, 0.02)]),
    },
}
assert all(set(t) == set(TABLES) and all(len(v) == 5 for v in t.values()) for t in PARAMS.values())


def _c(name: str, severity: int, table: str):
    return PARAMS[name][table][severity - 1]


def _bytes(x: torch.Tensor) -> torch.Tensor:
    """x = uint8 / 255 back to its uint8 values."""
    return (x * 255.0).round_().clamp_(0, 255).to(torch.int16).to(torch.uint8)  # (faster than at once)


def _levels(x: torch.Tensor) -> torch.Tensor:
    """x = uint8 / 255 back to its grey levels, int64."""
    return (x * 255.0).round_().clamp_(0, 255).long()


# ---------------------------------------------------------------- noise

def gaussian_noise(x: torch.Tensor, severity: int, table: str, rand: Rand) -> torch.Tensor:
    c = _c("gaussian_noise", severity, table)
    return rand.normal(*x.shape[1:]).mul_(c).add_(x).clamp_(0, 1)


def shot_noise(x: torch.Tensor, severity: int, table: str, rand: Rand) -> torch.Tensor:
    """poisson(x * c) / c, drawn by inverting the Poisson CDF of each value's rate at a uniform
    (an exact Poisson draw; torch.poisson is ten times slower)."""
    c = _c("shot_noise", severity, table)
    k = _poisson_inverse(float(c), (x * 255.0).round_(), rand.uniform(*x.shape[1:]))
    return k.div_(c).clamp_(0, 1)


_GUIDE_BITS = 11  # 2048 guide buckets of u per level


@functools.lru_cache(maxsize=16)
def _poisson_tables(c: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """For the rates lambda = c * level / 255 of the 256 levels: their CDFs over counts 0..K-1,
    offset by level so that all rows make one sorted (256 K,) float64 sequence; and per level and
    bucket [m / J, (m + 1) / J) of u, (256 J,) float32 tables `guide` and `step` that give the
    draw (the count of offset CDF values <= u + level, less level * K) as guide + (u >= step):
    where the bucket holds no CDF value, guide is the draw and step +inf; where it holds one
    (offset CDF value S, step is S - level, exact, rounded up to float32: for a float32 u,
    u >= step exactly when u + level >= S), guide counts the values below the bucket; where it
    holds more, guide is -1 (a search)."""
    lam = torch.arange(256, dtype=torch.float64) * (c / 255.0)
    top = int(c + 14 * c ** 0.5 + 30)
    ks = torch.arange(top, dtype=torch.float64)
    logp = ks * torch.log(lam.clamp(min=1e-300))[:, None] - lam[:, None] - torch.lgamma(ks + 1)
    pmf = torch.exp(logp)
    pmf[0] = 0.0
    pmf[0, 0] = 1.0  # rate 0: always 0
    cdf = torch.cumsum(pmf, dim=1).clamp_(max=1.0)
    cdf[:, -1] = 1.0  # the far tail (below 1e-40) goes to the last count
    j = 1 << _GUIDE_BITS
    lo = (torch.arange(j, dtype=torch.float64) / j).expand(256, j).contiguous()
    first = torch.searchsorted(cdf, lo, right=True)  # #{CDF <= lo}
    last = torch.searchsorted(cdf, lo + 1.0 / j, right=False)  # #{CDF < hi}
    offset = torch.arange(256, dtype=torch.float64)[:, None]
    shifted = (cdf + offset).sub_(offset)  # the offset CDF values less their level: exact
    below = torch.searchsorted(shifted, lo, right=False)  # #{shifted < lo}
    inside = torch.searchsorted(shifted, lo + 1.0 / j, right=False) - below  # #{shifted in [lo, hi)}
    one = shifted.gather(1, below.clamp(max=top - 1))
    step = one.float()
    step = torch.where(step.double() < one, torch.nextafter(step, torch.tensor(float("inf"))), step)
    guide = torch.where(first == last, first, torch.where(inside == 1, below, -1)).float()
    step = torch.where((first != last) & (inside == 1), step, float("inf"))
    return (cdf + offset).reshape(-1).contiguous(), guide.reshape(-1).contiguous(), step.reshape(-1).contiguous(), top


def _poisson_inverse(c: float, levels: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Poisson(c * level / 255) counts (float32) by inversion at the uniforms u in [0, 1), for
    the grey levels `levels` (integers 0..255 of any dtype, u's shape)."""
    cdf, guide, step, top = _poisson_tables(c)
    j = float(1 << _GUIDE_BITS)
    shape = levels.shape
    levels = levels.reshape(-1).float()
    u = u.reshape(-1)
    bucket = torch.floor(u * j).add_(levels * j).int()  # exact in float32: below 2**20
    k = guide.index_select(0, bucket).add_(u >= step.index_select(0, bucket))
    where = (k < 0).nonzero().squeeze(1)
    if len(where):
        lv = levels[where].double()
        found = torch.searchsorted(cdf, u[where].double() + lv, right=True)  # u + level: exact
        k[where] = (found.double() - lv * top).float()
    return k.view(shape)


def impulse_noise(x: torch.Tensor, severity: int, table: str, rand: Rand) -> torch.Tensor:
    """skimage.util.random_noise(mode='s&p', amount=c): each value independently flipped with
    probability c, to 1 or 0 with equal odds. One uniform u per value does both draws: flipped
    when u < c, salt when u < c / 2."""
    c = _c("impulse_noise", severity, table)
    u = rand.uniform(*x.shape[1:])
    return x.masked_fill(u < c, 0.0).masked_fill_(u < c / 2, 1.0)


def speckle_noise(x: torch.Tensor, severity: int, table: str, rand: Rand) -> torch.Tensor:
    c = _c("speckle_noise", severity, table)
    return rand.normal(*x.shape[1:]).mul_(c).mul_(x).add_(x).clamp_(0, 1)  # x + x (c z)


# ---------------------------------------------------------------- colour

def _as_reference(x: torch.Tensor) -> torch.Tensor:
    """The reference's own input, uint8 / 255. in float64."""
    return (x * 255.0).round_().double().div_(255.0)


def _truncated(r: torch.Tensor) -> torch.Tensor:
    """The reference's bytes np.uint8(np.clip(r, 0, 1) * 255) of a float64 result, as float32
    bytes / 255 (which the caller's truncation keeps as they are)."""
    return r.clamp(0, 1).mul_(255.0).floor_().float().div_(255.0)


def contrast(x: torch.Tensor, severity: int, table: str, rand: Rand) -> torch.Tensor:
    """(x - mean) * c + mean per image and channel, in float64 as the reference: each channel's
    256 grey levels are mapped once (a table of the reference's bytes), then looked up."""
    c = _c("contrast", severity, table)
    n, ch, h, w = x.shape
    levels = _levels(x).view(n, ch, h * w)
    means = levels.sum(dim=2, keepdim=True).double() / (255.0 * h * w)  # (N, 3, 1)
    grey = torch.arange(256, dtype=torch.float64) / 255.0
    table_ = _truncated((grey - means) * c + means)  # (N, 3, 256)
    return table_.gather(2, levels).view(n, ch, h, w)


def rgb2hsv(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """skimage.color.rgb2hsv of (N, 3, H, W): (h, s, v), each (N, H, W), by the same operations
    (so in float64 the same bits). Where two channels share the maximum, blue wins over green over
    red, as skimage's successive assignments; its 0 / 0 (greys) are NaN made 0 as there. The
    maximum's channel picks its difference (g - b, b - r or r - g) and its offset (0, 2, 4)."""
    r, g, b = x.unbind(1)
    v = torch.maximum(torch.maximum(r, g), b)
    delta = v - torch.minimum(torch.minimum(r, g), b)
    s = (delta / v).nan_to_num_(0.0)  # v = 0: delta = 0; v > 0 and delta = 0: 0 already
    top = (b == v).to(torch.int64).mul_(2)  # the maximum's channel: 2 blue, else 1 green, else 0
    top += (g == v) & (top == 0)
    diffs = torch.empty_like(x)
    torch.sub(g, b, out=diffs[:, 0])
    torch.sub(b, r, out=diffs[:, 1])
    torch.sub(r, g, out=diffs[:, 2])
    h = diffs.gather(1, top.unsqueeze(1)).squeeze(1).div_(delta)
    h = h.add_(top.to(x.dtype).mul_(2.0)).div_(6.0)
    h = h.add_((h < 0).to(x.dtype))  # % 1.0 of values in (-1/6, 1)
    return h.nan_to_num_(0.0), s, v  # NaN exactly where delta = 0


# per sector hi = 0..6 of hsv2rgb (6 is 0): which of (v, mid, p) r, g and b take
_SECTOR_PICK = torch.tensor([[0, 1, 2], [1, 0, 2], [2, 0, 1], [2, 1, 0], [1, 2, 0], [0, 2, 1], [0, 1, 2]])


def hsv2rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """skimage.color.hsv2rgb of (N, H, W) h, s, v: (N, 3, H, W), by the same operations. Its
    sector hi = 0..5 (6, from h * 6 rounded up, is 0) gives each channel v, p or the third value
    (q in odd sectors, t in even ones): r takes v mid p p mid v, g mid v v mid p p, b p p mid v v
    mid over the sectors, picked by a gather (`_SECTOR_PICK`)."""
    h6 = h * 6.0
    hi = torch.floor(h6)
    f = h6.sub_(hi)
    odd = hi - torch.floor(hi * 0.5).mul_(2.0)  # 1.0 in odd sectors (6 is even)
    weight = (f * odd).add_((1 - f).mul_(1 - odd))  # f in odd sectors, 1 - f in even ones
    values = torch.empty((len(v), 3, *v.shape[1:]), dtype=v.dtype)
    values[:, 0] = v
    torch.mul(v, 1 - weight.mul_(s), out=values[:, 1])  # q = v (1 - f s), t = v (1 - (1 - f) s)
    torch.mul(v, 1 - s, out=values[:, 2])  # p
    pick = _SECTOR_PICK.index_select(0, hi.long().view(-1)).view(*hi.shape, 3)  # (index_select: fast)
    return values.gather(1, pick.movedim(-1, 1))


def _chunks(n: int, h: int, w: int) -> list[slice]:
    """Slices of the batch of about 2**16 pixels each: temporaries that stay in cache (and
    allocations the allocator recycles)."""
    step = max(1, (1 << 16) // (h * w))
    return [slice(i, i + step) for i in range(0, n, step)]


def brightness(x: torch.Tensor, severity: int, table: str, rand: Rand) -> torch.Tensor:
    c = _c("brightness", severity, table)
    out = torch.empty_like(x)
    for part in _chunks(*x.shape[:1], *x.shape[2:]):
        h, s, v = rgb2hsv(_as_reference(x[part]))
        out[part] = _truncated(hsv2rgb(h, s, (v + c).clamp_(0, 1)))
    return out


def saturate(x: torch.Tensor, severity: int, table: str, rand: Rand) -> torch.Tensor:
    scale, shift = _c("saturate", severity, table)
    out = torch.empty_like(x)
    for part in _chunks(*x.shape[:1], *x.shape[2:]):
        h, s, v = rgb2hsv(_as_reference(x[part]))
        out[part] = _truncated(hsv2rgb(h, (s * scale + shift).clamp_(0, 1), v))
    return out


# ---------------------------------------------------------------- digital

def jpeg_compression(x: torch.Tensor, severity: int, table: str, rand: Rand) -> torch.Tensor:
    """PIL's save(format='JPEG', quality=q) and reopen: libjpeg with its standard quantization
    tables scaled by q and 4:2:0 chroma subsampling, which are both PIL's and torchvision's
    defaults (the decoded bytes are identical)."""
    q = _c("jpeg_compression", severity, table)
    if len(x) == 0:
        return x.clone()
    images = list(_bytes(x).unbind(0))
    if encode_jpeg is None:  # pragma: no cover
        return torch.stack([_pil_jpeg(im, q) for im in images]).float().div_(255.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        decoded = decode_jpeg(encode_jpeg(images, quality=q), mode=ImageReadMode.RGB)
    return torch.stack(decoded).float().div_(255.0)


def _pil_jpeg(image: torch.Tensor, quality: int) -> torch.Tensor:  # pragma: no cover
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, "JPEG", quality=quality)
    return torch.from_numpy(np.array(Image.open(buffer).convert("RGB"))).permute(2, 0, 1)


_PRECISION_BITS = 32 - 8 - 2  # PIL's Resample.c for 8-bit images


@functools.lru_cache(maxsize=64)
def _pil_box(in_size: int, out_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool, torch.Tensor,
                                                   torch.Tensor, torch.Tensor]:
    """PIL's BOX resampling from in_size to out_size pixels (Resample.c: precompute_coeffs, then
    normalize_coeffs_8bpc). Output pixel i averages the m_i input pixels whose centres fall in
    its window, with weights 1 / m_i made integers k_i = int(0.5 + 2**22 / m_i), and rounds
    (k_i S + 2**21) >> 22 for the sum S of those bytes. Returns the (out, in) 0/1 window matrix
    (float32); per output pixel its window's first and end input pixel; whether every window is
    one pixel (upsampling); the offset and divisor that make that rounding floor((2 S + offset) /
    divisor) in exact float32 arithmetic (m_i < 128: round half up where k_i m_i >= 2**22, else
    half down); and the k_i (larger windows: the fixed point itself, in float64)."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    window = np.zeros((out_size, in_size))
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        for x in range(xmax - xmin):
            window[xx, xmin + x] = -0.5 < (x + xmin - center + 0.5) / filterscale <= 0.5
    m = window.sum(axis=1)
    k = np.floor(0.5 + np.divide(1.0, m, out=np.zeros_like(m), where=m > 0) * (1 << _PRECISION_BITS))
    up = k * m >= 1 << _PRECISION_BITS
    offset, divisor = np.where(up, m, m - 1), np.maximum(2 * m, 1)
    first = np.where(m > 0, window.argmax(axis=1), 0)
    assert all(window[i, first[i]:first[i] + int(m[i])].all() for i in range(out_size))  # ranges
    as_f32 = lambda a: torch.from_numpy(a).float()
    return (as_f32(window), torch.from_numpy(first), torch.from_numpy(first + m.astype(np.int64)),
            bool((m == 1).all()), as_f32(offset), as_f32(divisor), torch.from_numpy(k))


def _pil_pass(u: torch.Tensor, in_size: int, out_size: int, dim: int) -> torch.Tensor:
    """One PIL BOX pass along `dim` (-1: horizontal, -2: vertical) of float32 byte values: the
    window sums (exact in float32 below 2**24: a matrix product for small images, a cumulative
    sum for large ones), then PIL's rounding."""
    window, first, end, copies, offset, divisor, k = _pil_box(in_size, out_size)
    shape = [1] * u.dim()
    shape[dim] = -1
    if in_size <= 64:
        sums = u @ window.T if dim == -1 else window @ u
    elif dim == -1:  # along rows: faster as along columns of a transposed copy
        along_columns = _pil_pass(u.transpose(-1, -2).contiguous(), in_size, out_size, -2)
        return along_columns.transpose(-1, -2).contiguous()
    elif copies:  # upsampling: each output pixel is one input pixel
        return u.index_select(dim, first)
    else:
        cum = torch.cumsum(F.pad(u, (0, 0, 1, 0)), dim=dim)
        sums = cum.index_select(dim, end).sub_(cum.index_select(dim, first))
    if copies:
        return sums
    if in_size / out_size < 127:  # windows under 128 px: exact in float32
        return sums.mul_(2.0).add_(offset.view(shape)).div_(divisor.view(shape)).floor_()
    fixed = sums.double().mul_(k.view(shape)).add_(1 << (_PRECISION_BITS - 1)).div_(1 << _PRECISION_BITS)
    return fixed.floor_().clamp_(0, 255).float()


def _pil_resize(u: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """PIL's Image.resize((width, height), BOX) of (N, 3, H, W) float32 byte values: the
    horizontal pass first, each pass rounded to 8 bits, a pass skipped where its size is kept.
    (Pillow 13 may do the vertical pass first where the two factors differ; pixelate's don't.)"""
    h, w = u.shape[-2:]
    if width != w:
        u = _pil_pass(u, w, width, -1)
    if height != h:
        u = _pil_pass(u, h, height, -2)
    return u


def pixelate(x: torch.Tensor, severity: int, table: str, rand: Rand) -> torch.Tensor:
    """PIL resize BOX to int(side * c), then BOX back (upsampling BOX is nearest-neighbour)."""
    c = _c("pixelate", severity, table)
    h, w = x.shape[-2:]
    u = _pil_resize((x * 255.0).round_(), int(w * c), int(h * c))
    return _pil_resize(u, w, h).div_(255.0)


# ---------------------------------------------------------------- elastic

@functools.lru_cache(maxsize=64)
def _gaussian_matrix(n: int, sigma: float, truncate: float) -> torch.Tensor:
    """(n, n) float32 matrix of scipy.ndimage.gaussian_filter1d (mode 'reflect', i.e. half-sample
    symmetric, any radius) along an axis of length n: G[i, j] sums the taps of i that land on j."""
    if sigma <= 1e-15:  # scipy skips the axis
        return torch.eye(n)
    radius = int(truncate * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    taps = np.exp(-0.5 / (sigma * sigma) * offsets ** 2)
    taps /= taps.sum()
    src = (np.arange(n)[:, None] + offsets[None, :]) % (2 * n)
    src = np.where(src >= n, 2 * n - 1 - src, src)
    g = np.zeros((n, n))
    np.add.at(g, (np.repeat(np.arange(n), len(offsets)), src.ravel()), np.tile(taps, n))
    return torch.from_numpy(g).float()


def _smooth(u: torch.Tensor, sigma: float, truncate: float) -> torch.Tensor:
    """skimage.filters.gaussian(u, sigma, mode='reflect', truncate=truncate) of (N, H, W): two
    matrix products, whatever the radius (ImageNet's sigma of 171 px spans 1025 taps)."""
    gh = _gaussian_matrix(u.shape[-2], float(sigma), truncate)
    gw = _gaussian_matrix(u.shape[-1], float(sigma), truncate)
    return gh @ u.float() @ gw.T


def _affine_theta(rand: Rand, h: int, w: int, jitter: float) -> torch.Tensor:
    """cv2.warpAffine by getAffineTransform(pts1, pts2), pts2 = pts1 + uniform(-jitter, jitter),
    as F.affine_grid's (N, 2, 3) theta (align_corners=True: pixel centres at -1 and 1).
    warpAffine samples the source at M^-1 (dst), the affine map that takes pts2 to pts1. OpenCV
    4 and 5 sample float32 images at these coordinates (the OpenCV 3 of the reference's time
    rounded them to 1/32 px)."""
    n = len(rand)
    cy, cx = float(h // 2), float(w // 2)  # the reference's center_square, as (x, y) pairs below
    s = float(min(h, w) // 3)
    pts1 = torch.tensor([[cy + s, cx + s], [cy + s, cx - s], [cy - s, cx - s]], dtype=torch.float32)
    pts2 = pts1 + rand.uniform(3, 2, low=-jitter, high=jitter)
    a = torch.cat([pts2.double(), torch.ones(n, 3, 1, dtype=torch.float64)], dim=2)  # (N, 3, 3)
    inv = torch.linalg.solve(a, pts1.double().expand(n, 3, 2)).transpose(1, 2)  # (N, 2, 3), pixels
    half = torch.tensor([max(w - 1, 1) / 2, max(h - 1, 1) / 2], dtype=torch.float64)  # x, y
    linear = inv[:, :, :2] * half[None, None, :] / half[None, :, None]
    shift = (inv[:, :, :2] @ half + inv[:, :, 2]) / half - 1
    return torch.cat([linear, shift[:, :, None]], dim=2).float()


@functools.lru_cache(maxsize=16)
def _pixel_centres(h: int, w: int) -> torch.Tensor:
    """(H, W, 2) grid_sample coordinates (x, y) of the pixel centres, align_corners=False."""
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                            indexing="ij")
    return torch.stack([(2 * xs + 1) / w - 1, (2 * ys + 1) / h - 1], dim=-1).float()


def elastic_transform(x: torch.Tensor, severity: int, table: str, rand: Rand) -> torch.Tensor:
    """The reference's random affine (cv2.warpAffine, bilinear, BORDER_REFLECT_101 = grid_sample
    reflection with align_corners=True), then map_coordinates (order 1, 'reflect' = grid_sample
    reflection with align_corners=False) at (y + dy, x + dx), the displacements uniform(-1, 1)
    smoothed by skimage's gaussian (sigma, truncate 3, reflect) times alpha."""
    alpha, sigma, jitter = _c("elastic_transform", severity, table)
    n, ch, h, w = x.shape
    grid = F.affine_grid(_affine_theta(rand, h, w, jitter), [n, ch, h, w], align_corners=True)
    warped = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=True)
    noise = rand.uniform(2, h, w, low=-1.0, high=1.0)  # drawn at every severity, as there
    if alpha == 0:  # map_coordinates at the pixels themselves: the identity
        return warped.clamp_(0, 1)
    dx = _smooth(noise[:, 0], sigma, 3.0).mul_(alpha * 2 / w)
    dy = _smooth(noise[:, 1], sigma, 3.0).mul_(alpha * 2 / h)
    grid = torch.stack([dx, dy], dim=-1).add_(_pixel_centres(h, w))
    out = F.grid_sample(warped, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return out.clamp_(0, 1)


FUNCTIONS = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "speckle_noise": speckle_noise,
    "contrast": contrast,
    "brightness": brightness,
    "saturate": saturate,
    "jpeg_compression": jpeg_compression,
    "pixelate": pixelate,
    "elastic_transform": elastic_transform,
}

APPROXIMATE: dict[str, str] = {}
