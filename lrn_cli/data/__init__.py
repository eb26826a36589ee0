"""Datasets as uint8 tensors in memory: loading, class and per-class selection, validation split.

`load_data(cfg.data)` returns a `Data` with `train`, `val` (or None) and `test` splits; the
training loop augments and normalizes each batch itself (`augment.py`).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

import torch

from ..config import DataConfig
from ..errors import UserError
from . import augment, cifar, synthetic

SPLIT_SEED = 0  # subsets and the validation split are fixed: seeds vary the training, not the data


@dataclass
class Split:
    x: torch.Tensor  # (N, C, H, W) uint8
    y: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.y)

    def take(self, idx: torch.Tensor) -> "Split":
        return Split(self.x[idx], self.y[idx])


@dataclass
class Data:
    train: Split
    val: Split | None
    test: Split
    classes: list[str]
    mean: torch.Tensor  # per channel, 0-255 units
    std: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return self.train.x.shape[1]

    @property
    def image_size(self) -> int:
        return self.train.x.shape[-1]


def load_data(cfg: DataConfig) -> Data:
    if cfg.dataset == "cifar10":
        if cfg.image_size not in (None, 32):
            raise UserError(f"data.image_size: CIFAR-10 images are 32 px (got {cfg.image_size}); "
                            "leave it unset or set it to 32")
        (tx, ty), (sx, sy), names = cifar.load(cfg.root, cfg.download)
    else:  # synthetic
        n = cfg.classes if isinstance(cfg.classes, int) else 10
        (tx, ty), (sx, sy), names = synthetic.make(n, cfg.per_class or 200, cfg.test_per_class or 50,
                                                   cfg.image_size or 32)
    train, test = Split(tx, ty), Split(sx, sy)
    keep = select_classes(cfg.classes, names) if cfg.classes is not None else list(range(len(names)))
    train, test = relabel(train, keep), relabel(test, keep)
    classes = [names[i] for i in keep]
    if cfg.per_class:
        train = train.take(stratified_subset(train.y, cfg.per_class))
    if cfg.test_per_class:
        test = test.take(stratified_subset(test.y, cfg.test_per_class))
    val = None
    if cfg.val_split:
        train, val = split_off(train, cfg.val_split)
    for name, split in (("training", train), ("test", test)):
        if len(split) == 0:
            raise UserError(f"data: the {name} set is empty after data.classes / data.per_class")
    mean, std = augment.channel_stats(train.x)
    info = {"dataset": cfg.dataset, "classes": classes, "train": len(train),
            "val": len(val) if val else 0, "test": len(test)}
    return Data(train, val, test, classes, mean, std, info)


def select_classes(want: int | list[str], names: list[str]) -> list[int]:
    """data.classes -> indices into `names`: the first N, or the named classes in the given order."""
    if isinstance(want, int):
        if want > len(names):
            raise UserError(f"data.classes: {want} classes asked for, the dataset has {len(names)}")
        return list(range(want))
    idx = []
    for name in want:
        if name not in names:
            close = difflib.get_close_matches(name, names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise UserError(f"data.classes: no class '{name}'{hint}; classes are {', '.join(names)}")
        idx.append(names.index(name))
    return idx


def relabel(split: Split, keep: list[int]) -> Split:
    """Keep only the classes `keep`, renumbered 0..len(keep)-1 in that order."""
    if keep == list(range(int(split.y.max()) + 1)):
        return split
    lookup = torch.full((int(split.y.max()) + 1,), -1, dtype=torch.int64)
    lookup[torch.tensor(keep)] = torch.arange(len(keep))
    new = lookup[split.y]
    mask = new >= 0
    return Split(split.x[mask], new[mask])


def stratified_subset(y: torch.Tensor, per_class: int) -> torch.Tensor:
    """Indices of at most `per_class` items of each class, chosen at random with a fixed seed."""
    g = torch.Generator().manual_seed(SPLIT_SEED)
    picks = []
    for c in torch.unique(y):
        idx = torch.nonzero(y == c).flatten()
        picks.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    return torch.cat(picks).sort().values


def split_off(split: Split, fraction: float) -> tuple[Split, Split]:
    """Stratified (train, val) split with a fixed seed; every class keeps >= 1 training item."""
    g = torch.Generator().manual_seed(SPLIT_SEED + 1)
    train_idx, val_idx = [], []
    for c in torch.unique(split.y):
        idx = torch.nonzero(split.y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_val = min(len(idx) - 1, round(fraction * len(idx)))
        val_idx.append(idx[:n_val])
        train_idx.append(idx[n_val:])
    val = torch.cat(val_idx).sort().values
    if len(val) == 0:
        raise UserError(f"data.val_split: {fraction} of the training set is no image at all; "
                        "raise data.val_split or data.per_class")
    return split.take(torch.cat(train_idx).sort().values), split.take(val)
