"""Batched augmentation and normalization on uint8 tensors (no per-image PIL work)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def crop_flip(x: torch.Tensor, pad: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random crop with `pad` pixels of zero padding and random horizontal flip, per image.

    `x` is a uint8 batch (B, C, H, W); the result has the same shape and dtype. Both the crop and
    the flip are one gather, so a batch costs about one copy of itself.
    """
    if pad == 0 and not flip:
        return x
    b, c, h, w = x.shape
    rows = torch.arange(h).expand(b, h)
    cols = torch.arange(w).expand(b, w)
    if pad:
        x = F.pad(x, (pad, pad, pad, pad))
        rows = rows + torch.randint(0, 2 * pad + 1, (b, 1), generator=generator)
        cols = cols + torch.randint(0, 2 * pad + 1, (b, 1), generator=generator)
    if flip:
        mirrored = torch.rand(b, 1, generator=generator) < 0.5
        cols = torch.where(mirrored, cols.flip(1), cols)
    batch = torch.arange(b).view(b, 1, 1, 1)
    chans = torch.arange(c).view(1, c, 1, 1)
    return x[batch, chans, rows.view(b, 1, h, 1), cols.view(b, 1, 1, w)]


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 with per-channel mean 0 and std 1 (mean, std in 0-255 units)."""
    return (x.float() - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact per-channel mean and std of a uint8 set, from a 256-bin histogram per channel."""
    values = torch.arange(256, dtype=torch.float64)
    means, stds = [], []
    for ch in range(x.shape[1]):
        counts = torch.bincount(x[:, ch].reshape(-1), minlength=256).double()
        n = counts.sum()
        mean = (counts * values).sum() / n
        means.append(mean)
        stds.append(((counts * (values - mean) ** 2).sum() / n).sqrt().clamp_min(1.0))
    return torch.stack(means).float(), torch.stack(stds).float()
