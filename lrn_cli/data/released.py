"""The released corrupted test sets (Hendrycks & Dietterich, ICLR 2019) read in place of corrupting
on the fly, from `eval.corruptions_root`. Nothing is written to disk.

Two formats, told apart by `labels.npy` at the root:

* **CIFAR-10-C / CIFAR-100-C** (`format == "cifar-c"`): a folder of `<name>.npy`, each an
  (L, 32, 32, 3) uint8 array, and `labels.npy`, L integer labels. L is 5 blocks of n images,
  severities 1..5 in order, each block the test set in its original order (the real files have
  n = 10,000, L = 50,000; n is taken as L / 5, so small copies work too), and `labels.npy` is the
  test labels repeated 5 times (checked block by block). The arrays are memory-mapped
  (`np.load(mmap_mode="r")`): a batch reads only its own rows.
  The labels are class indices, the files have no class names, so the run's `classes` are matched
  by count and order: K classes in the file (labels 0..K-1) need the run's K classes in the
  dataset's order (for CIFAR-10: airplane, automobile, ... truck; for CIFAR-100-C: its 100 in
  CIFAR-100's order). A run on some of CIFAR-10's classes, named as CIFAR-10 names them (a
  CIFAR-10 run with `data.classes`), is matched by name instead: images of the other classes
  are left out.
* **ImageNet-C / Tiny-ImageNet-C** (`format == "imagenet-c tree"`): `<root>/<name>/<severity>/<class>/
  <image files>` (JPEG in both releases; PNG, WebP and GIF are read too; other files are passed
  over), already corrupted: ImageNet-C's are 224 x 224 center crops, Tiny-ImageNet-C's 64 x 64.
  The run's classes are folder names (wnids for Imagenette, Imagewoof, Tiny ImageNet); class
  folders of other classes are ignored. Every (name, severity) folder must hold the same files
  for the run's classes (the same images under every corruption). Images are decoded with
  `torchvision.io.decode_image` (RGB) when their batch is read, then passed through
  `eval_transform` (a uint8 batch -> uint8 batch of the run's input size, e.g.
  `resize_center_crop(112, 128)`: the shorter side to 128, the central 112 x 112), or, without
  one, must already be `image_size` square.
  Which transform gives the view the run's clean test images get (an image-folder run resizes
  the shorter side to `folder.stored_size(S)` = 8/7 S and crops the central S): ImageNet-C's
  images are that view already (resize 256, center 224), so a run at S needs them resized to S,
  `resize_center_crop(S, S)`; the run's own `Data.eval_transform` (a center crop only) would crop
  them a second time. Tiny-ImageNet-C's are whole 64 px images, as Tiny ImageNet's val/ is, so
  they need the run's whole pipeline, `resize_center_crop(S, folder.stored_size(S))`.

API::

    RELEASED_NAMES                      # the 19 released corruptions (15 benchmark + 4 extra)
    available(root) -> set[str]         # which of them root holds
    rel = open_released(root, names, severities, classes, per_class=None,
                        eval_transform=None, image_size=None)
    for x, y in rel.batches(name, severity, batch_size): ...
        # x: uint8 (B, 3, H, W) contiguous, y: int64 indices into `classes`; a fixed order
    rel.source       # "released"
    rel.format       # "cifar-c" | "imagenet-c tree"
    rel.count        # images per (name, severity)
    rel.labels       # their labels, in batch order (the same for every name and severity)
    rel.description  # format, root, images per corruption and severity, transform (robustness.json)

`open_released` checks everything it can before anything is evaluated, for the names and
severities asked for: the root, each `<name>.npy` (shape and dtype, from its header), `labels.npy`
(length, the 5 blocks, the run's classes), each `<name>/<severity>/<class>` folder (present, not
empty, the same files as the others), the first image of each (name, severity) folder of a tree
(decodable), and that the first image, through `eval_transform` where there is one, is the run's
`image_size` square. A `<name>.npy` must be (L, S, S, 3) with S = `image_size` (default 32)
without an eval transform, any (L, H, W, 3) with one. Every problem is a `UserError` naming
`eval.corruptions_root` and the file or folder, with the fix; an image that cannot be decoded
later, when its batch is read, is one too. `per_class` picks at most that many images of each
class, stratified with a fixed seed (`stratified_subset`), the same images for every name and
severity.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError
from ..perf import usable_cores
from . import stratified_subset
from .augment import center_crop
from .cifar import CLASSES as CIFAR10_CLASSES

KEY = "eval.corruptions_root"
RELEASED_NAMES: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
    "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
    "jpeg_compression", "speckle_noise", "gaussian_blur", "spatter", "saturate",
)
SEVERITIES = (1, 2, 3, 4, 5)
CIFAR_SIDE = 32
LABELS = "labels.npy"
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".gif"}  # what torchvision.io.decode_image reads
MAX_DECODE_THREADS = 8  # decode_image releases the GIL: a batch's files are decoded by threads

Transform = Callable[[torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------------------- public functions

def available(root: str | Path) -> set[str]:
    """The released corruptions under `root`: `<name>.npy` files (CIFAR-C), else `<name>/` folders."""
    root = check_root(root)
    if (root / LABELS).is_file():
        return {n for n in RELEASED_NAMES if (root / f"{n}.npy").is_file()}
    return {n for n in RELEASED_NAMES if (root / n).is_dir()}


def open_released(root: str | Path, names: Iterable[str], severities: Iterable[int], classes: Sequence[str],
                  per_class: int | None = None, eval_transform: Transform | None = None,
                  image_size: int | None = None) -> Released:
    """Check the released files for `names` x `severities` and the run's `classes` -> `Released`."""
    root = check_root(root)
    names, severities, classes = list(names), list(severities), list(classes)
    for name in names:
        if name not in RELEASED_NAMES:
            raise UserError(f"eval.corruptions: '{name}' is not among the released corruptions "
                            f"({', '.join(RELEASED_NAMES)}); leave it out of eval.corruptions or unset "
                            f"{KEY} to corrupt the test set on the fly")
    for s in severities:
        if s not in SEVERITIES:
            raise ValueError(f"severity {s!r}: severities are 1 to 5")
    if not classes:
        raise ValueError("open_released: no classes")
    if per_class is not None and per_class < 1:
        raise ValueError(f"per_class {per_class}: at least 1")
    if (root / LABELS).is_file():
        return CifarC(root, names, severities, classes, per_class, eval_transform, image_size)
    if not any((root / n).is_dir() for n in names) and any(root.glob("*.npy")):
        raise UserError(f"{KEY}: {root / LABELS} is missing; a CIFAR-10-C folder holds labels.npy beside "
                        "the <corruption>.npy files: restore it from the release")
    return Tree(root, names, severities, classes, per_class, eval_transform, image_size)


TINY_SIDE = 64  # Tiny-ImageNet-C's whole images; ImageNet-C's are 224 crops


def view_for(root: str | Path, names: Iterable[str], image_size: int, stored_size: int) -> Transform | None:
    """The eval transform that gives a run's released test images the view its clean ones get
    (an image-folder run: shorter side to `stored_size`, center `image_size`): a CIFAR-C folder
    none (its images are the stored 32 px); a tree of images larger than TINY_SIDE (ImageNet-C:
    that view already) resized to the run's size; a tree of smaller ones (Tiny-ImageNet-C: whole
    images) the run's whole pipeline. Judged on the first image of the first name's tree."""
    root = check_root(root)
    if (root / LABELS).is_file():
        return None
    for name in names:
        first = next((p for p in sorted((root / name).glob("*/*/*"))
                      if p.suffix.lower() in IMAGE_EXTENSIONS), None) if (root / name).is_dir() else None
        if first is None:
            continue
        from torchvision.io import ImageReadMode, decode_image, read_file

        with quiet_torchvision():
            try:
                side = min(decode_image(read_file(str(first)), mode=ImageReadMode.RGB).shape[-2:])
            except (RuntimeError, ValueError, OSError):
                return resize_center_crop(image_size, image_size)  # open_released names the file
        if side <= TINY_SIDE:
            return resize_center_crop(image_size, stored_size)
        return resize_center_crop(image_size, image_size)
    return resize_center_crop(image_size, image_size)


def resize_center_crop(size: int, resize_to: int | None = None) -> Transform:
    """An eval transform: the shorter side resized to `resize_to` (antialiased bilinear, as the
    image-folder cache is built; None: no resize), then the central `size` x `size`."""

    def transform(x: torch.Tensor) -> torch.Tensor:
        if resize_to is not None and min(x.shape[-2:]) != resize_to:
            h, w = x.shape[-2:]
            scale = resize_to / min(h, w)
            out = (max(resize_to, round(h * scale)), max(resize_to, round(w * scale)))
            x = F.interpolate(x, size=out, mode="bilinear", antialias=True, align_corners=False)
        return center_crop(x, size)

    transform.description = (f"shorter side resized to {resize_to} px, antialiased bilinear, then the " if resize_to
                             else "") + f"center {size}x{size}"
    return transform


def check_root(root: str | Path) -> Path:
    path = Path(root).expanduser()
    if not path.is_dir():
        raise UserError(f"{KEY}: {path} is not a folder; point it at the extracted CIFAR-10-C folder "
                        "(<corruption>.npy + labels.npy) or ImageNet-C / Tiny-ImageNet-C tree "
                        "(<corruption>/<severity>/<class>/)")
    return path.resolve()


# ----------------------------------------------------------------------------- the common part

class Released:
    """The released images of some corruptions and severities, checked; read with `batches`."""

    source = "released"
    format: str

    def __init__(self, root: Path, names: list[str], severities: list[int], classes: list[str],
                 per_class: int | None, eval_transform: Transform | None, image_size: int | None) -> None:
        self.root, self.names, self.severities, self.classes = root, names, severities, classes
        self.per_class, self.eval_transform, self.image_size = per_class, eval_transform, image_size
        self.labels = torch.empty(0, dtype=torch.int64)  # of the chosen images, in batch order
        self.stored: tuple[int, int] | None = None  # (H, W) of the released images (a tree's first)

    @property
    def count(self) -> int:
        """Images per (name, severity)."""
        return len(self.labels)

    @property
    def description(self) -> str:
        n = len(self.classes)
        chosen = (f"at most {self.per_class} per class of {n} classes, stratified, fixed" if self.per_class
                  else f"all of the run's {n} classes")
        stored = f"{self.stored[1]}x{self.stored[0]} px" if self.stored else "stored"
        if self.eval_transform is not None:
            how = getattr(self.eval_transform, "description", None)
            shown = (f"{stored} images through the eval transform" + (f" ({how})" if how else "") +
                     (f" to {self.image_size}x{self.image_size}" if self.image_size else ""))
        else:
            shown = f"{stored} images as stored"
        return (f"released {self.format} at {self.root}: {self.count} images per corruption and severity "
                f"({chosen}), {shown}")

    def batches(self, name: str, severity: int, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The chosen images of `name` at `severity`: (uint8 (B, 3, H, W), int64 labels), in a fixed order."""
        if name not in self.names or severity not in self.severities:
            raise ValueError(f"{name} at severity {severity} was not opened "
                             f"(names {self.names}, severities {self.severities})")
        if batch_size < 1:
            raise ValueError(f"batch_size {batch_size}: at least 1")
        for start in range(0, self.count, batch_size):
            stop = min(start + batch_size, self.count)
            x = self._read(name, severity, start, stop)
            if self.image_size is not None and tuple(x.shape[-2:]) != (self.image_size, self.image_size):
                raise ValueError(f"eval_transform gave {tuple(x.shape)} images, not {self.image_size} px squares")
            yield x.contiguous(), self.labels[start:stop]

    def _read(self, name: str, severity: int, start: int, stop: int) -> torch.Tensor:
        """Chosen images start..stop of `name` at `severity`, through the eval transform if any."""
        raise NotImplementedError

    def _transform(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.eval_transform is None else self.eval_transform(x)

    def _check_transform(self, path: Path, x: torch.Tensor) -> None:
        """The eval transform on one released image (1, 3, H, W): it must give the run's input size."""
        if self.eval_transform is None:
            return
        h, w = x.shape[-2:]
        try:
            out = self.eval_transform(x)
        except (ValueError, RuntimeError) as e:
            why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"{KEY}: the run's eval transform fails on {path} ({w}x{h} px: {why}); use the "
                            "release made for the run's data.image_size") from None
        s = self.image_size
        if s is not None and tuple(out.shape[-2:]) != (s, s):
            raise UserError(f"{KEY}: the run's eval transform makes {out.shape[-1]}x{out.shape[-2]} px of {path} "
                            f"({w}x{h} px), the run's input is {s}x{s}; use the release made for the run's "
                            "data.image_size")


def choose(labels: torch.Tensor, per_class: int | None) -> torch.Tensor:
    """Positions of the images to use (all, or `per_class` of each class, stratified and fixed)."""
    return stratified_subset(labels, per_class) if per_class else torch.arange(len(labels))


# ----------------------------------------------------------------------------- CIFAR-10-C

class CifarC(Released):
    format = "cifar-c"

    def __init__(self, *args) -> None:
        super().__init__(*args)
        block_labels, self.block = self._check_labels()
        run_labels = self._match_classes(block_labels)
        kept = torch.nonzero(run_labels >= 0).flatten()
        pick = choose(run_labels[kept], self.per_class)
        self.index = kept[pick].numpy()  # positions within a block, ascending
        self.labels = run_labels[self.index]
        for name in self.names:
            self._check_array(name)
        if self.names:
            first = np.array(np.load(self.root / f"{self.names[0]}.npy", mmap_mode="r")[:1])
            self._check_transform(self.root / f"{self.names[0]}.npy", torch.from_numpy(first).permute(0, 3, 1, 2))

    def _check_labels(self) -> tuple[torch.Tensor, int]:
        path = self.root / LABELS
        labels = load_npy(path)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise UserError(f"{KEY}: {path} holds a {labels.dtype} array of shape {labels.shape}; expected one "
                            "integer label per image, shape (50000,): restore it from the release")
        n = len(labels) // len(SEVERITIES)
        if n == 0 or len(labels) % len(SEVERITIES):
            raise UserError(f"{KEY}: {path} holds {len(labels)} labels, not 5 equal blocks (one per severity; "
                            "50000 in the release): restore it from the release")
        labels = np.asarray(labels).astype(np.int64)
        first = labels[:n]
        for b in range(1, len(SEVERITIES)):
            differ = np.nonzero(labels[b * n:(b + 1) * n] != first)[0]
            if len(differ):
                i = int(differ[0])
                raise UserError(f"{KEY}: {path}: the labels of severity {b + 1} differ from severity 1's at "
                                f"image {i} (index {b * n + i}); the file is the test labels repeated 5 times: "
                                "restore it from the release")
        if first.min() < 0:
            raise UserError(f"{KEY}: {path} holds label {int(first.min())}; labels are class indices from 0: "
                            "restore it from the release")
        return torch.from_numpy(first), n

    def _match_classes(self, labels: torch.Tensor) -> torch.Tensor:
        """File labels -> the run's class indices (-1: a class the run does not have)."""
        path, classes = self.root / LABELS, self.classes
        k = int(labels.max()) + 1
        if k <= len(CIFAR10_CLASSES) and set(classes) <= set(CIFAR10_CLASSES) and classes != CIFAR10_CLASSES[:k]:
            lookup = torch.tensor([classes.index(c) if c in classes else -1 for c in CIFAR10_CLASSES[:k]])
            missing = [c for c in classes if c not in CIFAR10_CLASSES[:k]]
            if missing:
                raise UserError(f"{KEY}: {path} has no images of class '{missing[0]}' (labels 0-{k - 1}, CIFAR-10's "
                                f"{', '.join(CIFAR10_CLASSES[:k])}); use the full CIFAR-10-C release")
            return lookup[labels]
        if k > len(classes):
            raise UserError(f"{KEY}: {path} holds label {k - 1}, outside the run's {len(classes)} classes "
                            f"(0-{len(classes) - 1}: {', '.join(classes[:10])}{' ...' if len(classes) > 10 else ''}); "
                            "CIFAR-C labels are class indices, so evaluate a run trained on the release's classes "
                            "in their order (CIFAR-10-C: CIFAR-10's 10)")
        if k < len(classes):
            raise UserError(f"{KEY}: {path} holds labels of {k} classes (0-{k - 1}), the run has {len(classes)}; "
                            "CIFAR-C labels are class indices, so evaluate a run trained on the release's classes "
                            "in their order, or point it at the release of the run's dataset")
        return labels

    def _check_array(self, name: str) -> None:
        path = self.root / f"{name}.npy"
        if not path.is_file():
            raise UserError(f"{KEY}: {path} is missing; restore it from the release "
                            f"or leave {name} out of eval.corruptions")
        array = load_npy(path)
        total = self.block * len(SEVERITIES)
        found = f"shape {array.shape}" + ("" if array.dtype == np.uint8 else f", dtype {array.dtype}")
        if self.eval_transform is None:
            side = self.image_size or CIFAR_SIDE
            ok = array.ndim == 4 and array.shape == (total, side, side, 3)
            expected = f"({total}, {side}, {side}, 3) uint8"
        else:
            ok = array.ndim == 4 and array.shape[0] == total and array.shape[3] == 3
            expected = f"({total}, H, W, 3) uint8"
        if self.stored is None and array.ndim == 4:
            self.stored = (int(array.shape[1]), int(array.shape[2]))
        if not ok or array.dtype != np.uint8:
            raise UserError(f"{KEY}: {path} has {found}, expected {expected} (5 severities x {self.block} images "
                            f"as in {LABELS}, height, width, RGB); restore it from the release")

    def _read(self, name: str, severity: int, start: int, stop: int) -> torch.Tensor:
        array = np.load(self.root / f"{name}.npy", mmap_mode="r")
        rows = self.index[start:stop] + (severity - 1) * self.block
        if rows[-1] - rows[0] == len(rows) - 1:  # consecutive: a slice of the mapping
            chunk = np.array(array[rows[0]:rows[-1] + 1])
        else:
            chunk = array[rows]  # fancy indexing copies just these rows
        return self._transform(torch.from_numpy(chunk).permute(0, 3, 1, 2))


def load_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise UserError(f"{KEY}: {path} is missing; restore it from the release")
    try:
        return np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError) as e:
        raise UserError(f"{KEY}: {path} cannot be read as a NumPy array ({str(e).splitlines()[0] if str(e) else e!r}); "
                        "restore it from the release") from None


# ----------------------------------------------------------------------------- ImageNet-C trees

class Tree(Released):
    format = "imagenet-c tree"

    def __init__(self, *args) -> None:
        super().__init__(*args)
        reference: list[list[str]] | None = None
        ref_folder = None
        for name in self.names:
            if not (self.root / name).is_dir():
                inside = sorted(p.parent for p in [*self.root.glob(f"*/{LABELS}"), *self.root.glob(f"*/{name}")])
                hint = f" (did you mean {inside[0]}?)" if inside else ""
                raise UserError(f"{KEY}: {self.root / name} is missing (no {name}.npy + {LABELS} either){hint}; "
                                f"an ImageNet-C tree holds <corruption>/<severity>/<class>/ folders: extract "
                                f"{name} there, or leave it out of eval.corruptions")
            for severity in self.severities:
                folder = self.root / name / str(severity)
                listing = self._list(folder)
                if reference is None:
                    reference, ref_folder = listing, folder
                elif listing != reference:
                    self._differ(folder, listing, ref_folder, reference)
        if reference is None:  # no names asked for
            self.files: list[str] = []
            return
        files = [os.path.join(c, f) for c, names in zip(self.classes, reference) for f in names]
        all_labels = torch.repeat_interleave(torch.arange(len(self.classes)),
                                             torch.tensor([len(names) for names in reference]))
        pick = choose(all_labels, self.per_class)
        self.files = [files[i] for i in pick.tolist()]
        self.labels = all_labels[pick]
        self.threads = max(1, min(MAX_DECODE_THREADS, usable_cores()))
        for name in self.names:  # the first image of each folder: catches a wrong release early
            for severity in self.severities:
                with quiet_torchvision():
                    first = self._decode_one(self.root / name / str(severity) / self.files[0], check_size=True)
                self.stored = self.stored or (int(first.shape[-2]), int(first.shape[-1]))
                self._check_transform(self.root / name / str(severity) / self.files[0], first.unsqueeze(0))

    def _list(self, folder: Path) -> list[list[str]]:
        """Image files of each of the run's classes in `folder`, sorted."""
        if not folder.is_dir():
            raise UserError(f"{KEY}: {folder} is missing; extract that severity of the release there, "
                            "or leave it out of eval.severities")
        listing = []
        for c in self.classes:
            try:
                entries = list(os.scandir(folder / c))
            except (FileNotFoundError, NotADirectoryError):
                raise UserError(f"{KEY}: {folder / c} is missing (class '{c}' of the run); the release's class "
                                "folders must be named as the run's classes (data.classes): extract it there, "
                                "or point it at the release of the run's dataset") from None
            names = sorted(e.name for e in entries if not e.name.startswith(".") and
                           os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS and e.is_file())
            if not names:
                raise UserError(f"{KEY}: {folder / c} holds no images (JPEG, PNG, WebP, GIF); "
                                "extract the release's images of that class there")
            listing.append(names)
        return listing

    def _differ(self, folder: Path, listing: list[list[str]], ref_folder: Path, reference: list[list[str]]) -> None:
        for c, have, want in zip(self.classes, listing, reference):
            if have != want:
                missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
                what = f"lacks {missing[0]}" if missing else f"has {extra[0]}, which is not in {ref_folder / c}"
                raise UserError(f"{KEY}: {folder / c} {what} ({len(have)} images there, {len(want)} in "
                                f"{ref_folder / c}); every corruption and severity must hold the same images: "
                                "extract the release there again")

    def _decode_one(self, path: Path, check_size: bool = False) -> torch.Tensor:
        from torchvision.io import ImageReadMode, decode_image, read_file

        try:
            image = decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
        except (RuntimeError, ValueError, OSError) as e:
            why = str(e).strip().splitlines()[-1].rsplit(", ", 1)[-1] if str(e).strip() else type(e).__name__
            raise UserError(f"{KEY}: {path} cannot be decoded ({why}); replace it with the release's file") from None
        if image.ndim == 4:  # an animated GIF: its first frame
            image = image[0]
        if check_size and self.eval_transform is None and self.image_size is not None:
            self._check_size(path, image)
        return image

    def _check_size(self, path: Path, image: torch.Tensor) -> None:
        s = self.image_size
        if tuple(image.shape[-2:]) != (s, s):
            h, w = image.shape[-2:]
            raise UserError(f"{KEY}: {path} is {w}x{h} px, the run's input is {s}x{s}; use the release made "
                            f"for {s} px images (ImageNet-C: 224, Tiny-ImageNet-C: 64) or evaluate with an "
                            "eval transform that resizes")

    def _read(self, name: str, severity: int, start: int, stop: int) -> torch.Tensor:
        folder = self.root / name / str(severity)
        paths = [folder / rel for rel in self.files[start:stop]]
        with quiet_torchvision():
            if self.threads > 1 and len(paths) > 1:
                with ThreadPoolExecutor(min(self.threads, len(paths))) as pool:
                    images = list(pool.map(self._decode_one, paths))
            else:
                images = [self._decode_one(p) for p in paths]
        sizes = {tuple(im.shape[-2:]) for im in images}
        if self.eval_transform is None:
            want = (self.image_size,) * 2 if self.image_size else tuple(images[0].shape[-2:])
            for path, image in zip(paths, images):
                if tuple(image.shape[-2:]) != want:
                    if self.image_size:
                        self._check_size(path, image)
                    raise UserError(f"{KEY}: {path} is {image.shape[-1]}x{image.shape[-2]} px, {paths[0]} "
                                    f"{want[1]}x{want[0]}; the released images of a corruption are all one "
                                    "size: replace it with the release's file")
            return torch.stack(images)
        if len(sizes) == 1:
            return self._transform(torch.stack(images))  # one call on the whole batch
        # images of several sizes: each through the transform alone, then stacked
        return torch.cat([self.eval_transform(im.unsqueeze(0)) for im in images])


@contextlib.contextmanager
def quiet_torchvision() -> Iterator[None]:
    """Without torchvision 0.29's notice that its image decoders are deprecated, once per file. The
    filter is process-wide while it is on, so the decoding threads started inside it see it too."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                                category=DeprecationWarning)
        yield
