"""What every corruption shares: per-image random numbers and the choice of parameter table.

**Randomness per image.** `Rand(seed, name, severity, start, n)` holds one `torch.Generator` per
image of a batch, seeded from (seed, corruption name, severity, index of the image in its split),
where image i of the batch is image `start + i`. A corruption draws what it needs through it
(`rand.normal(3, 32, 32)` is an (n, 3, 32, 32) tensor whose row i comes from image i's generator
alone), so an image's bytes never depend on the batch it came in, the batch size or the number
of processes. A corruption must make the same sequence of draws for every image.

**Parameter tables.** The reference code (github hendrycks/robustness, ImageNet-C/create_c) has one
table of severity parameters per image size: `make_cifar_c.py` for CIFAR's 32 px,
`make_tinyimagenet_c.py` for Tiny-ImageNet's 64 px, `make_imagenet_c.py` for ImageNet's 224 px.
Images of another size use, by their side: below 48 px CIFAR's table (48: halfway from 32 to
64), below 96 px Tiny-ImageNet's, from 96 px ImageNet's (`table_for`): ImageNet-derived image
folders such as Imagenette are evaluated at 96-224 px crops, and ImageNet-C's parameters are the
ones made for ImageNet's images. Parameters given in pixels (blur radii, displacements) are those
of the table, not rescaled; every result records the table used, and `eval.corruption_table`
chooses one by name.
"""
from __future__ import annotations

import hashlib
import sys

import torch

# table name -> the image side its parameters were written for
TABLES: dict[str, int] = {"cifar10": 32, "tinyimagenet": 64, "imagenet": 224}


def table_for(size: int) -> str:
    """The reference parameter table for square images of side `size` (see the module's doc)."""
    return "cifar10" if size < 48 else "tinyimagenet" if size < 96 else "imagenet"


def image_seed(seed: int, name: str, severity: int, index: int) -> int:
    """The generator seed of image `index` of a split under corruption `name` at `severity`."""
    return _image_seeds(seed, name, severity, index, 1)[0]


def _image_seeds(seed: int, name: str, severity: int, start: int, n: int) -> list[int]:
    """image_seed of images start..start+n-1."""
    prefix, blake2b, mask = f"{seed}:{name}:{severity}:", hashlib.blake2b, (1 << 63) - 1
    return [int.from_bytes(blake2b(f"{prefix}{i}".encode(), digest_size=8).digest(), "little") & mask
            for i in range(start, start + n)]


# Generators of Rand objects gone (and held by nothing else), to be seeded again: manual_seed
# resets a generator's whole state (its cached normal sample too) and costs half of making one.
_SPARE_GENERATORS: list[torch.Generator] = []
_MAX_SPARE = 4096


class Rand:
    """One generator per image; each method returns an (n, *shape) tensor, row i from image i's."""

    def __init__(self, seed: int, name: str, severity: int, start: int, n: int) -> None:
        seeds = _image_seeds(seed, name, severity, start, n)
        spare = min(len(seeds), len(_SPARE_GENERATORS))
        gens = _SPARE_GENERATORS[len(_SPARE_GENERATORS) - spare:]
        del _SPARE_GENERATORS[len(_SPARE_GENERATORS) - spare:]
        gens += [torch.Generator() for _ in range(len(seeds) - spare)]
        self.gens = [g.manual_seed(s) for g, s in zip(gens, seeds)]

    def __del__(self) -> None:
        gens = self.__dict__.get("gens")
        if gens is None or sys.getrefcount(gens) > 3:  # the list is held elsewhere too
            return
        free = [g for g in gens if sys.getrefcount(g) <= 3]  # (the list, g and the call's argument)
        _SPARE_GENERATORS.extend(free[:max(0, _MAX_SPARE - len(_SPARE_GENERATORS))])

    def __len__(self) -> int:
        return len(self.gens)

    def _rows(self, shape: tuple[int, ...], draw, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """An (n, *shape) tensor whose row i `draw(row, generator_i)` fills in place (no per-image
        temporaries to stack: fresh buffers cost page faults)."""
        if not self.gens:
            raise ValueError("Rand over an empty batch")
        out = torch.empty((len(self.gens), *shape), dtype=dtype)
        for row, g in zip(out.unbind(0), self.gens):
            draw(row, g)
        return out

    def uniform(self, *shape: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
        """Uniform on [low, high), float32 (torch.rand's draws: it is uniform_)."""
        out = self._rows(shape, lambda row, g: row.uniform_(generator=g))
        return out if (low, high) == (0.0, 1.0) else out.mul_(high - low).add_(low)

    def normal(self, *shape: int, mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
        """Normal(mean, std), float32 (torch.randn's draws: it is normal_)."""
        out = self._rows(shape, lambda row, g: row.normal_(generator=g))
        return out if (mean, std) == (0.0, 1.0) else out.mul_(std).add_(mean)

    def randint(self, low: int, high: int, *shape: int) -> torch.Tensor:
        """Integers uniform on [low, high), int64 (torch.randint's draws: it is random_)."""
        return self._rows(shape, lambda row, g: row.random_(low, high, generator=g), torch.int64)

    def poisson(self, rate: torch.Tensor) -> torch.Tensor:
        """Poisson draws with the (n, ...) float `rate`, row i from image i's generator."""
        if len(rate) != len(self.gens):
            raise ValueError(f"rate has {len(rate)} rows for {len(self.gens)} images")
        return torch.stack([torch.poisson(r.float(), generator=g) for r, g in zip(rate, self.gens)])


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 in [0, 1]."""
    return images.float().div_(255.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float in [0, 1] -> uint8, clipped and truncated as the reference's `np.uint8(...)` of its
    0-255 result (it truncates; it does not round). A tiny epsilon keeps values the reference
    computes as exact integers (x * 255 of a float64 like 0.6) from falling one level short in
    float32. The cast truncates, which for these values in [0.001, 255.001] is the floor (through
    int16: the same bytes, and float -> int16 -> uint8 is three times as fast as float -> uint8)."""
    return x.clamp(0.0, 1.0).mul_(255.0).add_(1e-3).to(torch.int16).to(torch.uint8)
