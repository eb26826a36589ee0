"""Local Response Normalization as functions: the reference formula, written once.

    b = a * (k + scale * sum_{window} a^2) ^ (-beta)

`local_response_norm` takes a convention's own parameters, maps them to the canonical form
(`conventions.canonical`) and evaluates it. `reference` is the plain autograd formula that every
faster implementation is checked against.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .conventions import Canon, canonical, with_defaults

_HALF = (torch.float16, torch.bfloat16)
IMPLS = ("fused", "reference")


def box_sum(t: torch.Tensor, dim: int, lo: int, hi: int) -> torch.Tensor:
    """out[i] = sum_{j=i-lo}^{i+hi} t[j] along `dim`, with zeros outside the tensor."""
    n = t.shape[dim]
    padded = F.pad(t, [0, 0] * (t.dim() - dim - 1) + [lo, hi])
    out = padded.narrow(dim, 0, n)
    for j in range(1, lo + hi + 1):
        out = out + padded.narrow(dim, j, n)
    return out


def window_sum_of_squares(x: torch.Tensor, canon: Canon) -> torch.Tensor:
    """sum of a^2 over each element's window: channels (across) or pixels (within)."""
    s = x * x
    dims = [1] if canon.region == "across" else range(2, x.dim())
    for d in dims:  # the window is a box, so the sum is separable
        s = box_sum(s, d, canon.lo, canon.hi)
    return s


def reference(x: torch.Tensor, canon: Canon) -> torch.Tensor:
    """The canonical formula with plain autograd; half types are computed in float32."""
    _check_input(x)
    xf = x.float() if x.dtype in _HALF else x
    out = xf * (canon.k + canon.scale * window_sum_of_squares(xf, canon)).pow(-canon.beta)
    return keep_format(out.to(x.dtype), x)


def apply(x: torch.Tensor, canon: Canon, impl: str = "fused") -> torch.Tensor:
    """Evaluate the canonical LRN with the fused kernels or the reference formula."""
    if impl == "reference":
        return reference(x, canon)
    from .kernels.fused import fused

    return fused(x, canon)


def local_response_norm(x: torch.Tensor, size: int | None = None, alpha: float | None = None,
                        beta: float | None = None, k: float | None = None, region: str = "across",
                        convention: str = "torch", impl: str = "fused") -> torch.Tensor:
    """LRN of `x` (N, C, *spatial) with a convention's own parameters (None: its default)."""
    p = with_defaults(convention, size=size, alpha=alpha, beta=beta, k=k)
    return apply(x, canonical(region=region, convention=convention, dims=max(x.dim() - 2, 1), **p), impl)


def keep_format(out: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Return `out` in the memory format of `like` (channels_last in -> channels_last out)."""
    for fmt, ndim in ((torch.channels_last, 4), (torch.channels_last_3d, 5)):
        if like.dim() == ndim and not like.is_contiguous() and like.is_contiguous(memory_format=fmt):
            return out.contiguous(memory_format=fmt)
    return out


def _check_input(x: torch.Tensor) -> None:
    if x.dim() < 3:
        raise ValueError(f"LRN expects an input of 3 or more dimensions (N, C, ...), got shape {tuple(x.shape)}")
