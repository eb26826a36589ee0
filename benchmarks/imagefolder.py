"""Image-folder input pipeline: this project's cached uint8 batches against torchvision's per-image one.

For the same training images (an Imagenette-style folder) and the same crop size, the time of
one epoch of input, no model:

* ours: the decoded-image cache (memory-mapped uint8, built once and timed separately), then per
  batch a gather, the batched random-resized crop and flip, and normalization, in this process;
* torchvision: `ImageFolder` + RandomResizedCrop + RandomHorizontalFlip + ToTensor + Normalize
  per image, through a DataLoader with 2 worker processes (JPEG decoding every epoch).

Goal: ours >= 10x faster per epoch. The cache build (decoding every image once, with several
processes) is reported on its own: it is paid once per dataset, size and class choice.

    python benchmarks/imagefolder.py --data-root DIR [--image-size 112] [--batch-size 128]
        [--epochs 2] [--limit-per-class N] [--workers 2] [--threads 0] [--json FILE]

DIR holds train/<class>/* (e.g. ../shared/data/imagenette-128.tar.gz extracted).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

from lrn_cli.config import load_config
from lrn_cli.data import folder, load_data, select
from lrn_cli.data.augment import IMAGENET_MEAN, IMAGENET_STD
from lrn_cli.engine import train_inputs
from lrn_cli.perf import keep_freed_memory


def ours_epoch(data, aug, batch_size: int, seed: int) -> tuple[float, int]:
    """One epoch of training input as `lrn train` makes it -> (seconds, images)."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(data.train), generator=g)
    n = len(perm) // batch_size * batch_size
    t0 = time.perf_counter()
    for i in range(0, n, batch_size):
        idx = perm[i:i + batch_size]
        x = train_inputs(data, aug, idx, torch.device("cpu"), data.mean, data.std)
        assert x.shape[0] == batch_size
    return time.perf_counter() - t0, n


def torchvision_epoch(files, image_size: int, scale: list[float], batch_size: int, workers: int) -> tuple[float, int]:
    """One epoch of the same images through torchvision's per-image transforms -> (seconds, images)."""
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    tf = transforms.Compose([
        transforms.RandomResizedCrop(image_size, scale=tuple(scale)),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize((IMAGENET_MEAN / 255).tolist(), (IMAGENET_STD / 255).tolist()),
    ])
    dataset = datasets.ImageFolder(str(files.root / "train"), transform=tf)
    chosen = {str(files.root / p) for p in files.paths}
    subset = Subset(dataset, [i for i, (path, _) in enumerate(dataset.samples) if path in chosen])
    loader = DataLoader(subset, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True)
    n = 0
    t0 = time.perf_counter()
    for x, _ in loader:
        n += len(x)
    return time.perf_counter() - t0, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-root", required=True, help="folder holding train/<class>/*")
    ap.add_argument("--image-size", type=int, default=112, help="crop size the network would see")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=2, help="epochs timed for each pipeline (median)")
    ap.add_argument("--limit-per-class", type=int, default=None,
                    help="training and test images per class (default all)")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers for torchvision")
    ap.add_argument("--threads", type=int, default=0, help="torch threads for ours (0: torch's default)")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()  # as lrn train does

    with tempfile.TemporaryDirectory(prefix="lrn-bench-cache-") as cache:
        cfg = load_config({"data": {"dataset": "imagefolder", "root": args.data_root, "image_size": args.image_size,
                                    "per_class": args.limit_per_class, "test_per_class": args.limit_per_class,
                                    "cache": cache}}).data
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            load_data(cfg)  # a fresh cache folder: decodes every chosen image once
            build_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            data = load_data(cfg)  # from the cache
            load_s = time.perf_counter() - t0
        listing = folder.scan(cfg.root)
        files = select(cfg, listing.train, listing.test, listing.classes)[0]  # the images `data.train` holds
        ours = [ours_epoch(data, cfg.augment, args.batch_size, seed) for seed in range(args.epochs)]
        tv = [torchvision_epoch(files, args.image_size, cfg.augment.scale, args.batch_size, args.workers)
              for _ in range(args.epochs)]

    ours_s, tv_s = statistics.median(t for t, _ in ours), statistics.median(t for t, _ in tv)
    result = {
        "data_root": str(Path(args.data_root).resolve()), "image_size": args.image_size,
        "stored_size": folder.stored_size(args.image_size), "classes": data.num_classes,
        "train_images": len(data.train), "images_per_epoch": ours[0][1], "torchvision_images_per_epoch": tv[0][1],
        "batch_size": args.batch_size, "limit_per_class": args.limit_per_class,
        "cache_build_s": round(build_s, 3), "cache_load_s": round(load_s, 3),
        "cache_build_images": len(data.train) + len(data.test),
        "cache_build_images_per_s": round((len(data.train) + len(data.test)) / build_s, 1),
        "ours_epoch_s": [round(t, 4) for t, _ in ours], "torchvision_epoch_s": [round(t, 4) for t, _ in tv],
        "ours_images_per_s": round(ours[0][1] / ours_s, 1), "torchvision_images_per_s": round(tv[0][1] / tv_s, 1),
        "speedup": round(tv_s / ours_s, 2), "goal": 10.0, "torchvision_workers": args.workers,
        "env": {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                "python": platform.python_version()},
    }
    print(f"{result['train_images']} training images of {result['classes']} classes at {args.image_size} px "
          f"(cached at {result['stored_size']} px)")
    print(f"cache build {build_s:.2f} s ({result['cache_build_images']} train and test images, "
          f"{result['cache_build_images_per_s']:.0f} img/s), cache load {load_s:.3f} s")
    print(f"epoch: ours {ours_s:.3f} s ({result['ours_images_per_s']:.0f} img/s), torchvision "
          f"{tv_s:.3f} s ({result['torchvision_images_per_s']:.0f} img/s, {args.workers} workers): "
          f"{result['speedup']:.1f}x (goal 10x)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
