"""Pieces the sweep benchmarks share (run as scripts from the repository: `python benchmarks/X.py`)."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def timed(cmd: list[str]) -> float:
    """Wall seconds of a command, its output discarded; a failure raises."""
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def four_run_spec(folder: Path, data_root: str, per_class: int, epochs: int) -> Path:
    """A spec of 4 short cifar10_full runs (LRN on/off x 2 seeds) written into `folder`."""
    spec = {"name": "bench", "base": str(REPO / "configs" / "cifar10_full.yaml"),
            "set": {"data.root": data_root, "data.per_class": per_class, "data.test_per_class": 20,
                    "train.epochs": epochs},
            "seeds": [0, 1], "grid": {"model.norm.type": ["lrn", "none"]}}
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path
