"""Training and evaluation: `train()` runs one config end to end into a run directory.

Read top to bottom, in the shape of torchvision's classification reference: `train` opens the
run (validate, load data, build the model, read the checkpoint: every user error is found here,
before anything is written); `_fit` is the loop (per epoch: `train_one_epoch`, `evaluate`, then
the `Recorder` logs and checkpoints), with one way out that records the run's status. `RunState`
is where the run is, and converts to and from the checkpoint; the `Recorder` owns everything the
run writes (summary, metrics, checkpoint, predictions, TensorBoard) and writes nothing on ranks > 0.
Every random draw of a step comes from a seed derived from (seed, epoch, step),
so a run resumed from any checkpoint, even one taken mid-epoch, repeats an uninterrupted run
bit for bit on the CPU.

One run can train on several processes (`train.nproc`, or torchrun): the same loop, where every
rank draws the whole global batch as a single process does and keeps its own contiguous share,
DistributedDataParallel averages the gradients, one small all-reduce per step makes the ranks
agree on the loss, the divergence check and when to stop, and rank 0 alone writes. With one
process none of that calls a collective (see `distributed.py`).
"""
from __future__ import annotations

import errno
import math
import os
import signal
import sys
import threading
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import activity, distributed, robust, runs
from .config import CONFIG_VERSION, AugmentConfig, Config, TrainConfig, load_config, load_run_config
from .data import Data, DataWarning, Split, load_data
from .data.augment import crop_flip, normalize
from .errors import UserError
from .models import build_model, count_params, param_groups
from .perf import keep_freed_memory
from .runs import Status


@dataclass
class RunResult:
    run_dir: Path
    summary: dict[str, Any]


class Diverged(Exception):
    pass


# ----------------------------------------------------------------------------- pieces

def step_seed(seed: int, epoch: int, step: int) -> int:
    """A seed for one step's random draws, unique per (seed, epoch, step)."""
    return (seed * 1_000_003 + epoch) * 1_000_033 + step + 1


RANK_SEED_STRIDE = 1_000_000_007  # ranks > 0 draw their dropout masks from step_seed + rank * this


def lr_factor(step: int, total: int, cfg: TrainConfig) -> float:
    """The learning-rate schedule: the multiplier of train.lr at optimizer step `step` (from 0) of
    `total`. A warmup over the first train.warmup of the steps rises linearly (onecycle: half a
    cosine) from 1/warmup_steps of the peak at the first step to the peak at its last; then the
    schedule: constant, multistep, or half a cosine down to 0 over the remaining steps."""
    warm = round(cfg.warmup * total)
    if step < warm:
        rise = (step + 1) / warm
        return 0.5 - 0.5 * math.cos(math.pi * rise) if cfg.schedule == "onecycle" else rise
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "multistep":
        return cfg.gamma ** sum(step / max(total, 1) >= m for m in cfg.milestones)
    rest = (step - warm) / max(total - warm, 1)  # cosine and onecycle
    return 0.5 + 0.5 * math.cos(math.pi * min(rest, 1.0))


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """models.param_groups: weight decay on conv and fc weights only (not biases or norm scales),
    or Caffe's per-layer lr_mult / decay_mult where the model carries them (model.caffe_multipliers)."""
    groups = param_groups(model, cfg.lr, cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999))
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                           nesterov=cfg.nesterov and cfg.momentum > 0)


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device: cuda asked for, but torch sees no GPU here; use auto or cpu")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu")


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, data: Data, batch_size: int, device: torch.device,
             world: distributed.World = distributed.World(),
             predictions: list[torch.Tensor] | None = None) -> dict[str, float]:
    """Cross-entropy loss, top-1 and top-5 accuracy (fractions) over a whole split. In a world of
    several processes each evaluates a contiguous run of the batches one process would, and the
    sums are added up: the same numbers (up to the order of the loss sum), sooner.

    `predictions`, a list, receives one int16 tensor: the top-1 class of every image of the split,
    in the split's order, on every rank (the ranks' contiguous shards gathered in rank order)."""
    model.eval()
    mine_top1: list[torch.Tensor] = []
    mean, std = data.mean.to(device), data.std.to(device)
    loss = correct1 = correct5 = 0.0
    k = min(5, data.num_classes)
    mine = distributed.shard(len(split), world, block=batch_size)
    for i in range(mine.start, mine.stop, batch_size):
        x = split.x[i:i + batch_size]
        x = normalize((data.eval_transform(x) if data.eval_transform else x).to(device), mean, std)
        y = split.y[i:i + batch_size].to(device)
        logits = model(x).float()
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        top = logits.topk(k, dim=1).indices
        correct1 += (top[:, 0] == y).sum().item()
        correct5 += (top == y[:, None]).any(dim=1).sum().item()
        if predictions is not None:
            mine_top1.append(top[:, 0].to("cpu", torch.int16))
    loss, correct1, correct5 = distributed.all_sum([loss, correct1, correct5], world, device)
    if predictions is not None:
        predictions.append(_gather_in_order(torch.cat(mine_top1) if mine_top1 else
                                            torch.zeros(0, dtype=torch.int16), world))
    n = max(len(split), 1)
    return {"loss": loss / n, "acc": correct1 / n, "top5": correct5 / n}


def _gather_in_order(part: torch.Tensor, world: distributed.World) -> torch.Tensor:
    """Every rank's `part` (a CPU tensor: its contiguous shard of a split), concatenated in rank
    order, on every rank; `part` itself in a world of one. all_gather_object: a few tens of KB
    once per run, over gloo or nccl alike."""
    if world.size == 1:
        return part
    import torch.distributed as dist

    parts: list[Any] = [None] * world.size
    dist.all_gather_object(parts, part.numpy())
    return torch.cat([torch.from_numpy(p) for p in parts])


class StopSignals:
    """While active, the first Ctrl-C or SIGTERM sets `signum` so that the loop can stop cleanly;
    a second Ctrl-C interrupts at once, unless `second_interrupts` is False: a worker of a run on
    several processes gets Ctrl-C twice, from the terminal and forwarded by its launcher, and must
    stop after the same step as the others."""

    def __init__(self, second_interrupts: bool = True) -> None:
        self.signum: int | None = None
        self.second_interrupts = second_interrupts
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            if signum == signal.SIGINT and self.second_interrupts:
                raise KeyboardInterrupt
            return
        self.signum = signum

    def flags(self) -> list[float]:
        """[stop, stop by Ctrl-C] as numbers that add up over processes (see `agreed`)."""
        return [float(self.signum is not None), float(self.signum == signal.SIGINT)]

    @staticmethod
    def agreed(flags: list[float]) -> str | None:
        """The signal that stops every process, from `flags` summed over them: None if none saw
        one, SIGINT if any saw Ctrl-C, else SIGTERM."""
        return None if not flags[0] else "SIGINT" if flags[1] else "SIGTERM"

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)


class Reporter:
    """A progress bar per epoch on a terminal, a plain line per epoch otherwise, nothing if quiet."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.bar: Any = None

    def line(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)

    def start_epoch(self, epoch: int, epochs: int, steps: int, done: int) -> None:
        if self.tty and not self.quiet:
            from tqdm import tqdm

            self.bar = tqdm(total=steps, initial=done, desc=f"epoch {epoch}/{epochs}", unit="step",
                            leave=False, dynamic_ncols=True, file=sys.stderr)

    def step(self, loss: float, acc: float, images_per_s: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if self.bar.n % 10 == 0 or self.bar.n == self.bar.total:
                self.bar.set_postfix(loss=f"{loss:.3f}", acc=f"{acc:.3f}", img_s=f"{images_per_s:.0f}",
                                     refresh=False)

    def end_epoch(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# ----------------------------------------------------------------------------- the run

def train(config: str | Path | dict[str, Any] | Config | None = None, overrides: list[str] | tuple[str, ...] = (),
          out: str | Path = "runs", name: str | None = None, resume: str | Path | bool | None = None,
          quiet: bool = False, nproc: int | None = None) -> RunResult:
    """Train one config into a run directory and return it with its summary.

    resume: a run directory to continue from its checkpoint; or True to continue `out/name` if it
    exists and start it otherwise (what a sweep does); None to start a new run directory.
    nproc: processes to train on (`--nproc`), in place of train.nproc, also when resuming. Above 1,
    this process validates, holds the run directory and starts them through torch's elastic
    launcher (spawned: a script that calls this needs the `if __name__ == "__main__":` guard);
    in a world that torchrun started, this process is one of its ranks.
    """
    world = distributed.world()
    if world.rank > 0 or distributed.LOCKED_RUN_DIR in os.environ:  # shown once: by rank 0, or the parent
        warnings.filterwarnings("ignore", category=DataWarning)
    run_dir, cfg = _locate(config, overrides, out, name, resume)
    if nproc is not None:
        cfg = load_config(cfg, [f"train.nproc={nproc}"])
    summary = runs.read_json(run_dir / runs.SUMMARY) if run_dir else None
    if summary and summary.get("status") == Status.COMPLETED:
        report = Reporter(quiet or world.rank > 0)
        report.line(f"{run_dir}: already completed" + ("" if cfg.eval.corruptions != "none" else ", nothing to do"))
        return _robustness(RunResult(run_dir, summary), cfg, None, world, report)

    # everything that can fail because of the user happens here, before anything is written
    processes = world.size if world.joined else cfg.train.nproc
    keep_freed_memory()
    threads = distributed.threads(cfg.train.threads, world)
    if threads:
        torch.set_num_threads(threads)
    device = distributed.device_of(pick_device(cfg.train.device), world)
    data = load_data(cfg.data)
    num_classes = cfg.model.num_classes or data.num_classes
    if num_classes < data.num_classes:
        raise UserError(f"model.num_classes: {num_classes} outputs for {data.num_classes} classes; "
                        "leave it unset to take the dataset's")
    check_processes(cfg.train, len(data.train), device, processes, world.local_size if world.joined else processes)
    if cfg.eval.corruptions != "none":
        robust.check(cfg, data)  # a bad eval.corruptions_root is found before training, not after
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = build_model(cfg.model, data.channels, data.image_size, num_classes)
    ckpt = read_checkpoint(run_dir, cfg, device) if run_dir else None

    if run_dir is None and world.rank == 0:
        run_dir = runs.new_run_dir(out, name or runs.default_run_name(cfg.name))
    distributed.init(world, device)  # nothing to join outside a world of several processes
    run_dir = distributed.broadcast(run_dir, world)  # rank 0's, for every rank
    take_lock = world.rank == 0 and not distributed.lock_held_by_parent(run_dir)
    with runs.locked(run_dir, "this run directory") if take_lock else nullcontext():
        if world.rank == 0 and not (run_dir / runs.CONFIG).exists():
            runs.write_text(run_dir / runs.CONFIG, cfg.to_yaml())
        report = Reporter(quiet or world.rank > 0)
        if cfg.eval.corruptions != "none" and not ckpt:
            report.line(robust.cost_line(cfg.eval.corruption_names, cfg.eval.severities,
                                         len(robust.selection(data.test.y, cfg.eval.corruption_per_class)), None)
                        + ", after training")
        if processes > 1 and not world.joined:  # start the workers (each loads its own data and model)
            del data, model, ckpt
            return _robustness(_launch(cfg, run_dir, processes, quiet), cfg, None, world, report)
        result = _fit(cfg, run_dir, data, model.to(device), device, ckpt, report, world)
    distributed.finish(world)
    return _robustness(result, cfg, data, world, report)


def _robustness(result: RunResult, cfg: Config, data: Data | None, world: distributed.World,
                report: Reporter) -> RunResult:
    """A completed run's corrupted evaluations (eval.corruptions), unless done with the same
    settings: by the process that holds the run (rank 0, or the parent of launched workers)."""
    if (cfg.eval.corruptions == "none" or result.summary.get("status") != Status.COMPLETED or world.rank > 0
            or distributed.LOCKED_RUN_DIR in os.environ):
        return result
    try:
        evaluated = robust.evaluate_run(result.run_dir, cfg=cfg, data=data, line=report.line)
    except KeyboardInterrupt:
        report.line(f"{result.run_dir}: completed, but its corrupted evaluations were interrupted (none written); "
                    f"evaluate it with: lrn eval {result.run_dir}")
        raise
    if evaluated is not None:
        result = RunResult(result.run_dir, runs.read_json(result.run_dir / runs.SUMMARY) or result.summary)
    return result


def check_processes(tc: TrainConfig, train_images: int, device: torch.device, processes: int, local: int) -> None:
    """train.batch_size is the global batch: the processes take equal contiguous shares of it."""
    bs = min(tc.batch_size, train_images)
    if bs % processes:
        whole = f" (the whole training set: {train_images} images)" if bs < tc.batch_size else ""
        raise UserError(f"train.batch_size: the global batch of {bs}{whole} does not split evenly over "
                        f"--nproc {processes} processes; make train.batch_size a multiple of {processes} "
                        "or change --nproc (train.nproc)")
    if device.type == "cuda" and local > torch.cuda.device_count():
        raise UserError(f"train.nproc: {local} processes on this machine need a GPU each, torch sees "
                        f"{torch.cuda.device_count()}; lower --nproc or set train.device=cpu")


def _launch(cfg: Config, run_dir: Path, nproc: int, quiet: bool) -> RunResult:
    """The parent of a run on `nproc` processes of this machine, called by `train` while it holds
    the run directory (its lock, config.yaml): torch's elastic launcher runs `_worker` in each
    process, and this waits. Rank 0
    writes the run as a single process would; this process writes only an end the workers could
    not: a worker that failed (the first, not the others that then lost a peer) or a signal that
    stopped the workers before rank 0 could write "interrupted"."""
    before = runs.read_json(run_dir / runs.SUMMARY)  # a resumed run's: not an end of this launch
    failure, signame = None, None
    try:
        signame = distributed.launch(nproc, _worker, (str(run_dir), quiet))
    except distributed.WorkerFailed as e:
        failure = e
    after = runs.read_json(run_dir / runs.SUMMARY)
    summary = after or {"name": cfg.name, "config_hash": cfg.hash(), "config_version": CONFIG_VERSION,
                        "seed": cfg.seed, "epochs": 0}
    ended = summary.get("status") if after != before else None  # what rank 0 wrote, if it did
    if failure and ended in (None, Status.RUNNING, Status.FAILED):
        summary.update(status=Status.FAILED, error=failure.error)
        runs.write_json(run_dir / runs.SUMMARY, summary)
        raise failure
    if signame and ended in (None, Status.RUNNING):
        summary.update(status=Status.INTERRUPTED, signal=signame)
        runs.write_json(run_dir / runs.SUMMARY, summary)
        Reporter(quiet).line(f"{run_dir}: interrupted; continue from the last checkpoint with: "
                             f"lrn train --resume {run_dir}")
    return RunResult(run_dir, summary)


def _worker(run_dir: str, quiet: bool) -> None:
    """One rank of `_launch`'s run, in a process the elastic launcher started (RANK, WORLD_SIZE ...
    in its environment): it resumes the run directory that the parent holds (and says so, so that
    rank 0 does not try to take the lock)."""
    os.environ[distributed.LOCKED_RUN_DIR] = run_dir
    result = train(resume=run_dir, quiet=quiet)
    if result.summary["status"] == runs.Status.INTERRUPTED:
        # leave at once: the launcher is stopping the workers, and a worker that returns waits
        # for the launcher to collect its return value, which it no longer does
        raise SystemExit(runs.exit_code(runs.Status.INTERRUPTED, result.summary.get("signal")))


def _locate(config: Any, overrides: Any, out: Any, name: str | None, resume: Any) -> tuple[Path | None, Config]:
    """-> (existing run directory or None, config)."""
    if name is not None:
        runs.check_name(name)
    if resume is None or resume is False or resume is True:
        runs.check_out(out)
    if resume is None or resume is False:
        return None, load_config(config, overrides)
    if resume is True:
        if not name:
            raise UserError("--resume without a run directory needs --name (the run to continue in --out)")
        run_dir = Path(out) / name
        cfg = load_config(config, overrides)
        if (run_dir / runs.CONFIG).exists():
            stored = load_run_config(run_dir, runs.read_json(run_dir / runs.SUMMARY))
            if stored.hash() != cfg.hash():
                raise UserError(f"{run_dir}: holds a run of a different config; pick another --name "
                                f"or --out, or resume it with `lrn train --resume {run_dir}`")
        if run_dir.exists():
            return run_dir, cfg
        return None, cfg
    run_dir = Path(resume)
    if config is not None or overrides:
        raise UserError("--resume RUN_DIR takes the config stored in RUN_DIR; drop --config and --set")
    if not (run_dir / runs.CONFIG).exists():
        raise UserError(f"{run_dir}: not a run directory (no {runs.CONFIG}); give the folder `lrn train` made")
    return run_dir, load_run_config(run_dir, runs.read_json(run_dir / runs.SUMMARY))


@dataclass
class RunState:
    """Where a run is: what a checkpoint carries besides the model, optimizer and scheduler. A
    fresh run starts from zeros; `epoch` counts finished epochs, `step` the steps of the next."""

    epoch: int = 0
    step: int = 0
    loss_sum: float = 0.0  # running sums over the current epoch's steps (all ranks)
    correct: int = 0
    seen: int = 0
    train_s: float = 0.0  # seconds spent in training steps, and the images they took
    train_images: int = 0
    wall_s: float = 0.0  # wall time of the run so far, over all its resumed segments

    @property
    def images_per_s(self) -> float:
        return self.train_images / max(self.train_s, 1e-9)

    def next_epoch(self) -> None:
        self.epoch, self.step = self.epoch + 1, 0
        self.loss_sum, self.correct, self.seen = 0.0, 0, 0

    def to_checkpoint(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                      config_hash: str) -> dict[str, Any]:
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "epoch": self.epoch, "step": self.step,
                "acc": {"loss": self.loss_sum, "correct": self.correct, "seen": self.seen},
                "clock": {"train_s": self.train_s, "train_images": self.train_images, "wall_s": self.wall_s},
                "config_hash": config_hash}

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> "RunState":
        acc, clock = ckpt["acc"], ckpt["clock"]
        return cls(ckpt["epoch"], ckpt["step"], acc["loss"], acc["correct"], acc["seen"],
                   clock["train_s"], clock["train_images"], clock["wall_s"])


CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "epoch", "step", "acc", "clock", "config_hash")


def read_checkpoint(run_dir: Path, cfg: Config, device: torch.device | str = "cpu",
                    fix: str | None = None) -> dict[str, Any] | None:
    """The run's checkpoint, checked to be one of this run's; None if there is none yet. Loaded
    with weights_only=True: a checkpoint holds tensors, numbers and strings only, so a run
    directory from someone else cannot run code through its pickle. A file that is cut short,
    not a checkpoint, or another config's is a UserError that names it and says `fix` (default:
    what to do to resume)."""
    path = run_dir / runs.CHECKPOINT
    if not path.exists():
        return None
    fix = fix or (f"restore it, or delete it to train {run_dir} again from the start "
                  f"(rm {path} {run_dir / runs.METRICS})")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 - zip reader, unpickler, weights-only refusal
        raise UserError(f"{path}: not a readable checkpoint ({e.__class__.__name__}: "
                        f"{str(e).splitlines()[0][:120] if str(e) else 'unreadable'}); {fix}") from None
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in CHECKPOINT_KEYS):
        raise UserError(f"{path}: not a checkpoint written by lrn train (it lacks "
                        f"{', '.join(k for k in CHECKPOINT_KEYS if not isinstance(ckpt, dict) or k not in ckpt)}); {fix}")
    if ckpt["config_hash"] not in (cfg.hash(), cfg.legacy_hash()):
        raise UserError(f"{path}: a checkpoint of another config than {run_dir / runs.CONFIG} (hash "
                        f"{ckpt['config_hash']}, the config's {cfg.hash()}); {fix}")
    return ckpt


def restore(ckpt: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
            path: Path) -> RunState:
    try:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        return RunState.from_checkpoint(ckpt)
    except (RuntimeError, KeyError, ValueError, TypeError) as e:
        raise UserError(f"{path}: its weights do not fit this run's model ({' '.join(str(e).split())[:160]}); "
                        f"restore the checkpoint, or delete it to train again from the start") from None


class Recorder:
    """Everything a run writes: summary.json, metrics.jsonl, checkpoint.pt and the TensorBoard
    events. On ranks > 0 it writes nothing. It also keeps the run's wall clock, over resumes."""

    def __init__(self, run_dir: Path, cfg: Config, state: RunState, lead: bool, summary: dict[str, Any]) -> None:
        self.run_dir, self.cfg, self.state, self.lead, self.summary = run_dir, cfg, state, lead, summary
        self.writer: Any = None
        self._started, self._wall_base = time.perf_counter(), state.wall_s

    def open(self, global_step: int) -> list[dict[str, Any]]:
        """Start writing; drop what a lost part of the run logged after the checkpoint. Returns the
        epochs' metrics logged so far."""
        history = [m for m in runs.read_jsonl(self.run_dir / runs.METRICS) if m["epoch"] <= self.state.epoch]
        if self.lead:
            from torch.utils.tensorboard import SummaryWriter

            runs.write_jsonl(self.run_dir / runs.METRICS, history)
            self.writer = SummaryWriter(str(self.run_dir), purge_step=global_step + 1 if global_step else None)
            if global_step == 0:
                self.writer.add_text("config", "```yaml\n" + self.cfg.to_yaml() + "\n```", 0)
        return history

    def tick(self) -> None:
        self.state.wall_s = self._wall_base + time.perf_counter() - self._started

    def step_loss(self, loss: float, global_step: int) -> None:
        if self.writer is not None and global_step % 50 == 0:
            self.writer.add_scalar("train/loss_step", loss, global_step)

    def epoch(self, row: dict[str, Any], hists: dict[str, activity.LayerHistogram], global_step: int,
              predictions: Any = None) -> None:
        """Log an epoch's metrics and LRN activity; `predictions` (the last epoch's: (predicted,
        true) classes of the test images, int16 arrays in the split's order) to test_labels.npy
        and predictions.npy, atomically, the labels first (a run with predictions has both)."""
        if predictions is not None and self.lead:
            import numpy as np

            for name, array in ((runs.TEST_LABELS, predictions[1]), (runs.PREDICTIONS, predictions[0])):
                runs.atomic_write(self.run_dir / name, lambda f, a=array: np.save(f, a, allow_pickle=False),
                                  mode="wb")
        measured = activity.summarize(hists)
        if self.lead:
            for key, value in row.items():
                if key != "epoch":
                    self.writer.add_scalar(TB_TAGS.get(key, key.replace("_", "/", 1)), value, global_step)
            for layer, hist in hists.items():
                activity.tb_histogram(self.writer, f"lrn/{layer}/factor", hist, global_step)
                for key in ("median", "frac_changed_1pct"):
                    self.writer.add_scalar(f"lrn/{layer}/{key}", measured[layer][key], global_step)
            self.writer.flush()
            runs.append_jsonl(self.run_dir / runs.METRICS, row)
        self.summary.update(_final_metrics(row))
        if measured:
            self.summary.update(lrn_activity=measured, lrn_inert=activity.inert(measured))

    def checkpoint(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
        self.tick()
        if self.lead:
            state = self.state.to_checkpoint(model, optimizer, scheduler, self.cfg.hash())
            runs.atomic_write(self.run_dir / runs.CHECKPOINT, lambda f: torch.save(state, f), mode="wb")

    def status(self, status: str, **extra: Any) -> None:
        self.tick()
        self.summary.update(status=status, epochs=self.state.epoch, wall_time_s=round(self.state.wall_s, 3),
                            images_per_s=round(self.state.images_per_s, 2), **extra)
        if self.lead:
            runs.write_json(self.run_dir / runs.SUMMARY, self.summary)

    def close(self) -> None:
        if self.writer is not None:
            writer, self.writer = self.writer, None
            try:
                writer.close()
            except OSError as e:  # the events still buffered are lost; everything else is on disk
                warnings.warn(f"{self.run_dir}: TensorBoard events not all written ({e})", stacklevel=2)


# ----------------------------------------------------------------------------- the loop

@dataclass
class Loop:
    """What the steps of a run share, made once per process."""

    cfg: Config
    data: Data
    net: nn.Module  # what the step calls (the DDP wrapper in a world of several processes)
    optimizer: torch.optim.Optimizer
    scheduler: Any
    criterion: nn.Module
    device: torch.device
    world: distributed.World
    batch: int  # the global batch
    steps_per_epoch: int
    mean: torch.Tensor
    std: torch.Tensor


def train_one_epoch(loop: Loop, state: RunState, stop: StopSignals, rec: Recorder, report: Reporter) -> str | None:
    """Train from `state.step` to the end of epoch `state.epoch` (or until a signal): returns the
    signal that all ranks stop for, or None. Raises Diverged on a loss that is not finite."""
    cfg, world = loop.cfg, loop.world
    mine = distributed.shard(loop.batch, world)  # this process's share of each batch
    loop.net.train()
    perm = torch.randperm(len(loop.data.train), generator=torch.Generator().manual_seed(
        step_seed(cfg.seed, state.epoch, -1)))
    report.start_epoch(state.epoch + 1, cfg.train.epochs, loop.steps_per_epoch, state.step)
    try:
        while state.step < loop.steps_per_epoch:
            t0 = time.perf_counter()
            seed = step_seed(cfg.seed, state.epoch, state.step)
            torch.manual_seed(seed)  # augmentation, dropout and friends
            idx = perm[state.step * loop.batch:(state.step + 1) * loop.batch]
            xb = train_inputs(loop.data, cfg.data.augment, idx, loop.device, loop.mean, loop.std, mine)
            yb = loop.data.train.y[idx[mine]].to(loop.device)
            if world.rank:  # each rank drew the whole batch alike; its dropout masks are its own
                torch.manual_seed(seed + world.rank * RANK_SEED_STRIDE)
            logits = loop.net(xb)
            loss = loop.criterion(logits, yb)
            loop.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            loop.optimizer.step()
            loop.scheduler.step()
            # one small all-reduce: the global batch's loss and accuracy, and whether any rank
            # was signalled, so that every rank takes the same decisions below
            loss_sum, correct, seen, *flags = distributed.all_sum(
                [loss.item() * len(yb), int((logits.argmax(1) == yb).sum()), len(yb), *stop.flags()],
                world, loop.device)
            if not math.isfinite(loss_sum):
                raise Diverged(f"loss became {loss_sum / seen} at epoch {state.epoch + 1}, step {state.step + 1}; "
                               "lower train.lr or check the LRN parameters")
            state.loss_sum += loss_sum
            state.correct += int(correct)
            state.seen += int(seen)
            state.step += 1
            state.train_s += time.perf_counter() - t0
            state.train_images += int(seen)
            report.step(state.loss_sum / state.seen, state.correct / state.seen, state.images_per_s)
            rec.step_loss(loss_sum / seen, state.epoch * loop.steps_per_epoch + state.step)
            halt = StopSignals.agreed(flags)
            if halt:
                return halt
        return None
    finally:
        report.end_epoch()


def _fit(cfg: Config, run_dir: Path, data: Data, model: nn.Module, device: torch.device,
         ckpt: dict[str, Any] | None, report: Reporter, world: distributed.World) -> RunResult:
    """The loop: per epoch, train, evaluate, log and checkpoint; one way out, with the status."""
    tc = cfg.train
    bs = min(tc.batch_size, len(data.train))
    steps_per_epoch = len(data.train) // bs
    total_steps = steps_per_epoch * tc.epochs
    optimizer = make_optimizer(model, tc)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total_steps, tc))
    state = restore(ckpt, model, optimizer, scheduler, run_dir / runs.CHECKPOINT) if ckpt else RunState()
    if ckpt:
        report.line(f"{run_dir}: resuming at epoch {state.epoch + 1}, step {state.step}/{steps_per_epoch}")
    loop = Loop(cfg, data, distributed.wrap(model, world, device), optimizer, scheduler,
                nn.CrossEntropyLoss(label_smoothing=tc.label_smoothing), device, world, bs, steps_per_epoch,
                data.mean.to(device), data.std.to(device))

    summary: dict[str, Any] = {
        "status": Status.RUNNING, "name": cfg.name, "config_hash": cfg.hash(), "config_version": CONFIG_VERSION,
        "seed": cfg.seed, "epochs": state.epoch, "params": count_params(model), "data": data.info,
        "env": runs.environment(torch.get_num_threads(), str(device), world.size),
    }
    rec = Recorder(run_dir, cfg, state, world.rank == 0, summary)
    history = rec.open(state.epoch * steps_per_epoch + state.step)
    if history:
        summary.update(_final_metrics(history[-1]))
    rec.status(Status.RUNNING)
    procs = f", {world.size} processes" if world.size > 1 else ""
    report.line(f"{run_dir}: {cfg.name}, {summary['params']:,} parameters, {len(data.train)} train / "
                f"{len(data.val) if data.val else 0} val / {len(data.test)} test images, {device}{procs}")

    status, extra, halt, where = Status.COMPLETED, {}, None, ""
    try:
        with StopSignals(second_interrupts=world.size == 1) as stop:
            while state.epoch < tc.epochs and not halt:
                epoch_start = time.perf_counter()
                halt = train_one_epoch(loop, state, stop, rec, report)
                if halt and state.step < steps_per_epoch:  # stopped inside the epoch
                    rec.checkpoint(model, optimizer, scheduler)
                    break
                # end of an epoch: evaluate, log, checkpoint
                distributed.sync_buffers(model, world)
                row, hists, predictions = _epoch_metrics(model, data, cfg, device, state, optimizer,
                                                         time.perf_counter() - epoch_start, world)
                state.next_epoch()
                rec.epoch(row, hists, state.epoch * steps_per_epoch, predictions)
                rec.checkpoint(model, optimizer, scheduler)
                rec.status(Status.RUNNING)
                report.line(_epoch_line(row, tc.epochs))
                halt = halt or StopSignals.agreed(distributed.all_sum(stop.flags(), world, device))
        if halt:
            status, extra = Status.INTERRUPTED, {"signal": halt}
            where = f" at epoch {state.epoch + 1}, step {state.step}" if state.step else f" after epoch {state.epoch}"
    except Diverged as e:
        status, extra = Status.DIVERGED, {"error": str(e)}
    except KeyboardInterrupt:
        status, extra = Status.INTERRUPTED, {"signal": "SIGINT"}
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            rec.status(Status.FAILED, error=f"{e.__class__.__name__}: {e}")
            raise
        try:
            rec.status(Status.INTERRUPTED, error="no space left on the device")
        except OSError:
            pass  # a reader takes a `running` summary whose run holds no lock for interrupted
        raise UserError(f"{e.filename or run_dir}: no space left on the device; free some space, then continue "
                        f"the run from its last checkpoint with: lrn train --resume {run_dir}") from None
    except BaseException as e:
        rec.status(Status.FAILED, error=f"{e.__class__.__name__}: {e}")
        raise
    finally:
        rec.close()
    rec.status(status, **extra)
    if status == Status.COMPLETED and summary.get("lrn_activity"):
        report.line(f"{run_dir}: {activity.describe(summary['lrn_activity'])}")
    report.line(_end_line(run_dir, status, summary, where))
    return RunResult(run_dir, summary)


def _end_line(run_dir: Path, status: str, summary: dict[str, Any], where: str) -> str:
    if status == Status.COMPLETED:
        return (f"{run_dir}: completed: test acc {summary['test_acc']:.4f}, top-5 {summary['test_top5']:.4f}, "
                f"loss {summary['test_loss']:.4f}, {summary['wall_time_s']:.0f} s, "
                f"{summary['images_per_s']:.0f} images/s")
    if status == Status.DIVERGED:
        return f"{run_dir}: diverged: {summary['error']}"
    return (f"{run_dir}: interrupted{where}; continue from the last checkpoint with: "
            f"lrn train --resume {run_dir}")


def train_inputs(data: Data, aug: AugmentConfig, idx: torch.Tensor, device: torch.device, mean: torch.Tensor,
                 std: torch.Tensor, keep: slice = slice(None)) -> torch.Tensor:
    """The augmented, normalized training batch `idx`, or its rows `keep` (a process's share of a
    global batch: the draws are the whole batch's, as one process makes them). Random draws come
    from the global generator, which the loop seeds per step. On the CPU a dataset's one-pass path
    is used where it has one; towards a GPU, uint8 images travel and are normalized there."""
    if data.train_batch is not None and device.type == "cpu":
        return data.train_batch(data.train.x, idx, torch.default_generator)[keep]
    xb = data.train.batch(idx)
    if data.train_transform:
        xb = data.train_transform(xb, torch.default_generator)
    else:
        xb = crop_flip(xb, aug.crop, aug.flip, torch.default_generator)
    return normalize(xb[keep].to(device, non_blocking=True), mean, std)


# TensorBoard names of the metrics.jsonl keys that do not read as split_metric
TB_TAGS = {"lr": "train/lr", "images_per_s": "speed/images_per_s", "epoch_time_s": "speed/epoch_time_s"}


# test images whose LRN factors are counted after each epoch but the last, which counts them all
ACTIVITY_IMAGES = 2000


def _epoch_metrics(model: nn.Module, data: Data, cfg: Config, device: torch.device, state: RunState,
                   optimizer: torch.optim.Optimizer, epoch_s: float,
                   world: distributed.World) -> tuple[dict[str, Any], dict[str, activity.LayerHistogram], Any]:
    """The row of metrics.jsonl for the epoch `state` has just trained, the LRN layers' factors
    over the test set (`activity`; the first ACTIVITY_IMAGES but after the last epoch), and after
    the last epoch the test images' (predicted, true) classes as int16 arrays (else None)."""
    row: dict[str, Any] = {
        "epoch": state.epoch + 1,
        "lr": optimizer.param_groups[0]["lr"],
        "train_loss": state.loss_sum / max(state.seen, 1),
        "train_acc": state.correct / max(state.seen, 1),
    }
    if data.val is not None:
        row.update({f"val_{k}": v for k, v in evaluate(model, data.val, data, cfg.eval.batch_size, device, world).items()})
    last = state.epoch + 1 == cfg.train.epochs
    top1: list[torch.Tensor] | None = [] if last else None
    with activity.measure(model, None if last else ACTIVITY_IMAGES) as hists:
        row.update({f"test_{k}": v for k, v in evaluate(model, data.test, data, cfg.eval.batch_size, device, world,
                                                        top1).items()})
    for hist in hists.values():  # add up the processes' counts
        hist.load_numbers(distributed.all_sum(hist.as_numbers(), world, device))
    row["images_per_s"] = state.images_per_s
    row["epoch_time_s"] = epoch_s
    predictions = (top1[0].numpy(), data.test.y.to(torch.int16).numpy()) if top1 else None
    return row, hists, predictions


def _final_metrics(row: dict[str, Any]) -> dict[str, Any]:
    keep = ("train_loss", "train_acc", "val_loss", "val_acc", "val_top5", "test_loss", "test_acc", "test_top5")
    return {k: row[k] for k in keep if k in row}


def _epoch_line(row: dict[str, Any], epochs: int) -> str:
    val = f" | val acc {row['val_acc']:.4f}" if "val_acc" in row else ""
    return (f"epoch {row['epoch']}/{epochs} | train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}{val} | "
            f"test loss {row['test_loss']:.4f} acc {row['test_acc']:.4f} top5 {row['test_top5']:.4f} | "
            f"lr {row['lr']:.4g} | {row['images_per_s']:.0f} img/s | {row['epoch_time_s']:.1f} s")
