"""What LRN costs a real training epoch: cifar10_full with and without its LRN, alternated.

    python benchmarks/epoch.py --data-root DIR [--repeats 5] [--batch 128] [--json FILE]

Each repeat runs `lrn train --config configs/cifar10_full.yaml` for one epoch at the given
batch (the full 50,000 training images; the test evaluation after it is not counted), once
with the config's within-channel LRN and once with `model.norm.type=none`, in that order, each
in a fresh process on all of torch's threads; the epoch's training time is its 50,000 images
over the run's training images/s (metrics.jsonl: the steps alone, without start-up or the test
evaluation). The ratio of the medians is LRN's cost (goal, issue 13: <= 1.06); the median of
each repeat's ratio (the two epochs run one after the other) is given beside it, as the paired
figure that the machine's drift between repeats does not move.
DIR holds cifar-10-batches-py (e.g. made by ../shared/data/make_cifar10_batches.py).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TRAIN_IMAGES = 50_000


def one_epoch(data_root: str, batch: int, lrn: bool, out: Path) -> float:
    cmd = [sys.executable, "-m", "lrn_cli", "train", "--config", str(REPO / "configs" / "cifar10_full.yaml"),
           "--out", str(out), "--set", f"data.root={data_root}", "--set", "train.epochs=1",
           "--set", f"train.batch_size={batch}", "-q"]
    if not lrn:
        cmd += ["--set", "model.norm.type=none"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    (metrics,) = out.glob("*/metrics.jsonl")
    # the training steps' own time (the run's images/s), without start-up and the test evaluation
    return TRAIN_IMAGES / json.loads(metrics.read_text().splitlines()[0])["images_per_s"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    times: dict[str, list[float]] = {"lrn": [], "none": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for variant in times:
                t = one_epoch(args.data_root, args.batch, variant == "lrn", Path(tmp) / f"{variant}{r}")
                times[variant].append(t)
                print(f"repeat {r + 1}: {variant:4} {t:6.1f} s", flush=True)
    med = {v: statistics.median(t) for v, t in times.items()}
    ratio = med["lrn"] / med["none"]
    paired = statistics.median(a / b for a, b in zip(times["lrn"], times["none"]))
    print(f"epoch at batch {args.batch}: with LRN {med['lrn']:.1f} s, without {med['none']:.1f} s: "
          f"ratio {ratio:.3f} (goal <= 1.06: {'met' if ratio <= 1.06 else 'MISSED'}); paired {paired:.3f}")
    if args.json:
        from lrn_cli.runs import environment

        args.json.write_text(json.dumps({"env": environment(0, "cpu"), "batch": args.batch, "times_s": times,
                                         "median_s": med, "ratio": ratio, "paired_ratio": paired}, indent=1) + "\n")
    return 0 if ratio <= 1.06 else 1


if __name__ == "__main__":
    sys.exit(main())
