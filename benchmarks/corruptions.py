"""How fast lrn corrupts images, against the reference code run image by image, and what share of
`lrn eval` making the corrupted images takes.

    python benchmarks/corruptions.py [--images 1000] [--reference-images 20] [--json FILE]

1. Per corruption x severity on real CIFAR-10 test images: `lrn_cli.data.corruptions.corrupt` in
   batches of 500 against the reference functions (tests/reference_c: the hendrycks/robustness
   create_c code ported to current NumPy / SciPy / scikit-image / OpenCV / Wand), one image at a
   time on the first --reference-images images (the reference is slow). images/s each, and the
   speed-up over all of them: the time the reference takes for one image of every corruption x
   severity over lrn's. Goal: >= 20x. The lighting family has no reference.
2. `robust.evaluate` of a cifar10_full network (its weights do not change the time) on
   --images test images under all corruptions x 5 severities: the seconds spent making the
   corrupted images over the whole evaluation. Goal: <= 15% (the forward passes are the floor).

Both use torch's threads as set (--threads, default 1: one core, as a sweep job has). Exits 1
when a goal is missed, so it can fail.
"""
from __future__ import annotations

import argparse
import json
import pickle
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def cifar_test_images(n: int) -> tuple[torch.Tensor, torch.Tensor, Path]:
    """The first n test images of CIFAR-10 (from ./data or ../data, else converted from ../shared/data)."""
    for root in (REPO / "data", REPO.parent / "data"):
        path = root / "cifar-10-batches-py" / "test_batch"
        if path.exists():
            break
    else:
        import subprocess
        import tempfile

        root = Path(tempfile.mkdtemp())
        subprocess.run([sys.executable, str(REPO.parent / "shared" / "data" / "make_cifar10_batches.py"), str(root)],
                       check=True, capture_output=True)
        path = root / "cifar-10-batches-py" / "test_batch"
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="latin1")
    x = torch.from_numpy(np.asarray(d["data"][:n], dtype=np.uint8).reshape(-1, 3, 32, 32))
    return x, torch.tensor(d["labels"][:n]), root


def per_s(fn, items: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return items / statistics.median(times)


def corruption_speed(x: torch.Tensor, ref_images: int, repeats: int) -> dict:
    from lrn_cli.data.corruptions import CORRUPTIONS, corrupt
    from reference_c import reference

    rows = []
    for name, family in CORRUPTIONS.items():
        ref = reference(name, "cifar10")
        for s in range(1, 6):
            def ours() -> None:
                for i in range(0, len(x), 500):
                    corrupt(x[i:i + 500], name, s, start=i)
            row = {"name": name, "family": family, "severity": s, "lrn_per_s": per_s(ours, len(x), repeats)}
            if ref is not None:
                hwc = x[:ref_images].permute(0, 2, 3, 1).numpy()

                def theirs() -> None:
                    np.random.seed(0)
                    for img in hwc:
                        ref(img.copy(), s)
                row["reference_per_s"] = per_s(theirs, ref_images, 1)
                row["speedup"] = row["lrn_per_s"] / row["reference_per_s"]
            rows.append(row)
            print(f"{name:<22} s{s}  lrn {row['lrn_per_s']:>9,.0f}/s" + (
                f"  reference {row['reference_per_s']:>7,.0f}/s  {row['speedup']:6.1f}x" if ref else
                "  (no reference)"), flush=True)
    both = [r for r in rows if "reference_per_s" in r]
    lrn_s = sum(1 / r["lrn_per_s"] for r in both)  # one image of every corruption x severity
    ref_s = sum(1 / r["reference_per_s"] for r in both)
    missing = sorted({r["name"] for r in rows if "reference_per_s" not in r and r["family"] != "lighting"})
    return {"rows": rows, "overall_speedup": ref_s / lrn_s if both else None,
            "lrn_s_per_image_all": sum(1 / r["lrn_per_s"] for r in rows), "reference_missing": missing}


def eval_share(images: int, data_root: Path) -> dict:
    from lrn_cli import robust
    from lrn_cli.config import load_config
    from lrn_cli.data import load_data
    from lrn_cli.models import build_model

    per_class = max(1, images // 10)
    cfg = load_config(REPO / "configs" / "cifar10_full.yaml",
                      [f"data.root={data_root}", "eval.corruptions=all", f"eval.corruption_per_class={per_class}"])
    data = load_data(cfg.data)
    torch.manual_seed(0)
    model = build_model(cfg.model, 3, 32, 10).eval()
    result = robust.evaluate(model, data, cfg, torch.device("cpu"), line=lambda s: None)
    t = result["timing"]
    return {"images": result["settings"]["images"], "corruptions": len(result["corruptions"]), **t,
            "corrupt_share": t["corrupt_s"] / t["wall_s"],
            "forward_per_s": t["forward_images"] / t["forward_s"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1000, help="test images lrn corrupts (and evaluates)")
    ap.add_argument("--reference-images", type=int, default=20, help="images the reference corrupts one by one")
    ap.add_argument("--repeats", type=int, default=3, help="timings per median (lrn)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x, _, root = cifar_test_images(args.images)
    speed = corruption_speed(x, args.reference_images, args.repeats)
    share = eval_share(args.images, root)
    print(f"\nall corruptions x severities with a reference: lrn is {speed['overall_speedup']:.1f}x the reference "
          f"per image (goal >= 20x)" + (f"; no reference for {', '.join(speed['reference_missing'])}"
                                       if speed["reference_missing"] else ""))
    print(f"lrn eval of cifar10_full, {share['corruptions']} corruptions x 5 severities on {share['images']:,} "
          f"images: {share['wall_s']:.1f} s, making the images {share['corrupt_s']:.1f} s = "
          f"{100 * share['corrupt_share']:.1f}% (goal <= 15%), forward passes {share['forward_s']:.1f} s "
          f"({share['forward_per_s']:,.0f} images/s)")
    from lrn_cli.runs import git_commit

    out = {"commit": git_commit(), "threads": args.threads, "torch": torch.__version__, "images": args.images,
           "reference_images": args.reference_images, "speed": speed, "eval": share}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    ok = (speed["overall_speedup"] or 0) >= 20 and share["corrupt_share"] <= 0.15
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
