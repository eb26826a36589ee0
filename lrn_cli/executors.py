"""Where the runs of a sweep execute: here (`local`), as Ray tasks (`ray`), or as a SLURM job array
through submitit (`slurm`).

Every executor runs a run the same way: `lrn train --resume RUN_DIR` in a process of its own,
writing into the run directory. So checkpoints, resume, metrics and the summary do not depend on
the executor, and neither does the sweep's resume: completed runs are skipped, and an interrupted
one continues from its checkpoint wherever it lands next.

An executor is a small object: `threads_for(config)` (torch threads a run gets),
`start(run_dir, config) -> handle`, `done(handles) -> finished handles`,
`outcome(handle) -> Outcome`, `stop(handle)` (ask the run to checkpoint and stop) and `close()`.
`drive()` runs a list of runs through one, with the live display and the signal handling. Ray and
submitit are optional extras, imported only when asked for.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import runs
from .errors import UserError
from .perf import usable_cores
from .runs import Status

LOG = "log.txt"  # each run's `lrn train` output, appended by every attempt
EXECUTORS = ("local", "ray", "slurm")
BUSY = "busy"  # a run not started: another live process holds its directory


@dataclass
class Outcome:
    """How a run's process ended, as far as the executor knows."""

    returncode: int | None    # None: no exit code (the task or job was lost, cancelled, or never started)
    error: str | None = None  # what went wrong outside `lrn train` (a node, the job, the storage)
    log: str | None = None    # where to look
    busy: bool = False        # not run: another live process holds the run directory


@dataclass
class Resources:
    """What one run asks of a cluster, from the flags, the spec's `cluster:` section or the config."""

    cpus: int | None = None       # None: the run's train.threads, or 2 when that is 0
    gpus: float | None = None     # None: 1 when the run's train.device is cuda, else 0
    partition: str | None = None
    time_min: int = 60            # SLURM time limit per job; a run that outlives it is requeued and resumes
    mem_gb: float | None = None
    sbatch: dict[str, Any] = field(default_factory=dict)  # extra `#SBATCH --key=value` lines

    def cpus_for(self, config: dict[str, Any]) -> int:
        return self.cpus or config["train"]["threads"] or 2

    def gpus_for(self, config: dict[str, Any]) -> float:
        return self.gpus if self.gpus is not None else float(config["train"]["device"] == "cuda")


def train_command(run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "lrn_cli", "train", "--resume", str(run_dir)]


def end_with_parent() -> None:
    """In a child process before exec: be killed when the parent dies, even by kill -9 (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _child_setup(die_with_parent: bool) -> Callable[[], None]:
    def setup() -> None:  # runs in the child, before exec
        # SLURM signals every process of a job ahead of its time limit (submitit's --signal=USR2):
        # the job's wrapper answers it (checkpoint, requeue); the default action would kill the run
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)
        if die_with_parent:  # a kill -9 of the sweep (or the Ray worker) takes its runs along
            end_with_parent()
    return setup


def spawn(run_dir: Path, die_with_parent: bool = True) -> tuple[subprocess.Popen, Any]:
    """Start `lrn train --resume run_dir`, its output appended to run_dir/log.txt -> (process, log file)."""
    log = open(run_dir / LOG, "a")
    proc = subprocess.Popen(train_command(run_dir), stdout=log, stderr=subprocess.STDOUT,
                            preexec_fn=_child_setup(die_with_parent), env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return proc, log


def wait_free(run_dir: Path, timeout: float = 120.0) -> bool:
    """Wait until no process holds the run directory (a stopped run writing its checkpoint)."""
    deadline = time.time() + timeout
    while runs.is_locked(run_dir):
        if time.time() > deadline:
            return False
        time.sleep(0.1)
    return True


def _interruptible() -> None:
    """Make SIGINT raise KeyboardInterrupt in this process's main thread, as Ray's cancel needs.

    Ray cancels a running task with `_thread.interrupt_main()`, which does nothing where SIGINT is
    ignored; and a process started in the background by a shell without job control (`cmd &` in a
    script, nohup, many CI runners) inherits SIGINT ignored, as do its children: the sweep, Ray's
    workers. Their cancels were then lost and the runs trained on to the end."""
    if threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, signal.SIG_DFL, None):
        signal.signal(signal.SIGINT, signal.default_int_handler)


class TrainJob:
    """The body of a Ray task or a SLURM job: run `lrn train --resume RUN_DIR` as a child process
    and wait for it -> {"returncode", "host", "error"}.

    A KeyboardInterrupt (Ray's cancel, submitit's local cancel), or this process losing its parent
    (the raylet of a killed local Ray instance), asks the run to checkpoint and stop.
    `checkpoint()` is submitit's hook for a job about to time out or be preempted: the run
    checkpoints and stops, and submitit requeues the same call, which resumes it.
    """

    def __init__(self, die_with_parent: bool = True) -> None:
        self.die_with_parent = die_with_parent
        self.proc: subprocess.Popen | None = None

    def __call__(self, run_dir: str) -> dict[str, Any]:
        host = socket.gethostname()
        path = Path(run_dir)
        if not (path / runs.CONFIG).exists():
            return {"returncode": None, "host": host,
                    "error": f"{path} is not visible on {host}; put the sweep on storage that every node mounts"}
        if runs.is_locked(path):
            return {"returncode": None, "host": host, "busy": True,
                    "error": "another process (a job of an earlier sweep?) is running it"}
        parent = os.getppid()
        _interruptible()
        self.proc, log = spawn(path, self.die_with_parent)
        try:
            while True:
                try:
                    return {"returncode": self.proc.wait(timeout=0.2), "host": host}
                except subprocess.TimeoutExpired:
                    pass
                if os.getppid() != parent:  # orphaned: the Ray node or the job step went away
                    return {"returncode": self._stop(), "host": host, "error": "its worker lost its parent"}
        except KeyboardInterrupt:
            return {"returncode": self._stop(), "host": host}
        finally:
            log.close()

    def _stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)  # `lrn train` finishes its step, checkpoints and exits
        try:
            return self.proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def checkpoint(self, run_dir: str) -> Any:
        import submitit

        self._stop()
        return submitit.helpers.DelayedSubmission(TrainJob(self.die_with_parent), run_dir)


# ----------------------------------------------------------------------------- local

class Local:
    """Runs as child processes of this one, at most `jobs` at a time."""

    name = "local"
    batch = False
    poll_s = 0.05  # child processes: cheap to poll

    def __init__(self, jobs: int) -> None:
        self.window = jobs
        self.threads = max(1, usable_cores() // jobs)  # the cores shared out

    def threads_for(self, config: dict[str, Any]) -> int:
        return self.threads

    def start(self, run_dir: Path, config: dict[str, Any]) -> Any:
        return spawn(run_dir)

    def done(self, handles: list[Any]) -> list[Any]:
        return [h for h in handles if h[0].poll() is not None]

    def outcome(self, handle: Any) -> Outcome:
        proc, log = handle
        log.close()
        return Outcome(proc.returncode, log=log.name)

    def stop(self, handle: Any) -> None:
        handle[0].send_signal(signal.SIGTERM)

    def close(self) -> None:
        pass


# ----------------------------------------------------------------------------- Ray

def _probe(path: str, token: str) -> tuple[str, bool]:
    """Runs on one Ray node: can it read the token that the driver wrote into the sweep directory?"""
    try:
        return socket.gethostname(), Path(path).read_text() == token
    except OSError:
        return socket.gethostname(), False


class Ray:
    """Runs as Ray tasks with a CPU/GPU request each; Ray's scheduler places them on the cluster.

    address: "auto" connects to the running cluster (RAY_ADDRESS, or one started with `ray start`)
    and starts a local one if there is none; "local" always starts a local one; anything else
    (host:port, ray://host:10001) must connect.
    """

    name = "ray"
    batch = False
    poll_s = 0.5

    def __init__(self, sweep_dir: Path, address: str, resources: Resources, jobs: int | None, quiet: bool) -> None:
        try:
            import ray
        except ImportError:
            raise UserError('--executor ray needs Ray; install it with: pip install "lrn-runner[ray]"') from None
        self.ray = ray
        self.resources = resources
        self.window = jobs or 1_000_000  # Ray's scheduler queues what does not fit
        self.started_local = False
        quiet_init: dict[str, Any] = {"logging_level": "ERROR", "log_to_driver": False}
        local: dict[str, Any] = {"include_dashboard": False, "object_store_memory": 128 * 2**20}
        if address in ("auto", "local"):
            try:
                if address == "local":
                    raise ConnectionError
                ray.init(address="auto", **quiet_init)
            except ConnectionError:
                ray.init(address="local", **quiet_init, **local)
                self.started_local = True
        else:
            try:
                ray.init(address=address, **quiet_init)
            except (ConnectionError, ValueError, RuntimeError) as e:
                raise UserError(f"--ray-address {address}: cannot connect ({str(e).splitlines()[0]}); "
                                "give the head's address, or leave it at auto") from None
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        cpus = int(ray.cluster_resources().get("CPU", 0))
        if not quiet:
            what = "started a local Ray instance" if self.started_local else f"connected to Ray at {address}"
            print(f"{what}: {len(nodes)} node(s), {cpus} CPUs", file=sys.stderr, flush=True)
        self.check_shared(sweep_dir, nodes)
        self.task = ray.remote(max_retries=3, retry_exceptions=False)(_ray_run)

    def check_shared(self, sweep_dir: Path, nodes: list[dict[str, Any]]) -> None:
        """Every node must see the sweep directory: write a token there and read it back on each node."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        token = secrets.token_hex(8)
        probe = sweep_dir / f".probe-{token}"
        runs.write_text(probe, token)
        try:
            probe_task = self.ray.remote(num_cpus=0, max_retries=0)(_probe)
            refs = [probe_task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                    .remote(str(probe.resolve()), token) for n in nodes]
            blind = []
            for node, ref in zip(nodes, refs):
                try:
                    host, seen = self.ray.get(ref, timeout=120)
                except Exception as e:  # the node cannot run lrn's code, or did not answer
                    raise UserError(f"Ray node {node.get('NodeManagerAddress')}: cannot run lrn there "
                                    f"({str(e).strip().splitlines()[-1][:200]}); install lrn on every node") from None
                if not seen:
                    blind.append(host)
            if blind:
                raise UserError(f"{sweep_dir.resolve()}: not visible from Ray node(s) {', '.join(blind)}; "
                                "put --out on storage that every node mounts at the same path")
        finally:
            probe.unlink(missing_ok=True)

    def threads_for(self, config: dict[str, Any]) -> int:
        return self.resources.cpus_for(config)

    def start(self, run_dir: Path, config: dict[str, Any]) -> Any:
        task = self.task.options(num_cpus=self.resources.cpus_for(config), num_gpus=self.resources.gpus_for(config))
        return task.remote(str(run_dir.resolve()))

    def done(self, handles: list[Any]) -> list[Any]:
        if not handles:
            return []
        ready, _ = self.ray.wait(handles, num_returns=len(handles), timeout=0, fetch_local=True)
        return ready

    def outcome(self, handle: Any) -> Outcome:
        try:
            result = self.ray.get(handle)
        except self.ray.exceptions.TaskCancelledError:
            return Outcome(None, "stopped")
        except self.ray.exceptions.RayError as e:  # the worker or its node died, more often than Ray retries
            return Outcome(None, f"Ray: {str(e).strip().splitlines()[0][:300]}")
        return _outcome_of(result)

    def stop(self, handle: Any) -> None:
        self.ray.cancel(handle)  # a KeyboardInterrupt in the task: the run checkpoints and exits

    def close(self) -> None:
        self.ray.shutdown()  # a local instance that this process started goes with it


def _ray_run(run_dir: str) -> dict[str, Any]:
    return TrainJob(die_with_parent=True)(run_dir)


def _outcome_of(result: dict[str, Any]) -> Outcome:
    return Outcome(result["returncode"], result.get("error"), busy=result.get("busy", False))


# ----------------------------------------------------------------------------- SLURM

class Slurm:
    """Runs as one SLURM job array through submitit; `cluster="local"` runs the same jobs through
    submitit's local executor instead (no queue: to try a spec, and for the tests).

    Each job runs `lrn train --resume` under a `TrainJob`, which submitit requeues when the job
    times out or is preempted, so a run longer than the time limit resumes in its next job. The
    job's own log is under SWEEP/.submitit/JOBID/; the run's output is in its log.txt.
    """

    name = "slurm"
    poll_s = 0.5  # each poll may ask SLURM (submitit caches sacct for the whole array)

    def __init__(self, sweep_dir: Path, resources: Resources, config: dict[str, Any], jobs: int | None,
                 cluster: str = "slurm") -> None:
        try:
            import submitit
        except ImportError:
            raise UserError('--executor slurm needs submitit; install it with: '
                            'pip install "lrn-runner[slurm]"') from None
        if cluster == "slurm" and shutil.which("sbatch") is None:
            raise UserError("--executor slurm: no sbatch on this machine; run lrn ablate on a SLURM login node "
                            "(or try the array here with --slurm-cluster local)")
        self.cluster = cluster
        self.batch = cluster == "slurm"  # one array, throttled by SLURM; locally a rolling window
        self.window = 1_000_000 if self.batch else (jobs or 1)
        self.folder = sweep_dir.resolve() / ".submitit"
        ex = submitit.AutoExecutor(folder=self.folder / "%j", cluster=cluster,
                                   slurm_max_num_timeout=20, local_max_num_timeout=20)
        gpus = resources.gpus_for(config)
        if gpus != int(gpus):
            raise UserError(f"--gpus-per-run {gpus}: SLURM takes whole GPUs per job")
        self.cpus = resources.cpus_for(config)  # one request for the whole array
        params: dict[str, Any] = {"name": f"lrn-{sweep_dir.name}", "timeout_min": resources.time_min,
                                  "cpus_per_task": self.cpus, "gpus_per_node": int(gpus),
                                  "tasks_per_node": 1, "nodes": 1}
        if cluster == "slurm":
            params.update(slurm_additional_parameters=dict(resources.sbatch))
            if resources.partition:
                params["slurm_partition"] = resources.partition
            if resources.mem_gb:
                params["mem_gb"] = resources.mem_gb
            if jobs:
                params["slurm_array_parallelism"] = jobs
        ex.update_parameters(**params)
        self.executor = ex

    def threads_for(self, config: dict[str, Any]) -> int:
        return self.cpus

    def start(self, run_dir: Path, config: dict[str, Any]) -> Any:
        return self.executor.submit(TrainJob(die_with_parent=False), str(run_dir.resolve()))

    def start_batch(self, run_dirs: list[Path]) -> list[Any]:
        with self.executor.batch():
            jobs = [self.executor.submit(TrainJob(die_with_parent=False), str(d.resolve())) for d in run_dirs]
        return jobs

    def done(self, handles: list[Any]) -> list[Any]:
        return [j for j in handles if j.done()]

    def outcome(self, job: Any) -> Outcome:
        log = str(job.paths.stderr)
        try:
            return _outcome_of(job.result())
        except Exception as e:  # the job failed outside `lrn train`: lost node, time limit, bad environment
            return Outcome(None, f"job {job.job_id}: {str(e).strip().splitlines()[0][:300]}", log=log)

    def stop(self, job: Any) -> None:
        job.cancel(check=False)  # SLURM: SIGTERM to every process of the job; locally: SIGINT

    def close(self) -> None:
        pass


# ----------------------------------------------------------------------------- driving

def settle(run_dir: Path, outcome: Outcome, stopping: bool) -> tuple[str, str]:
    """The run's final status once its process ended: what it wrote, or "failed" (with the error and
    the log) when it died without saying so -> (status, the log to look at)."""
    log = outcome.log or str(run_dir / LOG)
    if outcome.busy:
        return BUSY, log
    wait_free(run_dir)  # a stopped run may still be writing its checkpoint
    summary = runs.read_json(run_dir / runs.SUMMARY) or {}
    status = summary.get("status", Status.PENDING)
    if status in (Status.RUNNING, Status.PENDING) and outcome.returncode != 0:
        if stopping and outcome.returncode is None:
            return Status.INTERRUPTED, log  # stopped before it could say so; it resumes from its last checkpoint
        error = outcome.error or f"exit code {outcome.returncode}"
        runs.write_json(run_dir / runs.SUMMARY, {**summary, "status": Status.FAILED, "error": error, "log": log})
    return runs.run_status(run_dir), summary.get("log", log)


def drive(ex: Any, sweep_dir: Path, todo: list[Any], display: Any) -> tuple[dict[str, str], str | None]:
    """Run `todo` (sweep Runs, their run directories prepared) through executor `ex`
    -> ({run_id: final status}, the name of the signal that stopped the sweep, if one did)."""
    pending = list(todo)
    active: dict[str, tuple[Any, float, Any]] = {}  # run_id -> (handle, start time, run)
    final: dict[str, str] = {}
    stop = {"signum": None, "sent": False}

    def on_signal(signum: int, frame: Any) -> None:
        stop["signum"] = signum

    def lanes() -> int:  # runs in flight, for the ETA
        return max(1, min(ex.window, len(active) + len(pending)))

    def started(run: Any, handle: Any) -> None:
        active[run.run_id] = (handle, time.time(), run)
        display.running = len(active)
        display.update(f"started {run.dir} ({run.label}, seed {run.seed})", lanes())

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if ex.batch and pending:
            for run, handle in zip(pending, ex.start_batch([sweep_dir / r.dir for r in pending])):
                started(run, handle)
            pending = []
        while active or (pending and stop["signum"] is None):  # once stopped, start nothing more
            while pending and len(active) < ex.window and stop["signum"] is None:
                run = pending.pop(0)
                started(run, ex.start(sweep_dir / run.dir, run.config))
            if stop["signum"] is not None and not stop["sent"]:
                stop["sent"] = True
                for handle, _, _ in active.values():
                    ex.stop(handle)  # each run saves a checkpoint and exits
            time.sleep(ex.poll_s)
            by_handle = {h: run_id for run_id, (h, _, _) in active.items()}
            for handle in ex.done(list(by_handle)):
                run_id = by_handle[handle]
                _, t0, run = active.pop(run_id)
                outcome = ex.outcome(handle)
                status, log = settle(sweep_dir / run.dir, outcome, stop["signum"] is not None)
                final[run_id] = status
                if status == Status.COMPLETED:
                    display.done += 1
                    display.durations.append(time.time() - t0)
                elif status not in (Status.INTERRUPTED, BUSY):
                    display.failed += 1
                display.running = len(active)
                where = {Status.COMPLETED: "", Status.INTERRUPTED: "",
                         BUSY: f": {outcome.error}; it is left to that process"}.get(status, f"; see {log}")
                display.update(f"{run.dir} {status}{where}", lanes())
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        display.close()
        ex.close()
    signum = stop["signum"]
    return final, signal.Signals(signum).name if signum is not None else None
