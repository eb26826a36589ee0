"""A sweep directory's files, named in one place: what `lrn ablate` writes, `lrn report` reads and
rewrites, and `lrn board` serves (sweep.py, report.py and tb.py import them from here).

    SWEEP/spec.yaml                               the spec, as given
    SWEEP/sweep.json                              the run table: every run, its point and its directory
    SWEEP/RUN/                                    one run directory per run (runs.py), named by `run_name`
    SWEEP/RUN/events.out.tfevents.0.lrn-hparams   the run's HParams session
    SWEEP/RUN/robustness.json                     the run's accuracy under common corruptions
    SWEEP/RUN/plots/corruptions.png               the corruptions it was evaluated on, on a few test images
    SWEEP/RUN/events.out.tfevents.0.lrn-robustness  its robustness scalars and the grid (`lrn eval`)
    SWEEP/RUN/events.out.tfevents.0.lrn-mce       its mCE and relative mCE against the sweep's baseline
    SWEEP/events.out.tfevents.0.lrn-hparams-config  the HParams experiment (the swept keys)
    SWEEP/results.csv, results.md, plots/*.png    the report (plots/robust_*.png, corruption_grid.png:
                                                  robustness, where runs have robustness.json)
    SWEEP/.lock                                   held while a driver runs in the sweep
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

SPEC_FILE = "spec.yaml"
SWEEP_FILE = "sweep.json"
RESULTS_CSV = "results.csv"
RESULTS_MD = "results.md"
PLOTS = "plots"
HPARAMS_CONFIG = "events.out.tfevents.0.lrn-hparams-config"
HPARAMS_RUN = "events.out.tfevents.0.lrn-hparams"
ROBUSTNESS = "robustness.json"
RUN_CORRUPTION_GRID = "plots/corruptions.png"  # in a run directory
ROBUST_MCE = "events.out.tfevents.0.lrn-mce"  # RUN/: robust/mce, robust/relative_mce, rewritten by every report
ROBUSTNESS_EVENTS = "events.out.tfevents.0.lrn-robustness"  # RUN/: `lrn eval`'s scalars and images (robust.py)

MAX_WHAT = 60  # characters of a run directory's name that say what the run is
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def _short_keys(keys: list[str]) -> dict[str, str]:
    """Each dotted key's shortest tail that no other key ends in: model.norm.size -> size, and
    model.layers.0.conv.out / model.layers.3.conv.out -> 0.conv.out / 3.conv.out."""
    out = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            tail = ".".join(parts[-n:])
            if sum(k == tail or k.endswith("." + tail) for k in keys) == 1:
                break
        out[key] = tail
    return out


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def describe(point: dict[str, Any], variant: str | None) -> str:
    """What a run is, for its directory's name: the variant's name, or the swept keys' short names
    and values (`size3_alpha0.01_convention.caffe`); letters, digits and `_.-`, at most MAX_WHAT
    characters."""
    if variant is not None:
        what = variant
    else:
        short = _short_keys(list(point))
        what = "_".join(short[k] + ("" if re.match(r"[-.\d]", v := _value(value)) else ".") + v
                        for k, value in point.items())
    return _UNSAFE.sub("_", what).strip("._-")[:MAX_WHAT].rstrip("._-") or "base"


def run_name(what: str, seed: int, run_id: str) -> str:
    """A sweep run's directory name: what it is (`describe`), its seed and its config hash, the
    run's identity: `size3_alpha0.01-s1-10bee16e25`, `no_lrn-s0-10bee16e25`."""
    return f"{what}-s{seed}-{run_id}"


def locate(sweep_dir: Path, name: str, legacy: str | None) -> str:
    """The directory of a run in `sweep_dir`: `name` if it exists; else `legacy` if that exists (the
    bare config hash by which sweeps made before readable names named it: used as it is, not
    renamed, so that the run resumes there); else `name`, to be created."""
    if (sweep_dir / name).is_dir() or not legacy or not (sweep_dir / legacy).is_dir():
        return name
    return legacy
