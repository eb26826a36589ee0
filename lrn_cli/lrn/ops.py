"""Low-level LRN operations shared by the reference formula (`functional.py`) and the fused
kernels' PyTorch backend (`kernels/fused.py`); both import them from here."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .conventions import Canon

HALF = (torch.float16, torch.bfloat16)  # computed in float32


def check_input(x: torch.Tensor) -> None:
    if x.dim() < 3:
        raise ValueError(f"LRN expects an input of 3 or more dimensions (N, C, ...), got shape {tuple(x.shape)}")


def box_sum(t: torch.Tensor, dim: int, lo: int, hi: int) -> torch.Tensor:
    """out[i] = sum_{j=i-lo}^{i+hi} t[j] along `dim`, with zeros outside the tensor."""
    n = t.shape[dim]
    padded = F.pad(t, [0, 0] * (t.dim() - dim - 1) + [lo, hi])
    out = padded.narrow(dim, 0, n)
    for j in range(1, lo + hi + 1):
        out = out + padded.narrow(dim, j, n)
    return out


def window_dims(x: torch.Tensor, canon: Canon) -> list[int]:
    """The dimensions a window spans: the channels (across), or every spatial one (within)."""
    return [1] if canon.region == "across" else list(range(2, x.dim()))


def window_sum_of_squares(x: torch.Tensor, canon: Canon) -> torch.Tensor:
    """sum of a^2 over each element's window: channels (across) or pixels (within)."""
    s = x * x
    for d in window_dims(x, canon):  # the window is a box, so the sum is separable
        s = box_sum(s, d, canon.lo, canon.hi)
    return s
