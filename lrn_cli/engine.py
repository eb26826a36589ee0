"""Training and evaluation: `train()` runs one config end to end into a run directory.

Read top to bottom: open the run (validate, load data, build the model: every user error is found
here, before anything is written), then the loop (per epoch: shuffle, augment, step; evaluate;
log; checkpoint). Every random draw of a step comes from a seed derived from (seed, epoch, step),
so a run resumed from any checkpoint, even one taken mid-epoch, repeats an uninterrupted run
bit for bit on the CPU.

One run can train on several processes (`train.nproc`, or torchrun): the same loop, where every
rank draws the whole global batch as a single process does and keeps its own contiguous share,
DistributedDataParallel averages the gradients, one small all-reduce per step makes the ranks
agree on the loss, the divergence check and when to stop, and rank 0 alone writes. With one
process none of that calls a collective (see `distributed.py`).
"""
from __future__ import annotations

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

from . import distributed, runs
from .config import AugmentConfig, Config, TrainConfig, load_config
from .data import Data, DataWarning, Split, load_data
from .data.augment import crop_flip, normalize
from .errors import UserError
from .models import build_model, count_params
from .perf import keep_freed_memory


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
    """The learning-rate schedule: the multiplier of train.lr at optimizer step `step` of `total`."""
    t = step / max(total, 1)
    warm = 0.25 if cfg.schedule == "onecycle" and cfg.warmup == 0 else cfg.warmup
    if t < warm:
        rise = t / warm
        return 0.5 - 0.5 * math.cos(math.pi * rise) if cfg.schedule == "onecycle" else rise
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "multistep":
        return cfg.gamma ** sum(t >= m for m in cfg.milestones)
    # cosine and onecycle: half a cosine from 1 down to 0 over the rest of training
    rest = (t - warm) / (1 - warm)
    return 0.5 + 0.5 * math.cos(math.pi * min(rest, 1.0))


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Weight decay on weights only (conv and fc kernels), not on biases or norm scales."""
    decay = [p for p in model.parameters() if p.dim() > 1]
    rest = [p for p in model.parameters() if p.dim() <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
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
             world: distributed.World = distributed.World()) -> dict[str, float]:
    """Cross-entropy loss, top-1 and top-5 accuracy (fractions) over a whole split. In a world of
    several processes each evaluates a contiguous run of the batches one process would, and the
    sums are added up: the same numbers (up to the order of the loss sum), sooner."""
    model.eval()
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
    loss, correct1, correct5 = distributed.all_sum([loss, correct1, correct5], world, device)
    n = max(len(split), 1)
    return {"loss": loss / n, "acc": correct1 / n, "top5": correct5 / n}


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
    if summary and summary.get("status") == "completed":
        Reporter(quiet or world.rank > 0).line(f"{run_dir}: already completed, nothing to do")
        return RunResult(run_dir, summary)

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
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = build_model(cfg.model, data.channels, data.image_size, num_classes)

    if run_dir is None and world.rank == 0:
        run_dir = runs.new_run_dir(out, name or runs.default_run_name(cfg.name))
    distributed.init(world, device)  # nothing to join outside a world of several processes
    run_dir = distributed.broadcast(run_dir, world)  # rank 0's, for every rank
    take_lock = world.rank == 0 and not distributed.lock_held_by_parent(run_dir)
    with runs.locked(run_dir, "this run directory") if take_lock else nullcontext():
        if world.rank == 0 and not (run_dir / runs.CONFIG).exists():
            runs.write_text(run_dir / runs.CONFIG, cfg.to_yaml())
        if processes > 1 and not world.joined:  # start the workers (each loads its own data and model)
            del data, model
            return _launch(cfg, run_dir, processes, quiet)
        result = _fit(cfg, run_dir, data, model.to(device), device, summary, Reporter(quiet or world.rank > 0), world)
    distributed.finish(world)
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
    summary = after or {"name": cfg.name, "config_hash": cfg.hash(), "seed": cfg.seed, "epochs": 0}
    ended = summary.get("status") if after != before else None  # what rank 0 wrote, if it did
    if failure and ended in (None, "running", "failed"):
        summary.update(status="failed", error=failure.error)
        runs.write_json(run_dir / runs.SUMMARY, summary)
        raise failure
    if signame and ended in (None, "running"):
        summary.update(status="interrupted", signal=signame)
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
    if result.summary["status"] == "interrupted":
        # leave at once: the launcher is stopping the workers, and a worker that returns waits
        # for the launcher to collect its return value, which it no longer does
        raise SystemExit(143 if result.summary.get("signal") == "SIGTERM" else 130)


def _locate(config: Any, overrides: Any, out: Any, name: str | None, resume: Any) -> tuple[Path | None, Config]:
    """-> (existing run directory or None, config)."""
    if resume is None or resume is False:
        return None, load_config(config, overrides)
    if resume is True:
        if not name:
            raise UserError("--resume without a run directory needs --name (the run to continue in --out)")
        run_dir = Path(out) / name
        cfg = load_config(config, overrides)
        if (run_dir / runs.CONFIG).exists():
            stored = load_config(run_dir / runs.CONFIG)
            if stored.hash() != cfg.hash():
                raise UserError(f"{run_dir}: holds a run of a different config; pick another --name "
                                "or --out, or resume it with `lrn train --resume {run_dir}`")
        if run_dir.exists():
            return run_dir, cfg
        return None, cfg
    run_dir = Path(resume)
    if config is not None or overrides:
        raise UserError("--resume RUN_DIR takes the config stored in RUN_DIR; drop --config and --set")
    if not (run_dir / runs.CONFIG).exists():
        raise UserError(f"{run_dir}: not a run directory (no {runs.CONFIG}); give the folder `lrn train` made")
    return run_dir, load_config(run_dir / runs.CONFIG)


def _fit(cfg: Config, run_dir: Path, data: Data, model: nn.Module, device: torch.device,
         old_summary: dict[str, Any] | None, report: Reporter,
         world: distributed.World) -> RunResult:
    from torch.utils.tensorboard import SummaryWriter

    tc = cfg.train
    lead = world.rank == 0  # the one process that writes: checkpoint, metrics, summary, events
    bs = min(tc.batch_size, len(data.train))  # the global batch
    mine = distributed.shard(bs, world)  # this process's share of each batch
    steps_per_epoch = len(data.train) // bs
    total_steps = steps_per_epoch * tc.epochs
    optimizer = make_optimizer(model, tc)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total_steps, tc))
    criterion = nn.CrossEntropyLoss(label_smoothing=tc.label_smoothing)
    mean, std = data.mean.to(device), data.std.to(device)
    gen = torch.Generator()

    # state that a checkpoint carries (a fresh run starts from zeros)
    epoch, step = 0, 0
    acc = {"loss": 0.0, "correct": 0, "seen": 0}  # running sums of the current epoch (all ranks)
    clock = {"train_s": 0.0, "train_images": 0, "wall_s": 0.0}
    ckpt_path = run_dir / runs.CHECKPOINT
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        epoch, step, acc, clock = ckpt["epoch"], ckpt["step"], ckpt["acc"], ckpt["clock"]
        report.line(f"{run_dir}: resuming at epoch {epoch + 1}, step {step}/{steps_per_epoch}")
    net = distributed.wrap(model, world, device)  # what the step calls; `model` is evaluated and saved
    history = [m for m in runs.read_jsonl(run_dir / runs.METRICS) if m["epoch"] <= epoch]
    global_step = epoch * steps_per_epoch + step
    writer = None
    if lead:
        runs.write_jsonl(run_dir / runs.METRICS, history)  # drop epochs logged after the checkpoint
        # events after the checkpoint's step were logged by the lost part of the run: hide them
        writer = SummaryWriter(str(run_dir), purge_step=global_step + 1 if global_step else None)
        if global_step == 0:
            writer.add_text("config", "```yaml\n" + cfg.to_yaml() + "\n```", 0)

    summary: dict[str, Any] = {
        "status": "running", "name": cfg.name, "config_hash": cfg.hash(), "seed": cfg.seed,
        "epochs": epoch, "params": count_params(model), "data": data.info,
        "env": runs.environment(torch.get_num_threads(), str(device), world.size),
    }
    if history:
        summary.update(_final_metrics(history[-1]))

    def save_summary(status: str, **extra: Any) -> None:
        summary.update(status=status, epochs=epoch, wall_time_s=round(clock["wall_s"], 3),
                       images_per_s=round(clock["train_images"] / max(clock["train_s"], 1e-9), 2), **extra)
        if lead:
            runs.write_json(run_dir / runs.SUMMARY, summary)

    def save_checkpoint() -> None:
        if not lead:
            return
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "epoch": epoch, "step": step, "acc": acc,
                 "clock": clock, "config_hash": cfg.hash()}
        runs.atomic_write(ckpt_path, lambda f: torch.save(state, f), mode="wb")

    save_summary("running")
    procs = f", {world.size} processes" if world.size > 1 else ""
    report.line(f"{run_dir}: {cfg.name}, {summary['params']:,} parameters, {len(data.train)} train / "
                f"{len(data.val) if data.val else 0} val / {len(data.test)} test images, {device}{procs}")
    segment_start = time.perf_counter()
    wall_base = clock["wall_s"]
    try:
        with StopSignals(second_interrupts=world.size == 1) as stop:
            while epoch < tc.epochs:
                net.train()
                perm = torch.randperm(len(data.train), generator=gen.manual_seed(step_seed(cfg.seed, epoch, -1)))
                report.start_epoch(epoch + 1, tc.epochs, steps_per_epoch, step)
                epoch_start = time.perf_counter()
                halt = None  # the signal that all ranks stop for
                while step < steps_per_epoch:
                    t0 = time.perf_counter()
                    seed = step_seed(cfg.seed, epoch, step)
                    torch.manual_seed(seed)  # augmentation, dropout and friends
                    idx = perm[step * bs:(step + 1) * bs]
                    xb = train_inputs(data, cfg.data.augment, idx, device, mean, std, mine)
                    yb = data.train.y[idx[mine]].to(device)
                    if world.rank:  # each rank drew the whole batch alike; its dropout masks are its own
                        torch.manual_seed(seed + world.rank * RANK_SEED_STRIDE)
                    logits = net(xb)
                    loss = criterion(logits, yb)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    scheduler.step()
                    # one small all-reduce: the global batch's loss and accuracy, and whether any
                    # rank was signalled, so that every rank takes the same decisions below
                    loss_sum, correct, seen, *flags = distributed.all_sum(
                        [loss.item() * len(yb), int((logits.argmax(1) == yb).sum()), len(yb), *stop.flags()],
                        world, device)
                    if not math.isfinite(loss_sum):
                        raise Diverged(f"loss became {loss_sum / seen} at epoch {epoch + 1}, step {step + 1}; "
                                       "lower train.lr or check the LRN parameters")
                    acc["loss"] += loss_sum
                    acc["correct"] += int(correct)
                    acc["seen"] += int(seen)
                    step += 1
                    clock["train_s"] += time.perf_counter() - t0
                    clock["train_images"] += int(seen)
                    report.step(acc["loss"] / acc["seen"], acc["correct"] / acc["seen"],
                                clock["train_images"] / clock["train_s"])
                    gs = global_step_of(epoch, step, steps_per_epoch)
                    if lead and gs % 50 == 0:
                        writer.add_scalar("train/loss_step", loss_sum / seen, gs)
                    halt = StopSignals.agreed(flags)
                    if halt:
                        break
                report.end_epoch()
                clock["wall_s"] = wall_base + time.perf_counter() - segment_start
                if halt and step < steps_per_epoch:
                    save_checkpoint()
                    save_summary("interrupted", signal=halt)
                    report.line(f"{run_dir}: interrupted at epoch {epoch + 1}, step {step}; "
                                f"continue with: lrn train --resume {run_dir}")
                    return RunResult(run_dir, summary)

                # end of an epoch: evaluate, log, checkpoint
                distributed.sync_buffers(model, world)
                row = _epoch_metrics(model, data, cfg, device, epoch, acc, optimizer, time.perf_counter() - epoch_start,
                                     clock, world)
                epoch, step = epoch + 1, 0
                acc = {"loss": 0.0, "correct": 0, "seen": 0}
                gs = epoch * steps_per_epoch
                if lead:
                    for key, value in row.items():
                        if key != "epoch":
                            writer.add_scalar(TB_TAGS.get(key, key.replace("_", "/", 1)), value, gs)
                    writer.flush()
                    runs.append_jsonl(run_dir / runs.METRICS, row)
                clock["wall_s"] = wall_base + time.perf_counter() - segment_start
                save_checkpoint()
                summary.update(_final_metrics(row))
                save_summary("running")
                report.line(_epoch_line(row, tc.epochs))
                halt = halt or StopSignals.agreed(distributed.all_sum(stop.flags(), world, device))
                if halt:
                    save_summary("interrupted", signal=halt)
                    report.line(f"{run_dir}: interrupted after epoch {epoch}; continue with: "
                                f"lrn train --resume {run_dir}")
                    return RunResult(run_dir, summary)
    except Diverged as e:
        report.end_epoch()
        clock["wall_s"] = wall_base + time.perf_counter() - segment_start
        save_summary("diverged", error=str(e))
        report.line(f"{run_dir}: diverged: {e}")
        return RunResult(run_dir, summary)
    except KeyboardInterrupt:
        report.end_epoch()
        clock["wall_s"] = wall_base + time.perf_counter() - segment_start
        save_summary("interrupted", signal="SIGINT")
        report.line(f"{run_dir}: interrupted; continue from the last checkpoint with: lrn train --resume {run_dir}")
        return RunResult(run_dir, summary)
    except BaseException as e:
        report.end_epoch()
        save_summary("failed", error=f"{e.__class__.__name__}: {e}")
        raise
    finally:
        if writer is not None:
            writer.close()
    clock["wall_s"] = wall_base + time.perf_counter() - segment_start
    save_summary("completed")
    report.line(f"{run_dir}: completed: test acc {summary['test_acc']:.4f}, top-5 {summary['test_top5']:.4f}, "
                f"loss {summary['test_loss']:.4f}, {summary['wall_time_s']:.0f} s, "
                f"{summary['images_per_s']:.0f} images/s")
    return RunResult(run_dir, summary)


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


def global_step_of(epoch: int, step: int, steps_per_epoch: int) -> int:
    return epoch * steps_per_epoch + step


def _epoch_metrics(model: nn.Module, data: Data, cfg: Config, device: torch.device, epoch: int,
                   acc: dict[str, Any], optimizer: torch.optim.Optimizer, epoch_s: float,
                   clock: dict[str, Any], world: distributed.World) -> dict[str, Any]:
    row: dict[str, Any] = {
        "epoch": epoch + 1,
        "lr": optimizer.param_groups[0]["lr"],
        "train_loss": acc["loss"] / max(acc["seen"], 1),
        "train_acc": acc["correct"] / max(acc["seen"], 1),
    }
    for name, split in (("val", data.val), ("test", data.test)):
        if split is not None:
            row.update({f"{name}_{k}": v for k, v in
                        evaluate(model, split, data, cfg.eval.batch_size, device, world).items()})
    row["images_per_s"] = clock["train_images"] / max(clock["train_s"], 1e-9)
    row["epoch_time_s"] = epoch_s
    return row


def _final_metrics(row: dict[str, Any]) -> dict[str, Any]:
    keep = ("train_loss", "train_acc", "val_loss", "val_acc", "val_top5", "test_loss", "test_acc", "test_top5")
    return {k: row[k] for k in keep if k in row}


def _epoch_line(row: dict[str, Any], epochs: int) -> str:
    val = f" | val acc {row['val_acc']:.4f}" if "val_acc" in row else ""
    return (f"epoch {row['epoch']}/{epochs} | train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}{val} | "
            f"test loss {row['test_loss']:.4f} acc {row['test_acc']:.4f} top5 {row['test_top5']:.4f} | "
            f"lr {row['lr']:.4g} | {row['images_per_s']:.0f} img/s | {row['epoch_time_s']:.1f} s")
