"""Triton kernels for the fused across-channel LRN on CUDA (same formulas as `lrn_cpu.c`).

    forward:   y_c = x_c * d_c^(-beta),  d_c = k + scale * sum_{j=c-lo}^{c+hi} x_j^2
    backward:  dx_c = g_c * p_c - 2 * beta * scale * x_c * sum_{j=c-hi}^{c+lo} g_j * x_j * p_j / d_j

Each program owns one image and a block of pixels and walks the channels, so every output is
written by exactly one program in a fixed order: the kernels are deterministic, unlike
torch's LRN on CUDA (avg_pool3d's backward). The backward runs in two kernels: the first writes
g * p into dx and u = g * x * p / d into a scratch tensor, the second subtracts the window sum
of u. Half types are computed in float32, float64 in float64.

Not yet verified on a GPU: `available()` is False unless LRN_TRITON=1, and CUDA tensors take
the fused PyTorch path until then. Correctness is tested on the CPU with TRITON_INTERPRET=1.
"""
from __future__ import annotations

import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton ships with CUDA builds of torch
    triton = None


def available() -> bool:
    return triton is not None and os.environ.get("LRN_TRITON", "0") == "1"


if triton is not None:

    @triton.jit
    def _window_sum_sq(x_ptr, base, c, C, inner, offs, mask, LO: tl.constexpr, HI: tl.constexpr,
                       ACC: tl.constexpr):
        s = tl.zeros(offs.shape, ACC)
        for t in tl.static_range(LO + HI + 1):
            j = c - LO + t
            ok = mask & (j >= 0) & (j < C)
            v = tl.load(x_ptr + base + j * inner + offs, mask=ok, other=0.0).to(ACC)
            s += v * v
        return s

    @triton.jit
    def _pass(x_ptr, g_ptr, out_ptr, u_ptr, C, inner, scale, k, beta, LO: tl.constexpr, HI: tl.constexpr,
              ACC: tl.constexpr, BLOCK: tl.constexpr, BACKWARD: tl.constexpr):
        """Forward: out = x * p. Backward's first kernel: out = g * p, u = g * x * p / d."""
        n = tl.program_id(0)
        offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < inner
        base = n * C * inner
        for c in range(C):
            d = k + scale * _window_sum_sq(x_ptr, base, c, C, inner, offs, mask, LO, HI, ACC)
            p = tl.exp(-beta * tl.log(d))
            at = base + c * inner + offs
            xc = tl.load(x_ptr + at, mask=mask, other=0.0).to(ACC)
            if BACKWARD:
                gc = tl.load(g_ptr + at, mask=mask, other=0.0).to(ACC)
                tl.store(out_ptr + at, gc * p, mask=mask)
                tl.store(u_ptr + at, gc * xc * p / d, mask=mask)
            else:
                tl.store(out_ptr + at, (xc * p).to(out_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _backward_dx(x_ptr, u_ptr, dx_ptr, out_ptr, C, inner, c2, LO: tl.constexpr, HI: tl.constexpr,
                     ACC: tl.constexpr, BLOCK: tl.constexpr):
        n = tl.program_id(0)
        offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < inner
        base = n * C * inner
        for c in range(C):
            t_sum = tl.zeros([BLOCK], ACC)
            for t in tl.static_range(LO + HI + 1):  # the transposed window: j in c-HI .. c+LO
                j = c - HI + t
                ok = mask & (j >= 0) & (j < C)
                t_sum += tl.load(u_ptr + base + j * inner + offs, mask=ok, other=0.0)
            at = base + c * inner + offs
            xc = tl.load(x_ptr + at, mask=mask, other=0.0).to(ACC)
            gp = tl.load(dx_ptr + at, mask=mask, other=0.0)
            tl.store(out_ptr + at, (gp - c2 * xc * t_sum).to(out_ptr.dtype.element_ty), mask=mask)


def _grid(x: torch.Tensor, block: int) -> tuple[int, int]:
    inner = x[0, 0].numel()
    return (x.shape[0], triton.cdiv(inner, block))


def _acc(x: torch.Tensor):
    return tl.float64 if x.dtype == torch.float64 else tl.float32


BLOCK = 256


def forward(x: torch.Tensor, lo: int, hi: int, scale: float, k: float, beta: float) -> torch.Tensor:
    """Across-channel LRN of a contiguous (N, C, *spatial) tensor."""
    y = torch.empty_like(x)
    inner = x[0, 0].numel()
    _pass[_grid(x, BLOCK)](x, x, y, y, x.shape[1], inner, scale, k, beta, LO=lo, HI=hi, ACC=_acc(x), BLOCK=BLOCK,
                           BACKWARD=False)
    return y


def backward(g: torch.Tensor, x: torch.Tensor, lo: int, hi: int, scale: float, k: float,
             beta: float) -> torch.Tensor:
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    g = g.contiguous()
    gp = torch.empty(x.shape, dtype=acc_dtype, device=x.device)
    u = torch.empty(x.shape, dtype=acc_dtype, device=x.device)
    inner = x[0, 0].numel()
    _pass[_grid(x, BLOCK)](x, g, gp, u, x.shape[1], inner, scale, k, beta, LO=lo, HI=hi, ACC=_acc(x), BLOCK=BLOCK,
                           BACKWARD=True)
    dx = torch.empty_like(x)
    _backward_dx[_grid(x, BLOCK)](x, u, gp, dx, x.shape[1], inner, 2.0 * beta * scale, LO=lo, HI=hi,
                                  ACC=_acc(x), BLOCK=BLOCK)
    return dx
