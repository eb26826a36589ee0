"""Runner overhead and data-pipeline speed, measured side by side in one process.

1. Runner overhead: images/s of `lrn train` (the `cifar10_full` config) against a minimal
   hand-written PyTorch loop on the same model, batch size, data and augmentation. The two are
   run alternately, `--repeats` times each, and compared by their medians. Goal: >= 0.97.
2. Data pipeline: this project's batched uint8 augmentation (random crop with padding, flip,
   normalization) against torchvision's per-image transforms (PIL images through a DataLoader
   with 0 and 2 workers), images/s for one pass over the same images.

    python benchmarks/runner.py --data-root DIR [--per-class 1000] [--repeats 3] [--json FILE]

DIR holds cifar-10-batches-py (e.g. made by ../shared/data/make_cifar10_batches.py).
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from lrn_cli.config import load_config
from lrn_cli.data import load_data
from lrn_cli.data.augment import crop_flip, normalize
from lrn_cli.engine import train
from lrn_cli.models import build_model

REPO = Path(__file__).resolve().parents[1]


def handwritten_loop(cfg, data) -> float:
    """The loop a person would write by hand: images/s over one epoch, no bookkeeping."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, 3, 32, data.num_classes)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.train.lr, momentum=0.9, nesterov=True,
                          weight_decay=cfg.train.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    bs = cfg.train.batch_size
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(data.train), generator=g)
    n = (len(data.train) // bs) * bs
    t0 = time.perf_counter()
    for i in range(0, n, bs):
        idx = perm[i:i + bs]
        x = normalize(crop_flip(data.train.x[idx], 4, True, g), data.mean, data.std)
        loss = loss_fn(model(x), data.train.y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return n / (time.perf_counter() - t0)


def lrn_train(overrides, out: Path) -> float:
    """`lrn train` itself: images / (time of its epoch loop, all per-step bookkeeping included)."""
    res = train(REPO / "configs" / "cifar10_full.yaml", overrides, out=out, quiet=True)
    rows = [json.loads(line) for line in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    steps_images = (res.summary["data"]["train"] // 128) * 128
    return steps_images * len(rows) / sum(r["epoch_time_s"] for r in rows)


def pipeline_batched(data, bs: int = 128) -> float:
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for i in range(0, len(data.train), bs):
        normalize(crop_flip(data.train.x[i:i + bs], 4, True, g), data.mean, data.std)
    return len(data.train) / (time.perf_counter() - t0)


def pipeline_torchvision(data, workers: int, bs: int = 128) -> float:
    from PIL import Image
    from torchvision import transforms

    tf = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor(),
                             transforms.Normalize((data.mean / 255).tolist(), (data.std / 255).tolist())])
    images = [Image.fromarray(x.permute(1, 2, 0).numpy()) for x in data.train.x]  # as torchvision's CIFAR10 holds them
    labels = data.train.y.tolist()

    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            return tf(images[i]), labels[i]

    loader = torch.utils.data.DataLoader(DS(), batch_size=bs, shuffle=True, num_workers=workers)
    t0 = time.perf_counter()
    for _ in loader:
        pass
    return len(images) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--per-class", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    over = [f"data.root={args.data_root}", f"data.per_class={args.per_class}", "data.test_per_class=10",
            "train.epochs=1", f"train.threads={args.threads}"]
    cfg = load_config(REPO / "configs" / "cifar10_full.yaml", over)
    data = load_data(cfg.data)

    hand, ours = [], []
    with tempfile.TemporaryDirectory() as tmp:
        handwritten_loop(cfg, data)  # warm-up
        for _ in range(args.repeats):
            hand.append(handwritten_loop(cfg, data))
            ours.append(lrn_train(over, Path(tmp)))
    runner = {"handwritten_images_per_s": hand, "lrn_train_images_per_s": ours,
              "ratio_of_medians": statistics.median(ours) / statistics.median(hand)}

    batched = [pipeline_batched(data) for _ in range(args.repeats)]
    tv0 = [pipeline_torchvision(data, 0) for _ in range(args.repeats)]
    tv2 = [pipeline_torchvision(data, 2) for _ in range(args.repeats)]
    pipeline = {"batched_images_per_s": batched, "torchvision_0_workers_images_per_s": tv0,
                "torchvision_2_workers_images_per_s": tv2}

    result = {"threads": args.threads, "train_images": len(data.train), "torch": torch.__version__,
              "runner": runner, "pipeline": pipeline}
    med = statistics.median
    print(f"runner   hand-written {med(hand):8.0f} img/s | lrn train {med(ours):8.0f} img/s | "
          f"ratio {runner['ratio_of_medians']:.3f}")
    print(f"pipeline batched {med(batched):10.0f} img/s | torchvision 0 workers {med(tv0):8.0f} | "
          f"2 workers {med(tv2):8.0f} | speed-up {med(batched) / max(med(tv0), med(tv2)):.1f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
