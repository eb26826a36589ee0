"""What Ray (and submitit) cost per run: the same 4-run sweep through each executor, side by side.

A sweep of 4 short cifar10_full runs (LRN on/off x 2 seeds), one thread per run, two at a time
on a 2-core machine, is run through

* `--executor local --jobs 2` (child processes of the sweep: the reference),
* `--executor ray --ray-address local --cpus-per-run 1` (a fresh local Ray instance each time,
  its start included in the wall time, as a user without a cluster sees it),
* `--executor slurm --slurm-cluster local --cpus-per-run 1 --jobs 2` (the SLURM code path on
  submitit's local executor: pickling, a controller process and a result file per job),

repeated in rotation, medians reported. Overhead per run = (wall - wall local) / (runs / 2 lanes):
what each run's slot costs more than a plain child process. The Ray start alone (init and
shutdown of a local instance) is timed separately, so the per-run cost can be read without it.

    python benchmarks/executors.py --data-root DIR [--per-class 200] [--epochs 2] [--repeats 3] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import four_run_spec, timed

EXECUTORS = {
    "local": ["--executor", "local", "--jobs", "2"],
    "ray": ["--executor", "ray", "--ray-address", "local", "--cpus-per-run", "1"],
    "slurm-local": ["--executor", "slurm", "--slurm-cluster", "local", "--cpus-per-run", "1", "--jobs", "2"],
}


def ray_start_s() -> float:
    code = ("import time, ray; t = time.perf_counter(); "
            "ray.init(address='local', include_dashboard=False, logging_level='ERROR', log_to_driver=False, "
            "object_store_memory=128 * 2**20); ray.shutdown(); print(time.perf_counter() - t)")
    return float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--per-class", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args()
    lrn = [sys.executable, "-m", "lrn_cli", "ablate", "--quiet"]
    walls: dict[str, list[float]] = {name: [] for name in EXECUTORS}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        spec_path = four_run_spec(tmp, args.data_root, args.per_class, args.epochs)
        for i in range(args.repeats):  # in rotation, so that drift in the machine hits all alike
            for name, flags in EXECUTORS.items():
                walls[name].append(timed([*lrn, "--config", str(spec_path), "--out", str(tmp / f"{name}-{i}"),
                                          *flags]))
        starts = [ray_start_s() for _ in range(args.repeats)]
        train_s = [json.loads(p.read_text())["wall_time_s"] for p in (tmp / "local-0" / "bench").glob("*/summary.json")]
    med = {name: statistics.median(w) for name, w in walls.items()}
    slots = 4 / 2
    result = {
        "cores": os.cpu_count(), "runs": 4, "lanes": 2, "epochs": args.epochs, "train_images": args.per_class * 10,
        "repeats": args.repeats, "wall_s": walls, "median_wall_s": med, "ray_start_s": starts,
        "median_ray_start_s": statistics.median(starts), "run_train_s_local": train_s,
        "overhead_per_run_s": {name: (med[name] - med["local"]) / slots for name in EXECUTORS if name != "local"},
        "overhead_per_run_s_without_ray_start":
            (med["ray"] - med["local"] - statistics.median(starts)) / slots,
    }
    print(f"4 runs of {args.epochs} epochs on {args.per_class * 10} images, 2 at a time, median of {args.repeats}:")
    for name in EXECUTORS:
        extra = "" if name == "local" else f", {result['overhead_per_run_s'][name]:+.2f} s per run"
        print(f"  {name:12} {med[name]:6.1f} s  ({', '.join(f'{w:.1f}' for w in walls[name])}){extra}")
    print(f"  Ray start alone (init + shutdown of a local instance): {result['median_ray_start_s']:.1f} s; "
          f"without it Ray costs {result['overhead_per_run_s_without_ray_start']:+.2f} s per run")
    print(f"  (each run trains for {statistics.median(train_s):.1f} s of its own wall time)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
