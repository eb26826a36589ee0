"""Datasets as uint8 tensors in memory: loading, class and per-class selection, validation split.

`load_data(cfg.data)` returns a `Data` with `train`, `val` (or None) and `test` splits; the
training loop augments and normalizes each batch itself with the dataset's transforms
(`augment.py`). Image folders are selected file by file (`folder.Files`) with the same functions
before anything is decoded, then read from their memory-mapped cache (`folder.py`).
"""
from __future__ import annotations

import difflib
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch

from ..config import CIFAR_SIZE, DataConfig
from ..errors import UserError
from . import augment, cifar, folder, synthetic
from .cifar import DataWarning

SPLIT_SEED = 0  # subsets and the validation split are fixed: seeds vary the training, not the data


@dataclass
class Split:
    x: torch.Tensor  # (N, C, H, W) uint8
    y: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.y)

    def take(self, idx: torch.Tensor) -> "Split":
        return Split(self.x[idx], self.y[idx])

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        """The images `idx` as one batch, in the layout they are stored in. Whole rows are copied
        (`x[idx]` indexes element by element: 10x slower for CIFAR batches). An image folder's
        memory-mapped channels-last array goes through NumPy: one thread copying rows took
        0.4 ms for 128 images where torch's two threads page-faulting into the mapping took
        6 ms to a second on a busy machine."""
        if self.x.is_contiguous(memory_format=torch.channels_last) and not self.x.is_contiguous():
            rows = self.x.permute(0, 2, 3, 1).numpy()[idx.numpy()]
            return torch.from_numpy(rows).permute(0, 3, 1, 2)
        return self.x.index_select(0, idx)


@dataclass
class Data:
    train: Split
    val: Split | None
    test: Split
    classes: list[str]
    mean: torch.Tensor  # per channel, 0-255 units
    std: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)
    input_size: int | None = None  # side of the images the model sees (default: as stored)
    # (uint8 batch, generator) -> uint8 batch of input_size; None: data.augment's padded crop and flip
    train_transform: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None
    # uint8 batch -> uint8 batch of input_size; None: the images as stored
    eval_transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    # (stored images, indices, generator) -> normalized float32 CPU batch in one pass, where a
    # dataset has one: the same crops as train_transform, without the gather and the uint8 trip
    train_batch: Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return self.train.x.shape[1]

    @property
    def image_size(self) -> int:
        return self.input_size or self.train.x.shape[-1]


def load_data(cfg: DataConfig) -> Data:
    if cfg.dataset == "imagefolder":
        return load_folder(cfg)
    if cfg.dataset == "cifar10":
        if cfg.image_size is not None and not 8 <= cfg.image_size <= CIFAR_SIZE:
            raise UserError(f"data.image_size: CIFAR-10 images are {CIFAR_SIZE} px (got {cfg.image_size}); "
                            f"leave it unset for the whole image, or set a crop of 8 to {CIFAR_SIZE} px (e.g. 24)")
        (tx, ty), (sx, sy), names = cifar.load(cfg.root, cfg.download)
    else:  # synthetic
        n = cfg.classes if isinstance(cfg.classes, int) else 10
        (tx, ty), (sx, sy), names = synthetic.make(n, cfg.per_class or 200, cfg.test_per_class or 50,
                                                   cfg.image_size or 32)
    train, val, test, classes = select(cfg, Split(tx, ty), Split(sx, sy), names)
    for name, split in (("training", train), ("test", test)):
        if len(split) == 0:
            raise UserError(f"data: the {name} set is empty after data.classes / data.per_class")
    mean, std = input_scale(cfg.normalize, *augment.channel_stats(train.x))
    info = {"dataset": cfg.dataset, "classes": classes, "train": len(train),
            "val": len(val) if val else 0, "test": len(test), "image_size": train.x.shape[-1],
            **stats_info(mean, std)}
    size = cfg.image_size if cfg.dataset == "cifar10" else None
    if size is not None and size < train.x.shape[-1]:
        info.update(image_size=size, stored_size=train.x.shape[-1])
        train_tf, eval_tf = crop_transforms(cfg, size)
        return Data(train, val, test, classes, mean, std, info, input_size=size,
                    train_transform=train_tf, eval_transform=eval_tf)
    return Data(train, val, test, classes, mean, std, info)


def crop_transforms(cfg: DataConfig, size: int) -> tuple[Callable, Callable]:
    """CIFAR-10 at data.image_size below its 32 px: training takes a `size` crop moved by up to
    data.augment.crop pixels each way from the centre (zero padding beyond the image; 24 px with
    crop 4 is any 24 px window of the image, as cuda-convnet's cifar-cropped data provider draws
    them) and the flip; evaluation takes the centre crop (cuda-convnet's single-view test; its
    --multiview-test averages ten views, which this does not)."""
    aug = cfg.augment

    def train_transform(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return augment.crop_flip(x, aug.crop, aug.flip, generator, size=size)

    return train_transform, lambda x: augment.center_crop(x, size)


def input_scale(mode: str, mean: torch.Tensor, std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """data.normalize as the (mean, std) that `augment.normalize` subtracts and divides by, in 0-255
    units, from the data's per-channel mean and std: `unit` keeps them (mean 0, std 1 per channel);
    `caffe` subtracts the mean and keeps the 0-255 scale (Caffe's CIFAR-10 example subtracts a mean
    image, its ImageNet ones a per-channel mean: this is the per-channel mean); `none` is x / 255."""
    if mode == "caffe":
        return mean, torch.ones_like(std)
    if mode == "none":
        return torch.zeros_like(mean), torch.full_like(std, 255.0)
    return mean, std


def stats_info(mean: torch.Tensor, std: torch.Tensor) -> dict[str, list[float]]:
    """The normalization a model was trained with, for summary.json (and `lrn export`): per-channel
    mean and std in 0-255 units, exactly (the float32 values as floats)."""
    return {"mean": [float(v) for v in mean.tolist()], "std": [float(v) for v in std.tolist()]}


def load_folder(cfg: DataConfig) -> Data:
    """An image folder: choose classes, list their files, choose files, read them through the cache."""
    names = folder.class_names(cfg.root)
    keep = select_classes(cfg.classes, names) if cfg.classes is not None else range(len(names))
    listing = folder.scan(cfg.root, [names[i] for i in keep])
    root = listing.root
    if listing.test is None and not cfg.val_split:
        raise UserError(f"data.val_split: {root} has no val/ folder, so the test set is carved out of "
                        "train/; set data.val_split to the fraction to hold out (e.g. 0.1)")
    chosen = cfg.model_copy(update={"classes": None})  # the listing holds the chosen classes only
    train_files, val_files, test_files, classes = select(chosen, listing.train, listing.test, listing.classes)
    check_classes(train_files, classes, root, [])
    if len(test_files) == 0:
        raise UserError(f"{root / 'val'}: no images of the chosen classes ({', '.join(classes[:5])} ...); "
                        "its class folders must be named as in train/")
    size = folder.stored_size(cfg.image_size)
    cache = folder.cache_folder(cfg.cache, root)
    splits: dict[str, Split | None] = {}
    skipped: list[str] = []
    built: list[str] = []
    for name, files in (("train", train_files), ("val", val_files), ("test", test_files)):
        splits[name] = None
        if files is not None:
            x, y, bad, new = folder.load_images(files, classes, size, cache, f"{name} images of {root}")
            splits[name] = Split(x, y)
            skipped += bad
            built += [name] if new else []
    if skipped:
        shown = folder.SHOW_SKIPPED
        warnings.warn(f"{root}: skipped {len(skipped)} unreadable image(s) ({', '.join(skipped[:shown])}"
                      f"{' ...' if len(skipped) > shown else ''}); they are left out and counted in the "
                      "summary's data.skipped", DataWarning, stacklevel=2)
    train, val, test = splits["train"], splits["val"], splits["test"]
    check_classes(train, classes, root, skipped)
    if len(test) == 0:
        raise UserError(f"{root}: none of the {len(test_files)} test images could be read "
                        f"(e.g. {skipped[-1]}); replace them with readable images")
    mean, std = input_scale(cfg.normalize, augment.IMAGENET_MEAN.clone(), augment.IMAGENET_STD.clone())
    info = {"dataset": cfg.dataset, "root": str(root), "layout": listing.layout, "classes": classes,
            "train": len(train), "val": len(val) if val else 0, "test": len(test),
            "counts": {name: torch.bincount(s.y, minlength=len(classes)).tolist()
                       for name, s in splits.items() if s is not None},
            "image_size": cfg.image_size, "stored_size": size, "skipped": len(skipped),
            "skipped_files": skipped[:folder.SHOW_SKIPPED], "cache": str(cache), "cache_built": built,
            **stats_info(mean, std)}
    train_tf, eval_tf, batch = folder_transforms(cfg, (mean, std))
    return Data(train, val, test, classes, mean, std, info,
                input_size=cfg.image_size, train_transform=train_tf, eval_transform=eval_tf, train_batch=batch)


def folder_transforms(cfg: DataConfig, stats: tuple[torch.Tensor, torch.Tensor]) -> tuple[Callable, Callable, Callable | None]:
    """Training: a random-resized crop (or, with data.augment.crop 0, the center) and a flip;
    evaluation: the center crop, as ImageNet is evaluated. The third: the random-resized crop
    and normalization straight from the stored images (see Data.train_batch)."""
    size, aug = cfg.image_size, cfg.augment

    def train_transform(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if aug.crop:
            return augment.random_resized_crop_flip(x, size, generator, aug.scale, flip=aug.flip)
        return augment.crop_flip(augment.center_crop(x, size), 0, aug.flip, generator)

    def train_batch(x: torch.Tensor, idx: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return augment.random_resized_crop_flip(x, size, generator, aug.scale, flip=aug.flip, index=idx,
                                                normalize_with=stats)

    return train_transform, lambda x: augment.center_crop(x, size), train_batch if aug.crop else None


def check_classes(split: Any, classes: list[str], root: Any, skipped: list[str]) -> None:
    """Every chosen class needs at least one (readable) training image: name the first that has none."""
    counts = torch.bincount(split.y, minlength=len(classes))
    empty = [classes[i] for i in torch.nonzero(counts == 0).flatten().tolist()]
    if empty:
        why = f"no readable images ({len(skipped)} unreadable file(s) skipped in all)" if skipped else "no images"
        raise UserError(f"{root / 'train' / empty[0]}: {why}"
                        f"{f' (nor have {len(empty) - 1} more classes)' if len(empty) > 1 else ''}; "
                        "add images, or leave the class out with data.classes")


def select(cfg: DataConfig, train: Any, test: Any, names: list[str]) -> tuple[Any, Any, Any, list[str]]:
    """data.classes, data.per_class, data.test_per_class and data.val_split applied to a train and
    a test set (`Split`s, or `folder.Files` before decoding) -> (train, val or None, test, classes).
    A test set of None (an image folder without val/) is carved out of train with data.val_split."""
    keep = select_classes(cfg.classes, names) if cfg.classes is not None else list(range(len(names)))
    train = relabel(train, keep)
    test = relabel(test, keep) if test is not None else None
    classes = [names[i] for i in keep]
    if cfg.per_class:
        train = train.take(stratified_subset(train.y, cfg.per_class))
    val = None
    if test is None:
        train, test = split_off(train, cfg.val_split)
    elif cfg.val_split:
        train, val = split_off(train, cfg.val_split)
    if cfg.test_per_class:
        test = test.take(stratified_subset(test.y, cfg.test_per_class))
    return train, val, test, classes


def select_classes(want: int | list[str] | dict[str, int], names: list[str]) -> list[int]:
    """data.classes -> indices into `names`: the first N, the named classes in the given order, or
    ({random: N, seed: S}) N chosen at random with seed S, in the dataset's order."""
    if isinstance(want, (int, dict)):
        n = want if isinstance(want, int) else want["random"]
        if n > len(names):
            raise UserError(f"data.classes: {n} classes asked for, the dataset has {len(names)}")
        if isinstance(want, int):
            return list(range(n))
        g = torch.Generator().manual_seed(want["seed"])
        return sorted(torch.randperm(len(names), generator=g)[:n].tolist())
    idx = []
    for name in want:
        if name not in names:
            close = difflib.get_close_matches(name, names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            some = ", ".join(names[:20]) + (f" ... ({len(names)} in all)" if len(names) > 20 else "")
            raise UserError(f"data.classes: no class '{name}'{hint}; classes are {some}")
        idx.append(names.index(name))
    return idx


def relabel(split: Any, keep: list[int]) -> Any:
    """Keep only the classes `keep`, renumbered 0..len(keep)-1 in that order (a `Split` or `Files`)."""
    n = max(int(split.y.max()) + 1 if len(split) else 0, max(keep) + 1)
    if keep == list(range(n)):
        return split
    lookup = torch.full((n,), -1, dtype=torch.int64)
    lookup[torch.tensor(keep)] = torch.arange(len(keep))
    new = lookup[split.y]
    idx = torch.nonzero(new >= 0).flatten()
    return replace(split.take(idx), y=new[idx])


def stratified_subset(y: torch.Tensor, per_class: int) -> torch.Tensor:
    """Indices of at most `per_class` items of each class, chosen at random with a fixed seed."""
    g = torch.Generator().manual_seed(SPLIT_SEED)
    picks = []
    for c in torch.unique(y):
        idx = torch.nonzero(y == c).flatten()
        picks.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    return torch.cat(picks).sort().values


def split_off(split: Any, fraction: float) -> tuple[Any, Any]:
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
