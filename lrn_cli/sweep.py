"""Ablation sweeps: expand a spec into runs, run them in parallel, resume, and report.

A spec (YAML):

    name: lrn_params
    base: ../configs/cifar10_full.yaml     # relative to the spec file
    set: {train.epochs: 10}                # overrides of the base, for every run
    seeds: [0, 1, 2]
    grid: {model.norm.size: [3, 5], model.norm.alpha: [1.0e-5, 1.0e-4]}   # cartesian product
    zip: {train.lr: [0.1, 0.05], train.batch_size: [256, 128]}             # stepped together
    random: {n: 8, seed: 0, space: {model.norm.beta: {uniform: [0.5, 1.0]},
                                   model.norm.alpha: {loguniform: [1.0e-6, 1.0e-2]},
                                   model.norm.size: {choice: [3, 5, 7]}}}
    variants: {no_lrn: {model.norm.type: none}}                            # named extra points
    baseline: no_lrn                                                       # for the p-values
    cluster: {cpus_per_run: 4, gpus_per_run: 1, partition: gpu, time_min: 120, mem_gb: 16,
              sbatch: {account: myproj}, ray_address: auto}    # for --executor ray|slurm only

The points are product(grid) x zip rows x random samples, plus the variants; each point runs
once per seed. A run's identity is the short hash of its resolved config, so points that
resolve to the same config run once, a finished run is never redone, and an interrupted one
resumes from its checkpoint; its directory is named after what it is, its seed and that hash
(`size3_alpha0.0001-s1-10bee16e25`, layout.py). Each run is its own `lrn train --resume RUN_DIR`
process, started here, as a Ray task or as a SLURM job (executors.py).
"""
from __future__ import annotations

import itertools
import json
import math
import random as _random
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from . import executors, layout, runs
from .config import Config, read_yaml, set_key, suggest, validate
from .errors import UserError
from .layout import SPEC_FILE, SWEEP_FILE
from .perf import usable_cores


# ----------------------------------------------------------------------------- the spec

class _Strict(BaseModel):
    # strict, as the config is: "1" is not a seed, nor is 2.0
    model_config = ConfigDict(extra="forbid", strict=True)


class RandomSpec(_Strict):
    n: int = Field(ge=1)
    seed: int = 0
    space: dict[str, dict[Literal["uniform", "loguniform", "choice"], list[Any]]]

    @field_validator("space")
    @classmethod
    def _space(cls, space: dict[str, dict[str, list[Any]]]) -> dict[str, dict[str, list[Any]]]:
        for key, dist in space.items():
            if len(dist) != 1:
                raise ValueError(f"{key}: give exactly one of uniform, loguniform, choice")
            (kind, args), = dist.items()
            if kind == "choice" and not args:
                raise ValueError(f"{key}: choice needs at least one value")
            if kind != "choice" and (len(args) != 2 or not all(isinstance(a, (int, float)) for a in args)
                                     or args[0] > args[1]):
                raise ValueError(f"{key}: {kind} takes [low, high] with low <= high")
            if kind == "loguniform" and args[0] <= 0:
                raise ValueError(f"{key}: loguniform needs low > 0")
        return space


class ClusterSpec(_Strict):
    """Where the runs go when the sweep leaves this machine (`--executor ray|slurm`); flags override."""

    cpus_per_run: int | None = Field(None, ge=1)
    gpus_per_run: float | None = Field(None, ge=0)
    partition: str | None = None
    time_min: int | None = Field(None, ge=1)
    mem_gb: float | None = Field(None, gt=0)
    sbatch: dict[str, str | int | float | bool] = {}
    ray_address: str | None = None


class Spec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    base: str
    set: dict[str, Any] = {}
    seeds: list[Annotated[int, Field(ge=0)]] = Field([0], min_length=1)
    grid: dict[str, list[Any]] = {}
    zip: dict[str, list[Any]] = {}
    random: RandomSpec | None = None
    variants: dict[str, dict[str, Any]] = {}
    baseline: str | None = None
    cluster: ClusterSpec = ClusterSpec()

    @field_validator("grid")
    @classmethod
    def _grid(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if not grid:
            raise ValueError("the grid is empty; give at least one key with a list of values, or drop grid")
        for key, values in grid.items():
            if not values:
                raise ValueError(f"'{key}' has no values; give at least one, or drop the key")
        return grid

    @field_validator("zip")
    @classmethod
    def _zip(cls, z: dict[str, list[Any]]) -> dict[str, list[Any]]:
        lengths = {len(v) for v in z.values()}
        if len(lengths) > 1:
            raise ValueError(f"lists stepped together must have one length, got {sorted(lengths)}")
        if lengths == {0}:
            raise ValueError("the lists are empty")
        return z

    @model_validator(mode="after")
    def _some_points(self) -> "Spec":
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds: each seed once")
        return self


@dataclass
class Run:
    """One run of the sweep: a point of the spec at one seed."""

    run_id: str            # hash of the resolved config (seed included): the run's identity
    group: str             # hash without the seed: the seeds of one config share it
    label: str             # the point, readably: "model.norm.size=3 model.norm.alpha=1e-4" or a variant
    point: dict[str, Any]  # the swept keys and their values
    variant: bool          # a named variant rather than a point of the grid
    seed: int
    config: dict[str, Any] = field(repr=False)
    dir: str = ""          # the run directory's name in the sweep (layout.run_name, or `legacy`)
    legacy: str | None = None  # the bare hash that named it before readable names (Config.legacy_hash)


def read_spec(path: str | Path) -> tuple[Spec, Path]:
    path = Path(path)
    raw = read_yaml(path)
    try:
        return Spec.model_validate(raw), path
    except ValidationError as e:
        msgs = []
        for err in e.errors(include_url=False):
            key = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                owner = {"random": RandomSpec, "cluster": ClusterSpec}.get(str(err["loc"][0]), Spec)
                valid = list(owner.model_fields if len(err["loc"]) > 1 else Spec.model_fields)
                msgs.append(f"unknown key '{key}'{suggest(str(err['loc'][-1]), valid)}; "
                            f"valid keys here: {', '.join(valid)}")
            else:
                msgs.append(f"{key or 'spec'}: {err['msg'].replace('Value error, ', '')}"
                            + ("" if err["type"] == "missing" else f" (got {err['input']!r})"))
        raise UserError(f"{path}: " + "; ".join(msgs)) from None


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def sample(spec: RandomSpec) -> list[dict[str, Any]]:
    """n points drawn from the space with the spec's own seed (the same every time)."""
    rng = _random.Random(spec.seed)
    points = []
    for _ in range(spec.n):
        point = {}
        for key, dist in spec.space.items():
            (kind, args), = dist.items()
            if kind == "choice":
                point[key] = rng.choice(args)
            elif kind == "uniform":
                point[key] = rng.uniform(*args)
            else:
                point[key] = math.exp(rng.uniform(math.log(args[0]), math.log(args[1])))
        points.append(point)
    return points


def points(spec: Spec) -> list[tuple[str, dict[str, Any], bool]]:
    """(label, overrides, is_variant) of every point: product(grid) x zip rows x random samples,
    then the variants."""
    factors: list[list[dict[str, Any]]] = []
    if spec.grid:
        keys = list(spec.grid)
        factors.append([dict(zip(keys, combo)) for combo in itertools.product(*spec.grid.values())])
    if spec.zip:
        keys = list(spec.zip)
        factors.append([dict(zip(keys, row)) for row in zip(*spec.zip.values())])
    if spec.random:
        factors.append(sample(spec.random))
    out = []
    if factors:
        for combo in itertools.product(*factors):
            point = {k: v for part in combo for k, v in part.items()}
            out.append((" ".join(f"{k}={_fmt(v)}" for k, v in point.items()), point, False))
    elif not spec.variants:
        out.append(("base", {}, False))
    out += [(name, dict(over), True) for name, over in spec.variants.items()]
    return out


def expand(spec: Spec, spec_path: Path) -> list[Run]:
    """Every run of the spec, validated against the config schema, identical configs merged."""
    base = (spec_path.parent / spec.base).resolve()
    if not base.exists():
        raise UserError(f"{spec_path}: base: no such file {base} (the path is relative to the spec)")
    base_raw = json.dumps(read_yaml(base))  # read once: a copy of it for each point
    runs_by_id: dict[str, Run] = {}
    first = spec.seeds[0]
    for label, point, variant in points(spec):
        raw = json.loads(base_raw)
        for key, value in {**spec.set, **point, "seed": first}.items():
            set_key(raw, key, value)
        try:
            point_cfg = validate(raw)
        except UserError as e:
            raise UserError(f"{spec_path}: point '{label}' (seed {first}): {e}") from None
        group, what = point_cfg.hash(seed=False), layout.describe(point, label if variant else None)
        for seed in spec.seeds:  # the seeds (ints >= 0, as the spec checked) change nothing else
            cfg = point_cfg.model_copy(update={"seed": seed})
            run_id = cfg.hash()
            if run_id in runs_by_id:  # the same config twice runs once
                continue
            runs_by_id[run_id] = Run(run_id, group, label, point, variant, seed, cfg.to_dict(),
                                     layout.run_name(what, seed, run_id),
                                     cfg.legacy_hash())
    if spec.baseline is not None and spec.baseline not in {r.label for r in runs_by_id.values()}:
        labels = sorted({r.label for r in runs_by_id.values()})
        raise UserError(f"{spec_path}: baseline '{spec.baseline}' is not a point of the sweep; "
                        f"use a variant name or a point label: {', '.join(labels[:6])}"
                        + (" ..." if len(labels) > 6 else ""))
    return list(runs_by_id.values())


def plan(spec_path: str | Path) -> tuple[Spec, list[Run]]:
    spec, path = read_spec(spec_path)
    return spec, expand(spec, path)


def swept_keys(spec: Spec) -> list[str]:
    keys = list(spec.grid) + list(spec.zip) + (list(spec.random.space) if spec.random else [])
    for over in spec.variants.values():
        keys += [k for k in over if k not in keys]
    return list(dict.fromkeys(keys))


# ----------------------------------------------------------------------------- running

def default_jobs(cores: int | None = None) -> int:
    """Half the usable cores, one run per two threads: small CNNs use two threads well on the CPU."""
    return max(1, (cores or usable_cores()) // 2)


class Display:
    """done/running/failed with an ETA: one live line on a terminal, a line per event otherwise."""

    def __init__(self, total: int, done: int, quiet: bool) -> None:
        self.total, self.done, self.quiet = total, done, quiet
        self.failed = 0
        self.running = 0
        self.durations: list[float] = []
        self.tty = sys.stderr.isatty()

    def eta(self, jobs: int) -> str:
        if not self.durations:
            return "?"
        left = (self.total - self.done - self.failed) * (sum(self.durations) / len(self.durations)) / max(jobs, 1)
        return f"{left / 60:.0f} min" if left >= 60 else f"{left:.0f} s"

    def update(self, event: str, jobs: int) -> None:
        if self.quiet:
            return
        text = (f"[{self.done + self.failed}/{self.total}] done {self.done}, running {self.running}, "
                f"failed {self.failed}, ETA {self.eta(jobs)}")
        if self.tty:
            print(f"\r\033[K{text} | {event}", end="", file=sys.stderr, flush=True)
        else:
            print(f"{text} | {event}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tty and not self.quiet:
            print(file=sys.stderr, flush=True)


def robustness_pending(run_dir: Path, config: dict[str, Any]) -> bool:
    """Whether a completed run still lacks the corrupted evaluations its config's eval.* asks for
    (judged on the settings the config decides; `lrn_cli.robust.done` checks them all)."""
    ev = config.get("eval") or {}
    if ev.get("corruptions", "none") == "none":
        return False
    from .data.corruptions import resolve  # torch, only for sweeps that evaluate corruptions

    found = (runs.read_json(run_dir / "robustness.json") or {}).get("settings") or {}
    want = {"corruptions": resolve(ev["corruptions"]), "severities": sorted(set(ev.get("severities", [1, 2, 3, 4, 5]))),
            "seed": ev.get("corruption_seed", 0), "per_class": ev.get("corruption_per_class"),
            "root": ev.get("corruptions_root")}
    return any(found.get(k) != v for k, v in want.items())


def prepare(sweep_dir: Path, run: Run, threads: int) -> None:
    """The run's directory with its config, as `lrn train --resume` expects it: the `threads` CPUs
    that the executor gives each run shared among its train.nproc processes (threads are not part
    of the run's hash)."""
    run_dir = sweep_dir / run.dir
    run_dir.mkdir(exist_ok=True)
    per_process = max(1, threads // run.config["train"].get("nproc", 1))
    cfg = {**run.config, "train": {**run.config["train"], "threads": per_process}}
    runs.write_text(run_dir / runs.CONFIG, Config.model_validate(cfg).to_yaml())


def cluster_options(spec: Spec, options: dict[str, Any]) -> dict[str, Any]:
    """The spec's `cluster:` section, overridden by the flags that were given."""
    return {**spec.cluster.model_dump(), **{k: v for k, v in options.items() if v not in (None, {}, ())}}


def make_executor(name: str, sweep_dir: Path, spec: Spec, todo: list[Run], jobs: int | None, quiet: bool,
                  options: dict[str, Any]) -> Any:
    """The executor, its cluster options from the spec's `cluster:` section overridden by flags."""
    if name == "local":
        return executors.Local(jobs or default_jobs())
    c = cluster_options(spec, options)
    resources = executors.Resources(cpus=c["cpus_per_run"], gpus=c["gpus_per_run"], partition=c["partition"],
                                    time_min=c["time_min"] or 60, mem_gb=c["mem_gb"], sbatch=c["sbatch"])
    if name == "ray":
        return executors.Ray(sweep_dir, c["ray_address"] or "auto", resources, jobs, quiet)
    config = todo[0].config if todo else {"train": {"threads": 0, "device": "auto"}}
    return executors.Slurm(sweep_dir, resources, config, jobs, cluster=c.get("slurm_cluster") or "slurm")


def conclusion(statuses: list[str], signame: str | None, signals: list[str | None]) -> tuple[int, str]:
    """The sweep's exit code and last line, from every run's status after it (`busy`: left to
    another process) and the signal that stopped it: 130/143 when a signal stopped the sweep; 1
    when a run failed or diverged; 130/143 when a run was interrupted on its own (`signals`: the
    signals that stopped them); else 0."""
    counts = {s: statuses.count(s) for s in dict.fromkeys(statuses)}
    total, done = len(statuses), counts.get(runs.Status.COMPLETED, 0)
    rest = ", ".join(f"{n} {'still running in another process' if s == executors.BUSY else s}"
                     for s, n in counts.items() if s != runs.Status.COMPLETED)
    if signame:
        return (runs.exit_code(runs.Status.INTERRUPTED, signame),
                f"sweep interrupted by {signame}: {done} of {total} runs completed; the same command resumes it")
    if any(s in runs.FAILURES for s in statuses):
        return 1, f"sweep not completed: {done} of {total} runs completed, {rest} (exit code 1)"
    if runs.Status.INTERRUPTED in counts:
        return (runs.exit_code(runs.Status.INTERRUPTED, next(filter(None, signals), None)),
                f"sweep not completed: {done} of {total} runs completed, {rest}; the same command resumes it")
    return 0, f"all {total} runs completed" if done == total else f"{done} of {total} runs completed, {rest}"


def ablate(spec_path: str | Path, out: str | Path = "runs", jobs: int | None = None, dry_run: bool = False,
           quiet: bool = False, executor: str = "local", options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run (or resume) the sweep of a spec into out/NAME and write its report; -> outcome, with
    the command's `exit_code` and its last line (`conclusion`).

    executor: local (processes here, `jobs` at a time), ray or slurm (see executors.py); options:
    the cluster flags (cpus_per_run, gpus_per_run, partition, time_min, mem_gb, sbatch,
    ray_address, slurm_cluster), over the spec's `cluster:` section.
    """
    spec, todo_all = plan(spec_path)
    sweep_dir = Path(out) / spec.name
    for r in todo_all:  # the readable name, or the bare hash of a sweep made before those
        r.dir = layout.locate(sweep_dir, r.dir, r.legacy)
    if executor == "local":
        jobs = jobs or default_jobs()
    if dry_run:
        return {"sweep_dir": sweep_dir, "runs": todo_all, "dry_run": True, "jobs": jobs,
                "threads": executors.Local(jobs).threads if executor == "local" else None,
                "status": {r.run_id: runs.run_status(sweep_dir / r.dir) for r in todo_all}, "exit_code": 0}
    new = not sweep_dir.exists()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with runs.locked(sweep_dir, "this sweep directory"):
        status = {r.run_id: runs.run_status(sweep_dir / r.dir) for r in todo_all}
        # completed, and evaluated as eval.corruptions asks (a run stopped while it was being
        # evaluated, or a spec that asks for corrupted evaluations since, is run again: `lrn train`
        # on a completed run only evaluates it)
        done = [r for r in todo_all if status[r.run_id] == runs.Status.COMPLETED
                and not robustness_pending(sweep_dir / r.dir, r.config)]
        busy = [r for r in todo_all  # held by a live process (a job of an earlier driver)
                if status[r.run_id] != runs.Status.COMPLETED and runs.is_locked(sweep_dir / r.dir)]
        skip = {r.run_id for r in done + busy}
        todo = [r for r in todo_all if r.run_id not in skip]
        try:
            ex = make_executor(executor, sweep_dir, spec, todo, jobs, quiet, options or {})
        except UserError:  # a missing extra or cluster, an unreachable node: leave nothing behind
            if new:
                shutil.rmtree(sweep_dir, ignore_errors=True)
            raise
        runs.write_text(sweep_dir / SPEC_FILE, Path(spec_path).read_text())
        runs.write_json(sweep_dir / SWEEP_FILE, {
            "name": spec.name, "baseline": spec.baseline, "swept": swept_keys(spec),
            "runs": [asdict(r) for r in todo_all]})
        from .tb import write_hparams_config  # TensorBoard's protos and scipy: not for --dry-run

        write_hparams_config(sweep_dir, swept_keys(spec), [r.config for r in todo_all])
        for r in todo:
            prepare(sweep_dir, r, ex.threads_for(r.config))
        display = Display(len(todo_all), len(done), quiet)
        if not quiet:
            how = f"{jobs} at a time, {ex.threads} threads each" if executor == "local" else f"executor {executor}"
            print(f"{sweep_dir}: {len(todo_all)} runs, {len(done)} already completed, {len(todo)} to run ({how})"
                  + (f"; {len(busy)} still running in another process, left to it" if busy else ""),
                  file=sys.stderr, flush=True)
        final, signame = executors.drive(ex, sweep_dir, todo, display)
        final.update({r.run_id: executors.BUSY for r in busy})
        from .report import report

        summary = report(sweep_dir)
    statuses = [final.get(r.run_id, status[r.run_id]) for r in todo_all]  # not started: as it was
    signals = [runs.read_summary(sweep_dir / r.dir).get("signal") for r in todo_all
               if final.get(r.run_id) == runs.Status.INTERRUPTED]
    code, last = conclusion(statuses, signame, signals)
    return {"sweep_dir": sweep_dir, "runs": todo_all, "final": final, "report": summary, "signal": signame,
            "exit_code": code, "conclusion": last}
