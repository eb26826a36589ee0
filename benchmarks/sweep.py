"""Scheduling overhead of `lrn ablate`, measured side by side in one script.

A sweep of 4 short cifar10_full runs (LRN on/off x 2 seeds) is run three ways:

* alone: each run as its own `lrn train` process, one after the other (what a user would do by
  hand), with 2 threads and again with 1 thread;
* `lrn ablate --jobs 1` (each run gets the machine's cores as threads);
* `lrn ablate --jobs 2` (one thread each on a 2-core machine).

overhead(jobs 1) = wall / sum(alone, 2 threads) - 1
overhead(jobs 2) = wall / (sum(alone, 1 thread) / 2) - 1   (the ideal two-lane schedule)

Goal: <= 5%. The sweep's wall time includes its report (results, plots, HParams) at the end;
the scheduling overhead leaves out that report, timed on its own with `lrn report`.

    python benchmarks/sweep.py --data-root DIR [--per-class 200] [--epochs 2] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from common import four_run_spec, timed
from lrn_cli.config import Config
from lrn_cli.sweep import plan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--per-class", type=int, default=400)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()
    lrn = [sys.executable, "-m", "lrn_cli"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        spec_path = four_run_spec(tmp, args.data_root, args.per_class, args.epochs)
        _, runs = plan(spec_path)
        alone: dict[int, list[float]] = {2: [], 1: []}
        for threads in (2, 1):
            for r in runs:
                cfg = Config.model_validate({**r.config, "train": {**r.config["train"], "threads": threads}})
                path = tmp / f"{r.run_id}-{threads}.yaml"
                path.write_text(cfg.to_yaml())
                alone[threads].append(timed([*lrn, "train", "--config", str(path), "--out", str(tmp / "alone"),
                                             "--quiet"]))
        j1 = timed([*lrn, "ablate", "--config", str(spec_path), "--out", str(tmp / "j1"), "--jobs", "1", "--quiet"])
        j2 = timed([*lrn, "ablate", "--config", str(spec_path), "--out", str(tmp / "j2"), "--jobs", "2", "--quiet"])
        rep = sorted(timed([*lrn, "report", str(tmp / "j1" / "bench")]) for _ in range(3))[1]
    result = {
        "cores": os.cpu_count(), "runs": len(runs), "epochs": args.epochs, "train_images": args.per_class * 10,
        "alone_2_threads_s": alone[2], "alone_1_thread_s": alone[1], "sweep_jobs1_s": j1, "sweep_jobs2_s": j2,
        "overhead_jobs1": j1 / sum(alone[2]) - 1, "overhead_jobs2": j2 / (sum(alone[1]) / 2) - 1,
        "report_s": rep, "scheduling_overhead_jobs1": (j1 - rep) / sum(alone[2]) - 1,
        "scheduling_overhead_jobs2": (j2 - rep) / (sum(alone[1]) / 2) - 1,
        "speedup_jobs2_over_jobs1": j1 / j2,
    }
    print(f"alone, 2 threads: {sum(alone[2]):.1f} s for {len(runs)} runs ({', '.join(f'{t:.1f}' for t in alone[2])})")
    print(f"alone, 1 thread:  {sum(alone[1]):.1f} s ({', '.join(f'{t:.1f}' for t in alone[1])})")
    print(f"lrn ablate --jobs 1: {j1:.1f} s, overhead {100 * result['overhead_jobs1']:+.1f}% "
          f"({100 * result['scheduling_overhead_jobs1']:+.1f}% without the {rep:.1f} s report)")
    print(f"lrn ablate --jobs 2: {j2:.1f} s, overhead {100 * result['overhead_jobs2']:+.1f}% against the ideal "
          f"two-lane schedule ({100 * result['scheduling_overhead_jobs2']:+.1f}% without the report); "
          f"{result['speedup_jobs2_over_jobs1']:.2f}x faster than --jobs 1")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
