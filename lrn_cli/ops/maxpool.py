"""Max pooling for the classic networks' NCHW layers, computed by a C kernel on the CPU.

    y[i, j] = max over the window's input pixels inside the plane (padding never wins)

`MaxPool2d` is `nn.MaxPool2d` (same arguments, state and printout) whose forward, for a
contiguous NCHW float32/float64 CPU input without dilation or indices, runs `maxpool_cpu.c`:
the same output as torch, and the same gradient (each output's gradient goes to the element
torch's CPU kernel picks: the first maximum in row-major order, or the last NaN). Everything
else, and tracing for export, takes torch's own path. Why: torch's NCHW max pooling runs at a
fraction of memory speed on the CPU (at (128, 32, 32, 32), 3 x 3 stride 2 with ceil_mode, as
cifar10_full's first pool, it took a quarter of the whole train step and half of evaluation).
In training it keeps int32 indices for the backward (torch keeps int64); in evaluation none.
"""
from __future__ import annotations

import ctypes

import torch
import torch.nn.functional as F
from torch import nn

from .. import native

DTYPE = {torch.float32: 0, torch.float64: 1}


def _lib() -> ctypes.CDLL | None:
    lib = native.library("maxpool_cpu")
    if lib is not None and lib.maxpool2d_cpu.argtypes is None:
        lib.maxpool2d_cpu.restype = ctypes.c_int
        lib.maxpool2d_cpu.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                      *[ctypes.c_long] * 5, *[ctypes.c_int] * 7]
    return lib


def _call(x: torch.Tensor | None, gy: torch.Tensor | None, out: torch.Tensor, idx: torch.Tensor | None,
          in_hw: tuple[int, int], out_hw: tuple[int, int], kernel: list[int], stride: list[int],
          padding: list[int]) -> None:
    planes = out.shape[0] * out.shape[1]
    ptr = lambda t: t.data_ptr() if t is not None else None  # noqa: E731
    rc = _lib().maxpool2d_cpu(DTYPE[out.dtype], ptr(x), ptr(gy), out.data_ptr(), ptr(idx), planes, *in_hw, *out_hw,
                              *kernel, *stride, *padding, torch.get_num_threads())
    if rc == -2:
        raise MemoryError("maxpool2d_cpu: out of memory for a row buffer")
    if rc != 0:
        raise RuntimeError(f"maxpool2d_cpu failed with code {rc}")


def _out_hw(x: torch.Tensor, kernel, stride, padding, ceil_mode) -> tuple[int, int]:
    """torch's own output size (its ceil_mode rule included), from a shape-only evaluation."""
    meta = F.max_pool2d(torch.empty(1, 1, *x.shape[2:], device="meta"), kernel, stride, padding, ceil_mode=ceil_mode)
    return meta.shape[2], meta.shape[3]


@torch.library.custom_op("lrn::max_pool2d", mutates_args=())
def max_pool2d(x: torch.Tensor, kernel: list[int], stride: list[int], padding: list[int],
               ceil_mode: bool) -> torch.Tensor:
    """The pooled output alone (evaluation: no indices to keep)."""
    ho, wo = _out_hw(x, kernel, stride, padding, ceil_mode)
    y = x.new_empty(x.shape[0], x.shape[1], ho, wo)
    _call(x, None, y, None, x.shape[2:], (ho, wo), kernel, stride, padding)
    return y


@torch.library.custom_op("lrn::max_pool2d_with_indices", mutates_args=())
def max_pool2d_with_indices(x: torch.Tensor, kernel: list[int], stride: list[int], padding: list[int],
                            ceil_mode: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The output and, per output, the flat position in its plane of the input it took (int32)."""
    ho, wo = _out_hw(x, kernel, stride, padding, ceil_mode)
    y = x.new_empty(x.shape[0], x.shape[1], ho, wo)
    idx = torch.empty(y.shape, dtype=torch.int32)
    _call(x, None, y, idx, x.shape[2:], (ho, wo), kernel, stride, padding)
    return y, idx


@torch.library.custom_op("lrn::max_pool2d_backward", mutates_args=())
def max_pool2d_backward(gy: torch.Tensor, idx: torch.Tensor, in_hw: list[int]) -> torch.Tensor:
    gx = gy.new_empty(gy.shape[0], gy.shape[1], *in_hw)
    _call(None, gy.contiguous(), gx, idx, tuple(in_hw), gy.shape[2:], [1, 1], [1, 1], [0, 0])
    return gx


@max_pool2d.register_fake
def _(x, kernel, stride, padding, ceil_mode):
    return x.new_empty(x.shape[0], x.shape[1], *_out_hw(x, kernel, stride, padding, ceil_mode))


@max_pool2d_with_indices.register_fake
def _(x, kernel, stride, padding, ceil_mode):
    y = x.new_empty(x.shape[0], x.shape[1], *_out_hw(x, kernel, stride, padding, ceil_mode))
    return y, torch.empty_like(y, dtype=torch.int32)


@max_pool2d_backward.register_fake
def _(gy, idx, in_hw):
    return gy.new_empty(gy.shape[0], gy.shape[1], *in_hw)


def _setup_context(ctx, inputs, output):
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(output[1])
    ctx.in_hw = list(inputs[0].shape[2:])


def _backward(ctx, gy, _gidx):
    (idx,) = ctx.saved_tensors
    return max_pool2d_backward(gy, idx, ctx.in_hw), None, None, None, None


max_pool2d_with_indices.register_autograd(_backward, setup_context=_setup_context)


def _pair(v) -> list[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(t) for t in v]


class MaxPool2d(nn.MaxPool2d):
    __doc__ = nn.MaxPool2d.__doc__

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (not torch.jit.is_tracing() and not torch.jit.is_scripting() and not torch.compiler.is_exporting()
                and x.dim() == 4 and x.device.type == "cpu" and x.dtype in DTYPE and x.is_contiguous()
                and _pair(self.dilation) == [1, 1] and not self.return_indices
                and 0 < x.numel() and x.shape[2] * x.shape[3] < 2**31 and _lib() is not None):
            args = (_pair(self.kernel_size), _pair(self.stride or self.kernel_size), _pair(self.padding),
                    bool(self.ceil_mode))
            if torch.is_grad_enabled() and x.requires_grad:
                return max_pool2d_with_indices(x, *args)[0]
            return max_pool2d(x, *args)
        return super().forward(x)
