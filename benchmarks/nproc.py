"""Throughput of one run on two processes against one: `lrn train --nproc 2` vs `--nproc 1`.

The same cifar10_full config, data and global batch, run as separate `lrn train` commands,
alternating, `--repeats` times each; compared by the medians of the training images/s that each
run's summary reports (its epoch loop only, all bookkeeping and, for 2 processes, the gradient
and per-step all-reduces included; images counted over the global batch). The wall time of the
whole command (start-up, data loading, evaluation) is reported alongside.

The machine's cores are shared out in every arm: one process with all of them as threads against
N processes with cores // N threads each (and, for reference, one process on one thread).

    python benchmarks/nproc.py --data-root DIR [--per-class 500] [--epochs 2] [--repeats 3] [--json FILE]

DIR holds cifar-10-batches-py (e.g. made by ../shared/data/make_cifar10_batches.py).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from common import REPO, timed


def run(overrides: list[str], nproc: int, threads: int, out: Path, name: str) -> dict:
    """One `lrn train` command -> its images/s and wall time."""
    sets = [arg for o in [*overrides, f"train.threads={threads}"] for arg in ("--set", o)]
    cmd = [sys.executable, "-m", "lrn_cli", "train", "-c", str(REPO / "configs" / "cifar10_full.yaml"), *sets,
           "--nproc", str(nproc), "--out", str(out), "--name", name, "--quiet"]
    wall = timed(cmd)
    summary = json.loads((out / name / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["env"]["nproc"] == nproc, summary
    return {"images_per_s": summary["images_per_s"], "wall_s": wall, "test_acc": summary["test_acc"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--per-class", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128, help="the global batch")
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    over = [f"data.root={args.data_root}", f"data.per_class={args.per_class}", "data.test_per_class=20",
            f"train.epochs={args.epochs}", f"train.batch_size={args.batch_size}"]
    arms = {  # label: (processes, threads each)
        f"nproc 1 x {cores} threads": (1, cores),
        f"nproc {args.nproc} x {max(1, cores // args.nproc)} threads": (args.nproc, max(1, cores // args.nproc)),
        "nproc 1 x 1 thread": (1, 1),
    }
    results: dict[str, list[dict]] = {label: [] for label in arms}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for label, (nproc, threads) in arms.items():
                results[label].append(run(over, nproc, threads, Path(tmp), f"{nproc}x{threads}-{i}"))
    med = {label: statistics.median(r["images_per_s"] for r in rows) for label, rows in results.items()}
    wall = {label: statistics.median(r["wall_s"] for r in rows) for label, rows in results.items()}
    one, many = list(arms)[:2]
    result = {
        "cores": cores, "train_images": args.per_class * 10, "epochs": args.epochs, "global_batch": args.batch_size,
        "repeats": args.repeats, "runs": results, "median_images_per_s": med, "median_wall_s": wall,
        "ratio_nproc_over_nproc1": med[many] / med[one],
    }
    print(f"cifar10_full, {args.per_class * 10} images x {args.epochs} epochs, global batch {args.batch_size}, "
          f"{cores} cores, median of {args.repeats}")
    print(f"{'':24} {'images/s':>9} {'command wall s':>15}")
    for label in arms:
        print(f"{label:24} {med[label]:9.0f} {wall[label]:15.1f}")
    print(f"ratio {many} / {one}: {result['ratio_nproc_over_nproc1']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
