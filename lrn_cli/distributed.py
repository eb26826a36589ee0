"""One run on several processes: DistributedDataParallel through torch's own launcher machinery.

`lrn train --nproc N` starts N workers on this machine with torch's elastic launcher (what
torchrun runs); `torchrun ... -m lrn_cli train ...` starts them itself, on one node or many. Either
way each worker finds its place in the world in the environment the launcher set (RANK,
WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE) and joins the process group: gloo on the CPU, nccl on
GPUs (one GPU per process, the LOCAL_RANK-th of the node).

Several nodes: run the same torchrun command on each, with its usual rendezvous flags, e.g.

    torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \
        --rdzv-id RUN -m lrn_cli train --config configs/cifar10_full.yaml --out /shared/runs --name RUN

Under torchrun the world is torchrun's and train.nproc is not used. Rank 0 creates, locks and
writes the run directory and tells the others its path; every rank reads the checkpoint to
resume, so --out must be a filesystem that every node sees. torchrun forwards SIGTERM and SIGINT
to its workers, which stop together after a step as under `lrn train --nproc`.

Plain functions only; every one of them is a no-op (no collective) in a world of one process,
so that a single-process run is the world-size-1 case of the same training loop.
"""
from __future__ import annotations

import logging
import os
import signal
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from .perf import usable_cores

# `lrn train --nproc N` holds the run directory's lock in the parent for the whole run; it names
# the directory here so that its workers (whose rank 0 would otherwise take the lock) do not try
LOCKED_RUN_DIR = "LRN_LOCKED_RUN_DIR"
# seconds the launcher gives its workers to stop after it forwarded them SIGTERM or SIGINT, before
# SIGKILL: they finish the step (or the epoch's evaluation) and rank 0 writes the checkpoint
GRACE_S = 120


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0  # on this node
    local_size: int = 1
    joined: bool = False  # started by torchrun or `lrn train --nproc`: WORLD_SIZE is in the environment


class WorkerFailed(Exception):
    """A worker of `lrn train --nproc` ended with an error: the first one to fail, not the others
    that lost their peer after it."""

    def __init__(self, rank: int, error: str, traceback: str | None) -> None:
        super().__init__(f"rank {rank} failed: {error}" + (f"\n\n{traceback}" if traceback else ""))
        self.rank, self.error, self.traceback = rank, error, traceback


def world() -> World:
    """This process's place, from the environment torchrun and the elastic launcher set."""
    env = os.environ
    if "WORLD_SIZE" not in env:
        return World()
    size = int(env["WORLD_SIZE"])
    return World(int(env.get("RANK", 0)), size, int(env.get("LOCAL_RANK", 0)),
                 int(env.get("LOCAL_WORLD_SIZE", size)), joined=True)


def threads(configured: int, w: World) -> int:
    """torch threads for one process: train.threads if set; else, in a world of several, the
    node's cores shared out (0: torch's default, which counts all cores for every process)."""
    if configured or w.size == 1:
        return configured
    return max(1, usable_cores() // w.local_size)


def device_of(device: torch.device, w: World) -> torch.device:
    """A process's own GPU: the LOCAL_RANK-th of its node."""
    if device.type == "cuda" and w.size > 1:
        return torch.device("cuda", w.local_rank)
    return device


def init(w: World, device: torch.device) -> None:
    """Join the process group (nothing to join in a world of one)."""
    if w.size == 1:
        return
    import torch.distributed as dist

    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def finish(w: World) -> None:
    """Leave together: no rank exits (and so tears down a peer's connection) while rank 0 writes."""
    if w.size == 1:
        return
    import torch.distributed as dist

    dist.barrier()
    dist.destroy_process_group()


def broadcast(obj: Any, w: World) -> Any:
    """Rank 0's `obj` on every rank (a picklable object)."""
    if w.size == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_sum(values: list[float], w: World, device: torch.device) -> list[float]:
    """The sums over all ranks of a few numbers (float64, exact for counts); the values themselves
    in a world of one."""
    if w.size == 1:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def wrap(model: nn.Module, w: World, device: torch.device) -> nn.Module:
    """The module to train with: DistributedDataParallel around `model` (which it shares the
    parameters with) in a world of several, `model` itself in a world of one. DDP averages the
    gradients over ranks, so equal shards of the global batch give the global batch's gradient.
    BatchNorm keeps per-process batch statistics, DDP's default, as torchvision's reference
    recipes train without --sync-bn."""
    if w.size == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def sync_buffers(model: nn.Module, w: World) -> None:
    """Rank 0's buffers (BatchNorm's running statistics) on every rank: each rank updated its own
    in its last forward pass, and the ranks must evaluate one model, the one rank 0 saves."""
    if w.size == 1:
        return
    import torch.distributed as dist

    for buf in model.buffers():
        dist.broadcast(buf, src=0)


def shard(n: int, w: World, block: int = 1) -> slice:
    """This rank's contiguous part of n items, in whole blocks of `block` items (the last one may
    be short): the blocks a single process takes, dealt out in runs of equal length."""
    blocks = -(-n // block)  # ceil
    per_rank = -(-blocks // w.size) * block
    return slice(min(n, w.rank * per_rank), min(n, (w.rank + 1) * per_rank))


def lock_held_by_parent(run_dir: Path) -> bool:
    """Whether `lrn train --nproc` (this worker's parent) holds `run_dir`'s lock."""
    return os.environ.get(LOCKED_RUN_DIR) == str(run_dir)


# ----------------------------------------------------------------------------- launching

def launch(nproc: int, entrypoint: Callable[..., Any], args: tuple[Any, ...]) -> str | None:
    """Run `entrypoint(*args)` in `nproc` worker processes of this machine through torch's elastic
    launcher (a c10d rendezvous on a free localhost port, no restarts) and wait for them.

    -> None when every worker returned; the signal's name when this process got SIGTERM or SIGINT
    (the launcher forwarded it to the workers, which stop together after the step and exit).
    Raises WorkerFailed when a worker raised or died (the launcher then stopped the others)."""
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
    saved = {s: signal.getsignal(s) for s in handled}  # the launcher installs its own and leaves them
    try:
        with tempfile.TemporaryDirectory(prefix="lrn-launch-") as logs, _quiet_launcher():
            config = LaunchConfig(
                min_nodes=1, max_nodes=1, nproc_per_node=nproc, rdzv_backend="c10d",
                rdzv_endpoint="localhost:0", run_id=f"lrn-{os.getpid()}", max_restarts=0,
                monitor_interval=0.1, start_method="spawn", logs_specs=DefaultLogsSpecs(log_dir=logs),
                shutdown_timeout=int(os.environ.get("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", GRACE_S)))
            try:
                elastic_launch(config, entrypoint)(*args)
                return None
            except SignalException as e:
                return signal.Signals(e.sigval).name
            except ChildFailedError as e:
                rank, failure = e.get_first_failure()
                raise WorkerFailed(rank, *_describe(failure)) from None
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


def _describe(failure: Any) -> tuple[str, str | None]:
    """-> (one line, traceback or None) of a launcher's ProcessFailure: the exception a worker
    raised (recorded in its error file), the signal that killed it, or its exit code."""
    if isinstance(failure.message, dict):  # the error file's record of an exception
        info = failure.message.get("extraInfo") or {}
        return str(failure.message.get("message")), info.get("py_callstack")
    if failure.exitcode < 0:
        return str(failure.message), None  # "Signal 9 (SIGKILL) received by PID ..."
    return f"exited with code {failure.exitcode}", None


@contextmanager
def _quiet_launcher() -> Iterator[None]:
    """The launcher logs each worker it starts and stops and each failure with its traceback;
    lrn reports those itself, once. LOGLEVEL=INFO (torch's own switch) shows the launcher's account."""
    if "LOGLEVEL" in os.environ:
        yield
        return
    prefixes = ("torch.distributed.elastic", "torch.distributed.launcher", "torch.multiprocessing")
    loggers = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
               if name.startswith(prefixes)]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
