"""Batched augmentation and normalization on uint8 tensors (no per-image PIL work)."""
from __future__ import annotations

import contextlib
import math
from typing import Iterator

import torch
import torch.nn.functional as F

# ImageNet's per-channel mean and std (torchvision's constants), in 0-255 units
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]) * 255
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]) * 255


def crop_flip(x: torch.Tensor, pad: int, flip: bool, generator: torch.Generator,
              size: int | None = None) -> torch.Tensor:
    """Random crop shifted by up to `pad` pixels each way from the centre (zero padding where it
    leaves the image) and random horizontal flip, per image.

    `x` is a uint8 batch (B, C, H, W); the result has its dtype and `size` x `size` pixels
    (default: H x W, the padded random crop of the same size). A smaller `size` is a window
    around the centre (`center_crop`'s) moved by up to `pad` each way: with size 24 and pad 4 of
    32 px images every 24 px window inside the image, cuda-convnet's cropped CIFAR-10. Both the
    crop and the flip are one gather, so a batch costs about one copy of itself; the draws (rows,
    then columns, then flips) do not depend on `size`.
    """
    b, c, h, w = x.shape
    if size is None or (size == h and size == w):
        if pad == 0 and not flip:
            return x
        size_h, size_w, top, left = h, w, 0, 0
    else:
        if size > min(h, w):
            raise ValueError(f"crop_flip: {size} px asked of {h}x{w} images")
        size_h = size_w = size
        top, left = round((h - size) / 2), round((w - size) / 2)  # center_crop's window
        if pad == 0 and not flip:
            return x[..., top:top + size, left:left + size]
    rows = (torch.arange(size_h) + top).expand(b, size_h)
    cols = (torch.arange(size_w) + left).expand(b, size_w)
    if pad:
        x = F.pad(x, (pad, pad, pad, pad))  # the window's offset in the padded image: top + 0..2 pad
        rows = rows + torch.randint(0, 2 * pad + 1, (b, 1), generator=generator)
        cols = cols + torch.randint(0, 2 * pad + 1, (b, 1), generator=generator)
    if flip:
        mirrored = torch.rand(b, 1, generator=generator) < 0.5
        cols = torch.where(mirrored, cols.flip(1), cols)
    batch = torch.arange(b).view(b, 1, 1, 1)
    chans = torch.arange(c).view(1, c, 1, 1)
    return x[batch, chans, rows.view(b, 1, size_h, 1), cols.view(b, 1, 1, size_w)]


def crop_boxes(b: int, h: int, w: int, scale: tuple[float, float], ratio: tuple[float, float],
               generator: torch.Generator, attempts: int = 10) -> torch.Tensor:
    """torchvision's RandomResizedCrop boxes for a batch: (B, 4) int64 rows (top, left, height, width).

    Per image: up to `attempts` draws of an area fraction in `scale` and a log-uniform aspect
    ratio in `ratio`; the first box that fits is placed uniformly at random; an image with none
    falls back to the largest central box within `ratio`. All images draw the same number of
    values from `generator`, so the boxes depend only on its state.
    """
    area = torch.empty(b, attempts).uniform_(*scale, generator=generator) * (h * w)
    aspect = torch.empty(b, attempts).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator).exp()
    ws = (area * aspect).sqrt().round().long()
    hs = (area / aspect).sqrt().round().long()
    fits = (ws >= 1) & (ws <= w) & (hs >= 1) & (hs <= h)
    first = fits.int().argmax(dim=1, keepdim=True)  # index of the first box that fits (0 if none)
    found = fits.any(dim=1)
    if w / h < ratio[0]:
        fallback = (w, min(h, round(w / ratio[0])))
    elif w / h > ratio[1]:
        fallback = (min(w, round(h * ratio[1])), h)
    else:
        fallback = (w, h)
    bw = torch.where(found, ws.gather(1, first).squeeze(1), fallback[0])
    bh = torch.where(found, hs.gather(1, first).squeeze(1), fallback[1])
    u = torch.rand(b, 2, generator=generator)
    top = torch.where(found, (u[:, 0] * (h - bh + 1)).long(), (h - bh) // 2)
    left = torch.where(found, (u[:, 1] * (w - bw + 1)).long(), (w - bw) // 2)
    return torch.stack([top, left, bh, bw], dim=1)


def random_resized_crop_flip(x: torch.Tensor, out_size: int, generator: torch.Generator,
                             scale: tuple[float, float] = (0.35, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
                             flip: bool = True, index: torch.Tensor | None = None,
                             normalize_with: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Random-resized crop (as torchvision's RandomResizedCrop) and random horizontal flip, per image.

    `x` is a uint8 batch (B, C, H, W), or with `index` the whole stored set, of which the images
    `index` are taken (so the gather is part of the crop). The result is uint8 (B, C, out_size,
    out_size), or float32 normalized with `normalize_with` = (mean, std) in 0-255 units."""
    b = len(index) if index is not None else x.shape[0]
    h, w = x.shape[-2:]
    boxes = crop_boxes(b, h, w, tuple(scale), tuple(ratio), generator)
    mirrored = torch.rand(b, generator=generator) < 0.5 if flip else torch.zeros(b, dtype=torch.bool)
    return resize_crops(x, boxes, mirrored, out_size, index, normalize_with)


def resize_crops(x: torch.Tensor, boxes: torch.Tensor, mirrored: torch.Tensor, out_size: int,
                 index: torch.Tensor | None = None,
                 normalize_with: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Each image's box (top, left, height, width) resized to out_size x out_size, mirrored where
    asked (images `index` of x, when given; normalized to float32, when asked).

    With the C kernels (`augment_cpu.c`) the batch is one separable pass of bilinear
    interpolation (align_corners=False) that reads the images where they are stored and writes
    the planar batch: 128 images of 128 px -> 112 px, normalized, in about 4 ms on 2 cores.
    Without them, each crop is resized with torch's antialiased bilinear uint8 kernel (the one
    torchvision's tensor transforms use) in a loop over the images, which measured faster than
    one batched `grid_sample` or `roi_align`: 16 ms against 66 ms and 93 ms on one thread. The
    two differ by the antialiasing (and the C path does not round before normalizing), which
    matters little here: the image-folder cache stores 8/7 of the crop size, so no crop shrinks
    by more than that.
    """
    n, c, h, w = x.shape
    b = len(boxes)
    lib = _native()
    if lib is not None:
        src = x.permute(0, 2, 3, 1)
        if not src.is_contiguous():
            src = src.contiguous()
        idx = (index if index is not None else torch.arange(b)).to(torch.int64).contiguous()
        boxes = boxes.to(torch.int64).contiguous()
        flips = mirrored.to(torch.uint8).contiguous()
        if normalize_with is not None:
            mean = normalize_with[0].to(torch.float32).contiguous()
            inv_std = (1 / normalize_with[1].to(torch.float32)).contiguous()
            out = torch.empty(b, c, out_size, out_size, dtype=torch.float32)
            stats = (mean.data_ptr(), inv_std.data_ptr())
        else:
            out = torch.empty(b, c, out_size, out_size, dtype=torch.uint8)
            stats = (None, None)
        check_crop(lib.random_resized_crop(src.data_ptr(), n, idx.data_ptr(), b, h, w, c, boxes.data_ptr(),
                                           flips.data_ptr(), out.data_ptr(), out_size, *stats,
                                           torch.get_num_threads()))
        return out
    if index is not None and len(index) and (int(index.min()) < 0 or int(index.max()) >= n):
        raise ValueError("resize_crops: index out of range")
    rows = index.tolist() if index is not None else range(b)  # read each crop where it lies: no gather
    with one_thread():
        out = torch.empty(b, c, out_size, out_size, dtype=x.dtype, memory_format=torch.channels_last)
        for i, (j, (top, left, bh, bw), m) in enumerate(zip(rows, boxes.tolist(), mirrored.tolist())):
            if not (0 <= top and 0 <= left and top + bh <= h and left + bw <= w and bh > 0 and bw > 0):
                raise ValueError("resize_crops: a box lies outside its image")
            crop = F.interpolate(x[j:j + 1, :, top:top + bh, left:left + bw], size=(out_size, out_size),
                                 mode="bilinear", antialias=True, align_corners=False)[0]
            out[i] = crop.flip(-1) if m else crop
    return normalize(out, *normalize_with) if normalize_with is not None else out


# augment_cpu.c's return codes: CROP_BAD_BOX, CROP_BAD_INDEX, CROP_NO_MEMORY
_CROP_ERRORS = {-1: (ValueError, "a box lies outside its image"), -2: (ValueError, "index out of range"),
                -3: (MemoryError, "out of memory for the scratch buffers")}


def check_crop(rc: int) -> None:
    """Raise what a non-zero return code of `random_resized_crop` (augment_cpu.c) means."""
    if rc != 0:
        error, why = _CROP_ERRORS.get(rc, (RuntimeError, f"failed with code {rc}"))
        raise error(f"resize_crops: {why}")


def _native():
    import ctypes

    from .. import native

    lib = native.library("augment_cpu")
    if lib is not None and lib.random_resized_crop.argtypes is None:
        lib.random_resized_crop.restype = ctypes.c_int
        lib.random_resized_crop.argtypes = [
            ctypes.c_void_p, ctypes.c_long, ctypes.c_void_p, ctypes.c_long, ctypes.c_long, ctypes.c_long,
            ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long, ctypes.c_void_p,
            ctypes.c_void_p, ctypes.c_int]
    return lib


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch ops on one thread for a while. Many tiny ops each pay a thread-team start and
    barrier; on a busy machine (a sweep's parallel jobs) that made 128 crops take ~38 ms on two
    threads against ~7.5 ms on one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def center_crop(x: torch.Tensor, out_size: int) -> torch.Tensor:
    """The central out_size x out_size window of a batch (a view; torchvision's rounding)."""
    h, w = x.shape[-2:]
    if out_size > min(h, w):
        raise ValueError(f"center_crop: {out_size} px asked of {h}x{w} images")
    top, left = int(round((h - out_size) / 2)), int(round((w - out_size) / 2))
    return x[..., top:top + out_size, left:left + out_size]


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> contiguous float32 with per-channel mean 0 and std 1 (mean, std in
    0-255 units). In place on one fresh buffer: two more batch-sized allocations (page faults
    on every step) made it ~15x slower for ImageNet-sized batches."""
    out = x.to(torch.float32, memory_format=torch.contiguous_format, copy=True)
    return out.sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))


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
