"""A trained model read back from its run directory, for the commands that use one (`lrn export`).

`load_trained(run_dir)` rebuilds the network from the run's `config.yaml`, loads the weights of
`checkpoint.pt` (with `weights_only=True`: a checkpoint is data, never code to run) and collects
what a user of the model must know about its inputs: the per-channel mean and std it was
trained with (0-255 units: the network sees `(pixel - mean) / std`), the image size, the class
names. Runs record these in `summary.json` under `data`; for older runs that lack the mean and
std they are recomputed from the data, as training computed them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import runs
from .config import Config, load_run_config
from .engine import read_checkpoint
from .errors import UserError

CIFAR_SIZE = 32


@dataclass
class Trained:
    run_dir: Path
    cfg: Config
    model: nn.Module  # in eval mode, on the device asked for
    classes: list[str]
    mean: list[float]  # per channel, 0-255 units
    std: list[float]
    image_size: int
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def channels(self) -> int:
        return len(self.mean)

    @property
    def config_hash(self) -> str:
        return self.summary.get("config_hash") or self.cfg.hash()


def load_trained(run_dir: str | Path, device: str | torch.device = "cpu") -> Trained:
    """The trained network of `run_dir` (in eval mode) and its input conventions; a UserError
    naming the file and the fix where the folder is not a run or its checkpoint cannot be read."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run directory; give a folder that `lrn train` made")
    for name in (runs.CONFIG, runs.CHECKPOINT):
        if not (run_dir / name).is_file():
            what = "no config.yaml" if name == runs.CONFIG else "no checkpoint.pt (it is written after the first epoch)"
            raise UserError(f"{run_dir / name}: {what}; give a run directory that `lrn train` made "
                            "(one run, not a sweep)")
    summary = runs.read_summary(run_dir)  # its effective status: a killed run is `interrupted`
    cfg = load_run_config(run_dir, summary or None)
    state = read_checkpoint(run_dir, cfg, device, fix="the file is damaged or is not the one `lrn train` wrote "
                            "for this config.yaml: retrain the run, or restore the run directory from a copy")["model"]
    classes, mean, std, image_size = input_conventions(cfg, summary.get("data") or {}, run_dir)
    num_classes = cfg.model.num_classes or len(classes)

    from .models import build_model

    with torch.random.fork_rng(devices=[]):  # initial weights, overwritten: leave the caller's RNG alone
        model = build_model(cfg.model, len(mean), image_size, num_classes)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"{run_dir / runs.CHECKPOINT}: its weights do not fit the network of "
                        f"{run_dir / runs.CONFIG} ({str(e).splitlines()[0]}); the two files come from "
                        "different runs: restore the run's own config.yaml") from None
    return Trained(run_dir, cfg, model.to(device).eval(), classes, mean, std, image_size, summary)


def input_conventions(cfg: Config, info: dict[str, Any], run_dir: Path) -> tuple[list[str], list[float],
                                                                                 list[float], int]:
    """(classes, mean, std, image_size) of a run: from summary.json's `data`, or for a run made
    before it recorded the mean and std, from the data itself (loaded as training loaded it)."""
    if all(key in info for key in ("classes", "mean", "std")):
        size = info.get("image_size") or stored_size(cfg)
        return list(info["classes"]), [float(v) for v in info["mean"]], [float(v) for v in info["std"]], int(size)
    from .data import load_data, stats_info

    try:
        data = load_data(cfg.data)
    except UserError as e:
        raise UserError(f"{run_dir / runs.SUMMARY} does not record the mean and std this run was trained with "
                        f"(it predates them), and recomputing them needs its data: {e}; run this from the "
                        f"folder the run was trained in (data.root is {cfg.data.root!r})") from None
    stats = stats_info(data.mean, data.std)
    return list(data.classes), stats["mean"], stats["std"], data.image_size


def stored_size(cfg: Config) -> int:
    """The side of the images the network sees, from the config: data.image_size, or CIFAR-10's 32."""
    return cfg.data.image_size or CIFAR_SIZE  # synthetic's default is 32, imagefolder's is resolved
