"""Generated, learnable images for smoke tests and CI: each class is a smooth colour pattern.

An image is its class's pattern at a random brightness plus Gaussian noise, so a small CNN
learns it in an epoch or two, and nothing needs to be downloaded.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

SEED = 1234  # the data are the same for every run; the run's seed varies only the training


def make(num_classes: int, per_class: int, test_per_class: int, image_size: int):
    """-> ((train_x, train_y), (test_x, test_y), classes); x is N x 3 x S x S uint8."""
    g = torch.Generator().manual_seed(SEED)
    patterns = F.interpolate(torch.rand(num_classes, 3, 4, 4, generator=g), size=image_size,
                             mode="bilinear", align_corners=False)

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(num_classes).repeat_interleave(n)
        brightness = 0.7 + 0.6 * torch.rand(len(y), 1, 1, 1, generator=g)
        noise = 0.25 * torch.randn(len(y), 3, image_size, image_size, generator=g)
        x = (patterns[y] * brightness + noise).clamp(0, 1).mul(255).round().to(torch.uint8)
        return x, y

    return sample(per_class), sample(test_per_class), [f"pattern{i}" for i in range(num_classes)]
