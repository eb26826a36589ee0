"""Local Response Normalization as functions: the reference formula, written once.

    b = a * (k + scale * sum_{window} a^2) ^ (-beta)

`local_response_norm` takes a convention's own parameters, maps them to the canonical form
(`conventions.LRNParams.canon`) and evaluates it. `reference` is the plain autograd formula that
every faster implementation is checked against.
"""
from __future__ import annotations

import torch

from .conventions import Canon, LRNParams
from .kernels.fused import fused
from .ops import HALF, check_input, window_sum_of_squares

IMPLS = ("fused", "reference")


def factor(x: torch.Tensor, canon: Canon) -> torch.Tensor:
    """What LRN multiplies each element by: f = (k + scale * sum_{window} a^2) ^ (-beta)."""
    return (canon.k + canon.scale * window_sum_of_squares(x, canon)).pow(-canon.beta)


def reference(x: torch.Tensor, canon: Canon) -> torch.Tensor:
    """The canonical formula with plain autograd; half types are computed in float32."""
    check_input(x)
    xf = x.float() if x.dtype in HALF else x
    out = xf * factor(xf, canon)
    return keep_format(out.to(x.dtype), x)


def apply(x: torch.Tensor, canon: Canon, impl: str = "fused") -> torch.Tensor:
    """Evaluate the canonical LRN with the fused kernels or the reference formula."""
    return reference(x, canon) if impl == "reference" else fused(x, canon)


def local_response_norm(x: torch.Tensor, size: int | None = None, alpha: float | None = None,
                        beta: float | None = None, k: float | None = None, region: str = "across",
                        convention: str = "torch", impl: str = "fused") -> torch.Tensor:
    """LRN of `x` (N, C, *spatial) with a convention's own parameters (None: its default)."""
    return apply(x, LRNParams(size, alpha, beta, k, region, convention).canon(max(x.dim() - 2, 1)), impl)


def keep_format(out: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Return `out` in the memory format of `like` (channels_last in -> channels_last out)."""
    for fmt, ndim in ((torch.channels_last, 4), (torch.channels_last_3d, 5)):
        if like.dim() == ndim and not like.is_contiguous() and like.is_contiguous(memory_format=fmt):
            return out.contiguous(memory_format=fmt)
    return out
