"""Deliberately naive LRN: each convention's published formula as plain Python loops over
numbers, sharing no code with lrn_cli. Slow; for small float64 tests only.

Sources: torch/nn/functional.py local_response_norm; Krizhevsky et al. 2012, section 3.3;
Caffe src/caffe/layers/lrn_layer.cpp (+ pooling_layer.cpp for WITHIN_CHANNEL); TensorFlow
core/ops/nn_ops.cc LRN; ONNX LRN operator spec; cudnn.h (lookBehind/lookAhead); cuda-convnet2
conv_util.cu kFCNorm / convResponseNorm with layer.py's scale/size and scale/size^2.
"""
import itertools

import numpy as np


def _across(a, first, last, denom):
    """b[n, c, p] = a[n, c, p] / denom(sum of a[n, j, p]^2 for j in first(c)..last(c), clipped)."""
    a = np.asarray(a, dtype=np.float64)
    out = np.empty_like(a)
    n_img, n_ch = a.shape[:2]
    for n in range(n_img):
        for p in itertools.product(*[range(s) for s in a.shape[2:]]):
            for c in range(n_ch):
                total = 0.0
                for j in range(max(0, first(c)), min(n_ch - 1, last(c)) + 1):
                    total += a[(n, j) + p] ** 2
                out[(n, c) + p] = a[(n, c) + p] / denom(total)
    return out


def torch_lrn(a, size, alpha, beta, k):
    # pad (size//2 before, (size-1)//2 after), avg over size, div = (avg * alpha + k) ** beta
    return _across(a, lambda c: c - size // 2, lambda c: c + (size - 1) // 2,
                   lambda s: (s / size * alpha + k) ** beta)


def alexnet_lrn(a, n, alpha, beta, k):
    # b_i = a_i / (k + alpha * sum_{j=max(0, i-n/2)}^{min(N-1, i+n/2)} a_j^2)^beta, integer n/2
    return _across(a, lambda i: i - n // 2, lambda i: i + n // 2, lambda s: (k + alpha * s) ** beta)


def caffe_across_lrn(a, local_size, alpha, beta, k):
    pre_pad = (local_size - 1) // 2
    return _across(a, lambda c: c - pre_pad, lambda c: c + pre_pad,
                   lambda s: (k + alpha / local_size * s) ** beta)


def tensorflow_lrn(a, depth_radius, bias, alpha, beta):
    return _across(a, lambda d: d - depth_radius, lambda d: d + depth_radius,
                   lambda s: (bias + alpha * s) ** beta)


def onnx_lrn(a, size, alpha, beta, bias):
    # max(0, c - floor((size - 1) / 2)) <= i <= min(C - 1, c + ceil((size - 1) / 2))
    return _across(a, lambda c: c - int(np.floor((size - 1) / 2)), lambda c: c + int(np.ceil((size - 1) / 2)),
                   lambda s: (bias + alpha / size * s) ** beta)


def cudnn_lrn(a, lrn_n, alpha, beta, k):
    look_behind = (lrn_n - 1) // 2
    look_ahead = lrn_n - look_behind - 1
    return _across(a, lambda c: c - look_behind, lambda c: c + look_ahead,
                   lambda s: (k + alpha / lrn_n * s) ** beta)


def cuda_convnet_cmrnorm(a, size, scale, pow_, min_div):
    # startF = -sizeF/2 + f; loop f' in [max(0, startF), min(C, startF + sizeF)); scale /= size
    return _across(a, lambda f: -(size // 2) + f, lambda f: -(size // 2) + f + size - 1,
                   lambda s: (min_div + scale / size * s) ** pow_)


def _within(a, first, last, denom):
    """Spatial window over H and W of each channel; zeros outside (clipped)."""
    a = np.asarray(a, dtype=np.float64)
    out = np.empty_like(a)
    n_img, n_ch, h, w = a.shape
    for n, c, y, x in itertools.product(range(n_img), range(n_ch), range(h), range(w)):
        total = 0.0
        for yy in range(max(0, first(y)), min(h - 1, last(y)) + 1):
            for xx in range(max(0, first(x)), min(w - 1, last(x)) + 1):
                total += a[n, c, yy, xx] ** 2
        out[n, c, y, x] = a[n, c, y, x] * denom(total)
    return out


def caffe_within_lrn(a, local_size, alpha, beta):
    # square -> AVE pool (kernel local_size, pad (size-1)/2, stride 1; divides by size^2 with
    # the padding counted) -> power(shift 1, scale alpha, power -beta) -> product with a
    pad = (local_size - 1) // 2
    return _within(a, lambda y: y - pad, lambda y: y + pad,
                   lambda s: (1 + alpha * s / local_size ** 2) ** -beta)


def cuda_convnet_rnorm(a, size, scale, pow_, min_div):
    # startX = -sizeX/2 + x over both axes; scale /= size^2
    return _within(a, lambda y: -(size // 2) + y, lambda y: -(size // 2) + y + size - 1,
                   lambda s: (min_div + scale / size ** 2 * s) ** -pow_)
