"""The fused LRN: an analytic backward that saves only the input, as one custom op.

    forward:   y = x * p,  p = d^(-beta),  d = k + scale * W(x^2)
    backward:  dx = g * p - 2 * beta * scale * x * W'(g * x * p / d)

W sums over each element's window, W' over the transposed window (lo and hi swapped). The
backward recomputes d from x rather than keeping it, so the layer holds nothing for its
backward beyond its input, which the layer before it keeps anyway.

Three backends compute it: the C kernels (CPU, float32/float64/bfloat16/float16, see
`native.py`), Triton kernels (CUDA, across channels; opt-in with LRN_TRITON=1 until verified on a
GPU, see `gpu.py`), and the same formulas as PyTorch operations (any device, any layout;
deterministic on CUDA, where torch's own LRN is not). Half types are computed in float32: the C
kernels load and round each element, so the op keeps the half-precision input for its backward,
not a float32 copy; the other backends convert the tensor. `torch.library.custom_op` makes it
one opaque op for `torch.compile`, export and tracing; in eager mode the same computation runs
through a `torch.autograd.Function`, whose dispatch costs a fraction of the custom op's (on the
development machine about 110 against 270 us for a small layer's forward and backward, a
visible share of a small network's step). In eager mode, outputs of 8 MB or more of the C
kernels take their memory from the kernels' pool (`native.empty_like`), whose pages stay mapped.
"""
from __future__ import annotations

import math

import torch

from ..conventions import Canon
from ..ops import HALF, box_sum, check_input, window_dims, window_sum_of_squares
from . import gpu, native


def _packed(x: torch.Tensor) -> bool:
    """channels_last(_3d): every pixel's channels are contiguous."""
    if x.dim() == 4:
        return x.is_contiguous(memory_format=torch.channels_last)
    if x.dim() == 5:
        return x.is_contiguous(memory_format=torch.channels_last_3d)
    return False


def _native_applies(x: torch.Tensor, region: str) -> bool:
    """Whether the C kernels compute this input: CPU, their dtypes, and 3-D or 4-D within a channel."""
    return x.device.type == "cpu" and native.supports(x.dtype) and (region == "across" or x.dim() in (3, 4))


def _native_plan(x: torch.Tensor, region: str) -> tuple[str, tuple[int, int, int], torch.Tensor] | None:
    """How the C kernel sees x: (layout, dims, x in that layout), or None if it does not apply."""
    if not _native_applies(x, region):
        return None
    n, c = x.shape[:2]
    spatial = math.prod(x.shape[2:])
    if region == "within":
        h, w = (1, x.shape[2]) if x.dim() == 3 else (x.shape[2], x.shape[3])
        return "within", (n * c, h, w), x.contiguous()
    if x.is_contiguous() and spatial > 1:
        return "planar", (n, c, spatial), x
    if spatial == 1 or (_packed(x) and not x.is_contiguous()):  # each pixel's channels contiguous
        return "packed", (n * spatial, c, 1), x if _packed(x) else x.contiguous()
    return "planar", (n, c, spatial), x.contiguous()


def _in_layout_of(g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """g with x's strides: the kernel reads the gradient in its input's layout."""
    return g if g.stride() == x.stride() else torch.empty_like(x).copy_(g)


def _run(x: torch.Tensor, g: torch.Tensor | None, canon: Canon, backend: str) -> torch.Tensor:
    if x.numel() == 0:
        return torch.empty_like(x)
    plan = _native_plan(x, canon.region) if backend != "torch" else None
    if backend == "native" and plan is None:
        raise RuntimeError("the native LRN kernel does not apply here (CPU float32/float64, a built library, "
                           "and for within-channel 3-D or 4-D input)")
    if plan is not None:
        layout, dims, xs = plan
        if g is not None:
            g = _in_layout_of(g, xs)
        out = torch.empty_like(xs)
        native.call(layout, xs, g, out, dims, canon.lo, canon.hi, canon.scale, canon.k, canon.beta)
        return out if out.stride() == x.stride() else torch.empty_like(x).copy_(out)
    if x.device.type != "cpu" and canon.region == "across" and x.is_contiguous() and gpu.available():
        return gpu.forward(x, canon.lo, canon.hi, canon.scale, canon.k, canon.beta) if g is None else \
            gpu.backward(g, x, canon.lo, canon.hi, canon.scale, canon.k, canon.beta)
    out = torch.empty_like(x)
    # the same formulas as PyTorch operations
    d = window_sum_of_squares(x, canon).mul_(canon.scale).add_(canon.k)
    p = d.pow(-canon.beta)
    if g is None:
        return torch.mul(x, p, out=out)
    u = g * x * p / d
    for dim in window_dims(x, canon):  # the transposed window
        u = box_sum(u, dim, canon.hi, canon.lo)
    return torch.sub(g * p, u.mul_(x), alpha=2 * canon.beta * canon.scale, out=out)


def _canon(region: str, lo: int, hi: int, scale: float, k: float, beta: float) -> Canon:
    return Canon(region, lo, hi, scale, beta, k)


@torch.library.custom_op("lrn::fused_forward", mutates_args=())
def fused_forward(x: torch.Tensor, region: str, lo: int, hi: int, scale: float, k: float, beta: float,
                  backend: str) -> torch.Tensor:
    return _run(x, None, _canon(region, lo, hi, scale, k, beta), backend)


@torch.library.custom_op("lrn::fused_backward", mutates_args=())
def fused_backward(g: torch.Tensor, x: torch.Tensor, region: str, lo: int, hi: int, scale: float, k: float,
                   beta: float, backend: str) -> torch.Tensor:
    return _run(x, g, _canon(region, lo, hi, scale, k, beta), backend)


@fused_forward.register_fake
def _(x, region, lo, hi, scale, k, beta, backend):
    return torch.empty_like(x)


@fused_backward.register_fake
def _(g, x, region, lo, hi, scale, k, beta, backend):
    return torch.empty_like(x)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])
    ctx.args = inputs[1:]


def _backward(ctx, g):
    (x,) = ctx.saved_tensors
    return (fused_backward(g, x, *ctx.args),) + (None,) * len(ctx.args)


fused_forward.register_autograd(_backward, setup_context=_setup_context)


class _Eager(torch.autograd.Function):
    """fused_forward and its backward for eager mode (see the module's docstring)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, canon: Canon, backend: str) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.canon, ctx.backend = canon, backend
        return _run(x, None, canon, backend)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (x,) = ctx.saved_tensors
        return _run(x, g, ctx.canon, ctx.backend), None, None


class _Native(torch.autograd.Function):
    """The eager path's common case, an input the C kernel takes as it is (its plan needs no
    copy), with the kernel's arguments worked out once for forward and backward: fewer Python
    steps than `_Eager`'s general path, which plans again in each direction."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, args: tuple) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.args = args
        out = native.empty_like(x)
        native.run(args, x, None, out)
        return out

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (x,) = ctx.saved_tensors
        out = native.empty_like(x)
        native.run(ctx.args, x, _in_layout_of(g, x), out)
        return out, None


def _graph_mode() -> bool:
    """Whether torch.compile, export, tracing or scripting is capturing this call."""
    return (torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch.jit.is_tracing()
            or torch.jit.is_scripting())


def native_args(x: torch.Tensor, canon: Canon) -> tuple | None:
    """The C kernel's arguments for `_Native` when it takes x as it is (its plan needs no copy),
    else None. They depend on x only through its shape, strides, dtype and device, so a caller
    may keep them for the next input alike in these (LocalResponseNorm does)."""
    check_input(x)
    if x.numel() == 0:
        return None
    plan = _native_plan(x, canon.region)
    if plan is None or plan[2] is not x:
        return None
    layout, dims, _ = plan
    return native.args(layout, x.dtype, dims, canon.lo, canon.hi, canon.scale, canon.k, canon.beta)


def native_fast(x: torch.Tensor, args: tuple) -> torch.Tensor:
    """The eager C path with arguments from `native_args` for an input like x (not in graph mode)."""
    return _Native.apply(x, args)


def fused(x: torch.Tensor, canon: Canon, backend: str = "auto") -> torch.Tensor:
    """LRN of x with the fused kernels; backend 'auto' (C where it applies), 'native' or 'torch'."""
    graph = _graph_mode()
    if backend == "auto" and not graph:
        args = native_args(x, canon)  # checks x
        if args is not None:
            return _Native.apply(x, args)
    else:
        check_input(x)
    widen = x.dtype in HALF and not (backend != "torch" and _native_applies(x, canon.region))
    xf = x.float() if widen else x
    if graph:
        y = fused_forward(xf, canon.region, canon.lo, canon.hi, canon.scale, canon.k, canon.beta, backend)
    else:
        y = _Eager.apply(xf, canon, backend)
    return y.to(x.dtype) if widen else y
