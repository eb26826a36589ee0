"""Image folders (ImageNet and its subsets) read once into a memory-mapped uint8 cache.

Layouts, detected from what is under `data.root`:

* `train/<class>/*` and `val/<class>/*` (Imagenette, Imagewoof, ImageNet as torchvision
  prepares it); images may sit in subfolders of a class folder;
* Tiny ImageNet: `train/<wnid>/images/*`, and `val/images/*` labelled by `val/val_annotations.txt`;
* `train/<class>/*` alone: the test set is then carved out of it with `data.val_split`.

The val/ images are the test set (ImageNet's labelled validation set is what papers report).

Every chosen image is decoded once with Pillow (any format it reads; grayscale, CMYK and
palette images become RGB), its shorter side resized to `stored_size(image_size)` and its center
cropped to a square, by several processes, into one uint8 array on disk that later runs
memory-map. The array is stored (N, S, S, 3), as Pillow gives it, and read as an (N, 3, S, S)
tensor in channels-last layout, the layout torch's uint8 resize kernels run fastest on. The
array's name is a hash of the file list (paths, sizes, mtimes, labels), the classes and S, so a
change in any of them builds a new array and nothing else does. An image Pillow cannot read is
skipped and reported, never fatal.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import sys
import time
import warnings
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from PIL import Image

from .. import runs
from ..perf import usable_cores
from ..errors import UserError
from .cifar import DataWarning

CACHE_VERSION = 1  # bump when decoding changes, so that old arrays are not reused
CHUNK = 32  # images per task sent to a worker process
MIN_PER_WORKER = 256  # fewer images than this per process are decoded in this process
SHOW_SKIPPED = 5  # unreadable files named in the warning and in the summary


def stored_size(image_size: int) -> int:
    """Side of the cached squares: the crop size * 8/7 (112 -> 128, 224 -> 256), the usual margin
    of ImageNet evaluation (resize 256, center-crop 224) that random crops also draw from."""
    return round(image_size * 8 / 7)


@dataclass
class Files:
    """A labelled list of image files (paths relative to `root`), the file-level twin of `Split`:
    class selection, per-class caps and the validation split work on it before anything is
    decoded, so a subset of ImageNet costs only its own decoding."""

    root: Path
    paths: list[str]
    y: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.y)

    def take(self, idx: torch.Tensor) -> "Files":
        return Files(self.root, [self.paths[i] for i in idx.tolist()], self.y[idx])


@dataclass
class Listing:
    root: Path
    layout: str  # "imagefolder", "tiny-imagenet" or "train-only"
    classes: list[str]
    train: Files
    test: Files | None  # None: no val/ folder


# ----------------------------------------------------------------------------- listing

def image_extensions() -> set[str]:
    """Lower-case extensions of every format Pillow can open (.jpg, .jpeg, .png, .webp, .bmp ...)."""
    Image.init()
    return {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


def image_files(root: Path, folder: str, extensions: set[str]) -> list[str]:
    """Image files under `root/folder`, subfolders included, sorted, as paths relative to `root`;
    hidden entries and files with other extensions (Tiny ImageNet's *_boxes.txt, .DS_Store) are
    not images and are passed over. Plain strings: pathlib made listing ImageNet ~10x slower."""
    found = []
    for dirpath, dirnames, filenames in os.walk(os.path.join(root, folder), followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = os.path.relpath(dirpath, root)
        found += [os.path.join(rel, f) for f in sorted(filenames)
                  if not f.startswith(".") and os.path.splitext(f)[1].lower() in extensions]
    return found


def class_folders(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


LAYOUT_HINT = ("an image folder holds train/<class>/* images, and optionally val/<class>/* "
               "(or Tiny ImageNet's val/images with val/val_annotations.txt)")


def class_names(root: str | Path) -> list[str]:
    """The classes of an image folder: the names of train/'s subfolders, sorted."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise UserError(f"data.root: {root} is not a folder; {LAYOUT_HINT}")
    if not (root / "train").is_dir():
        raise UserError(f"{root}: no train/ folder; {LAYOUT_HINT}; check data.root")
    names = class_folders(root / "train")
    if not names:
        raise UserError(f"{root / 'train'}: no class folders; put each class's images in train/<class>/")
    return names


def scan(root: str | Path, classes: list[str] | None = None) -> Listing:
    """List an image-folder dataset: the labelled files of train/ and of val/ (None when there is
    no val/), for `classes` (default: all, sorted); only their folders are read, so choosing 10
    of ImageNet's 1000 classes lists 10 folders."""
    names = class_names(root)
    root = Path(root).expanduser().resolve()
    classes = classes or names
    exts = image_extensions()
    train = labelled(root, [image_files(root, os.path.join("train", c), exts) for c in classes])
    val_dir = root / "val"
    if (val_dir / "val_annotations.txt").is_file():
        return Listing(root, "tiny-imagenet", classes, train, tiny_val(root, classes))
    if not val_dir.is_dir():
        return Listing(root, "train-only", classes, train, None)
    val_classes = class_folders(val_dir)
    if not val_classes:
        raise UserError(f"{val_dir}: no class folders and no val_annotations.txt; give it val/<class>/ "
                        "folders named as in train/, or remove it to carve the test set out of train/")
    strangers = sorted(set(val_classes) - set(names))
    if strangers:
        warnings.warn(f"{val_dir}: {len(strangers)} class folder(s) not in train/ are ignored "
                      f"({', '.join(strangers[:SHOW_SKIPPED])})", DataWarning, stacklevel=2)
    test = labelled(root, [image_files(root, os.path.join("val", c), exts) if c in val_classes else []
                           for c in classes])
    return Listing(root, "imagefolder", classes, train, test)


def labelled(root: Path, per_class: list[list[str]]) -> Files:
    """Files of each class (in class order) -> one Files with labels 0, 1, ..."""
    paths = [p for files in per_class for p in files]
    y = torch.repeat_interleave(torch.arange(len(per_class)), torch.tensor([len(f) for f in per_class]))
    return Files(root, paths, y)


def tiny_val(root: Path, classes: list[str]) -> Files:
    """Tiny ImageNet's val/: images in val/images, one `file<TAB>wnid<TAB>box...` line per image
    in val/val_annotations.txt. Lines of classes not in train/ are passed over."""
    notes = root / "val" / "val_annotations.txt"
    index = {c: i for i, c in enumerate(classes)}
    per_class: list[list[str]] = [[] for _ in classes]
    for number, line in enumerate(notes.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2:
            raise UserError(f"{notes}, line {number}: expected 'FILE<TAB>WNID ...', got {line!r}")
        if fields[1] in index:
            path = os.path.join("val", "images", fields[0])
            if not os.path.isfile(os.path.join(root, path)):
                raise UserError(f"{notes}, line {number}: {root / path} does not exist; "
                                "restore it or drop the line")
            per_class[index[fields[1]]].append(path)
    return labelled(root, per_class)


# ----------------------------------------------------------------------------- decoding

def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow image -> RGB: palette and alpha images through RGBA (so a transparent palette
    converts without Pillow's warning), 16-bit grayscale scaled to 8 bits, the rest directly."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        img = img.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    elif img.mode in ("P", "PA", "LA", "La", "RGBa"):
        img = img.convert("RGBA")
    return img.convert("RGB")


def decode(path: str, size: int) -> np.ndarray:
    """One image file -> (size, size, 3) uint8: the shorter side resized to `size` (antialiased
    bilinear), the center cropped to a square. JPEGs are decoded at the smallest DCT scale that
    keeps the shorter side >= size (`draft`), several times faster for full-size ImageNet photos."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's notes on odd EXIF data and the like, per file
        with Image.open(path) as img:
            img.draft("RGB", (size, size))
            img = to_rgb(img)
            w, h = img.size
            side = min(w, h)
            box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
            img = img.resize((size, size), Image.Resampling.BILINEAR, box=box)
            return np.asarray(img)


def decode_chunk(task: tuple[list[str], int]) -> tuple[np.ndarray, list[int]]:
    """Decode a list of files -> (the readable ones stacked, indices of the unreadable ones)."""
    paths, size = task
    images, failed = [], []
    for i, path in enumerate(paths):
        try:
            images.append(decode(path, size))
        except Exception:  # truncated, not an image, unsupported mode ...: reported by the caller
            failed.append(i)
    return np.stack(images) if images else np.empty((0, size, size, 3), np.uint8), failed


def worker_count(n: int) -> int:
    return max(1, min(usable_cores(), n // MIN_PER_WORKER))


def ordered_map(fn: Callable[[Any], Any], tasks: Iterable[Any], workers: int) -> Iterator[Any]:
    """`map(fn, tasks)` over `workers` processes, results in order, at most a few tasks ahead (so
    memory stays flat however large the dataset). Workers are forked on Linux: they run only
    Pillow and NumPy, and a spawned worker would spend ~1.5 s re-importing torch first."""
    if workers <= 1:
        yield from map(fn, tasks)
        return
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("fork") if sys.platform == "linux" else None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*use of fork\(\) may lead to deadlocks",
                                category=DeprecationWarning)
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            pending: deque = deque()
            for task in tasks:
                pending.append(pool.submit(fn, task))
                if len(pending) >= 4 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()


# ----------------------------------------------------------------------------- the cache

def cache_folder(setting: str | None, root: Path) -> Path:
    """data.cache, else `<root>/.lrn-cache` where root is writable, else `$XDG_CACHE_HOME/lrn/folders`."""
    if setting:
        folder = Path(setting).expanduser()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"data.cache: cannot create {folder} ({e.strerror}); "
                            "point it at a writable folder") from None
        if not os.access(folder, os.W_OK):
            raise UserError(f"data.cache: {folder} is not writable; point it at a writable folder")
        return folder
    with contextlib.suppress(OSError):
        folder = root / ".lrn-cache"
        folder.mkdir(exist_ok=True)
        if os.access(folder, os.W_OK):
            return folder
    folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lrn" / "folders"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{root} is read-only and {folder} cannot be created ({e.strerror}); "
                        "set data.cache to a writable folder") from None
    return folder


def cache_key(files: Files, classes: list[str], size: int) -> str:
    """Hash of what the array holds: each file's path, label, size and mtime, the classes, the size."""
    h = hashlib.sha256(json.dumps([CACHE_VERSION, size, classes]).encode())
    for rel, label in zip(files.paths, files.y.tolist()):
        try:
            st = os.stat(os.path.join(files.root, rel))
        except OSError as e:
            raise UserError(f"{files.root / rel}: cannot read it ({e.strerror}); restore it or remove it") from None
        h.update(f"{rel}\0{label}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


@contextlib.contextmanager
def build_lock(folder: Path) -> Iterator[None]:
    """Wait for the cache folder's exclusive lock: runs that need the same array (a sweep's jobs)
    build it once, the others wait and then read it; builds of different arrays take turns, as
    each uses every core anyway. The kernel drops the lock if its holder dies."""
    with runs.flock(folder / ".lock"):
        yield


def read_entry(folder: Path, key: str) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]] | None:
    """A complete cache entry -> (x memory-mapped, y, index), or None if absent or incomplete. The
    index is written last, so an array without one (a crash mid-build) is never read."""
    index = runs.read_json(folder / f"{key}.json")
    if not index or index.get("version") != CACHE_VERSION:
        return None
    n, s = index["count"], index["size"]
    array, labels = folder / f"{key}.u8", folder / f"{key}.labels.npy"
    if not labels.exists() or not array.exists() or array.stat().st_size != n * 3 * s * s:
        return None
    y = torch.from_numpy(np.load(labels)).long()
    if len(y) != n:
        return None
    # copy-on-write mapping: writable for torch, pages shared with the page cache, file never changed
    hwc = torch.from_numpy(np.memmap(array, np.uint8, mode="c", shape=(n, s, s, 3))) if n else \
        torch.empty((0, s, s, 3), dtype=torch.uint8)
    return hwc.permute(0, 3, 1, 2), y, index


def build_entry(files: Files, size: int, folder: Path, key: str, what: str) -> None:
    """Decode `files` into `folder/<key>.u8` (+ `.labels.npy`, + `.json`, the index), each written
    to a temporary file and renamed into place, so a crash never leaves a readable broken entry."""
    start = time.perf_counter()
    tasks = [([os.path.join(files.root, p) for p in files.paths[i:i + CHUNK]], size)
             for i in range(0, len(files), CHUNK)]
    ys = files.y.tolist()
    labels: list[int] = []
    skipped: list[str] = []

    def fill(f: Any) -> None:
        from tqdm import tqdm

        with tqdm(total=len(files), desc=f"decoding {what}", unit="img", file=sys.stderr, leave=False,
                  dynamic_ncols=True, disable=not sys.stderr.isatty()) as bar:
            results = ordered_map(decode_chunk, tasks, worker_count(len(files)))
            for (images, failed), start_at in zip(results, range(0, len(files), CHUNK)):
                f.write(images.tobytes())
                bad = {start_at + i for i in failed}
                skipped.extend(files.paths[i] for i in sorted(bad))
                labels.extend(ys[i] for i in range(start_at, min(start_at + CHUNK, len(files))) if i not in bad)
                bar.update(len(images) + len(failed))

    for stale in folder.glob(".*.tmp"):  # left by a build that crashed (builds hold the folder's lock)
        stale.unlink(missing_ok=True)
    runs.atomic_write(folder / f"{key}.u8", fill, mode="wb")
    runs.atomic_write(folder / f"{key}.labels.npy", lambda f: np.save(f, np.asarray(labels, np.int64)), mode="wb")
    runs.write_json(folder / f"{key}.json", {
        "version": CACHE_VERSION, "what": what, "root": str(files.root), "size": size, "count": len(labels),
        "files": len(files), "skipped": skipped, "build_s": round(time.perf_counter() - start, 3),
    })


def load_images(files: Files, classes: list[str], size: int, folder: Path,
                what: str) -> tuple[torch.Tensor, torch.Tensor, list[str], bool]:
    """The decoded images of `files` from the cache, building it first if needed.

    -> (x (N, 3, size, size) uint8 memory-mapped, channels last; y; paths of unreadable files
    skipped; built now?)
    """
    key = cache_key(files, classes, size)
    entry = read_entry(folder, key)
    built = False
    if entry is None:
        with build_lock(folder):
            entry = read_entry(folder, key)  # another process may have built it while we waited
            if entry is None:
                build_entry(files, size, folder, key, what)
                entry, built = read_entry(folder, key), True
    assert entry is not None
    x, y, index = entry
    return x, y, list(index["skipped"]), built
