"""The `lrn` command line: thin wrappers that parse options and call one function per command."""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import click

from . import __version__, runs
from .errors import UserError
from .executors import EXECUTORS
from .layout import RESULTS_MD

SET_HELP = "Override a config key: dotted KEY, YAML VALUE (repeatable), e.g. --set train.epochs=5."


class _Group(click.Group):
    """Print a UserError as one line and exit 2; anything else is a bug and keeps its traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(2)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    click.echo(f"warning: {message}", err=True)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="lrn")
def main() -> None:
    """Train CNNs with and without Local Response Normalization, and measure what it does."""
    warnings.showwarning = _show_warning


@main.command()
@click.option("--config", "-c", "config", metavar="FILE", help="The run's YAML config.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--out", default="runs", show_default=True, metavar="DIR", help="Folder for run directories.")
@click.option("--name", metavar="NAME", help="Run directory name (default: config name and time).")
@click.option("--resume", is_flag=False, flag_value="", default=None, metavar="[RUN_DIR]",
              help="Continue RUN_DIR from its checkpoint; bare --resume continues --out/--name "
                   "if it exists and starts it otherwise.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors and the run directory.")
@click.option("--nproc", type=click.IntRange(1), metavar="N",
              help="Train the run on N processes of this machine with DistributedDataParallel "
                   "(train.nproc; gloo on CPUs, nccl on GPUs). train.batch_size is the global batch, "
                   "split evenly; with --resume it changes only how the rest of the run trains.")
def train(config: str | None, overrides: tuple[str, ...], out: str, name: str | None, resume: str | None,
          quiet: bool, nproc: int | None) -> None:
    """Train one config; the results go to a new run directory under --out.

    \b
    lrn train --config configs/cifar10_full.yaml
    lrn train --config configs/cifar10_full.yaml --set model.norm.type=none
    lrn train --config configs/cifar10_full.yaml --nproc 2
    lrn train --resume runs/cifar10_full-20260101-120000

    Started by torchrun, each process joins torchrun's world as one rank (rank 0 writes the run;
    --out must be on a filesystem every node sees, to resume), e.g. on two nodes of four GPUs:

    \b
    torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        --rdzv-id RUN -m lrn_cli train --config configs/cifar10_full.yaml --name RUN
    """
    from .distributed import WorkerFailed, world
    from .engine import train as run_training

    if resume is None and config is None:
        raise UserError("give --config FILE (or --resume RUN_DIR to continue a run)")
    resume_arg: str | bool | None = True if resume == "" else resume
    try:
        result = run_training(config, overrides, out=out, name=name, resume=resume_arg, quiet=quiet, nproc=nproc)
    except WorkerFailed as e:  # it carries the worker's traceback; this process's adds nothing
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:  # Ctrl-C in the corrupted evaluations after training (it said so)
        sys.exit(runs.exit_code(runs.Status.INTERRUPTED, "SIGINT"))
    if world().rank == 0:  # under torchrun, every rank returns here
        click.echo(result.run_dir)
    sys.exit(runs.exit_code(result.summary["status"], result.summary.get("signal")))


def _key_values(ctx: click.Context, param: click.Parameter, items: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: write KEY=VALUE, e.g. account=myproj")
        out[key.removeprefix("--")] = value
    return out


@main.command()
@click.option("--config", "-c", "spec", required=True, metavar="SPEC", help="The ablation spec (YAML).")
@click.option("--jobs", "-j", type=click.IntRange(1), metavar="N",
              help="Runs at a time (local default: half the cores, torch threads per run: cores // N; "
                   "ray and slurm default: as many as the cluster fits).")
@click.option("--dry-run", is_flag=True, help="Print the table of runs and exit.")
@click.option("--out", default="runs", show_default=True, metavar="DIR", help="The sweep goes to DIR/NAME.")
@click.option("--quiet", "-q", is_flag=True, help="No live display.")
@click.option("--executor", type=click.Choice(EXECUTORS), default="local", show_default=True,
              help="Where runs execute: processes here, Ray tasks, or a SLURM job array (submitit).")
@click.option("--cpus-per-run", type=click.IntRange(1), metavar="N",
              help="ray/slurm: CPUs each run asks for, and its torch threads "
                   "(default: the config's train.threads, or 2).")
@click.option("--gpus-per-run", type=click.FloatRange(0), metavar="N",
              help="ray/slurm: GPUs each run asks for (default: 1 if train.device is cuda, else 0; "
                   "Ray takes fractions).")
@click.option("--ray-address", metavar="ADDR",
              help="ray: the cluster (host:port or ray://host:10001); default auto: the running cluster, "
                   "or a new local instance when there is none; local: always a new one.")
@click.option("--partition", metavar="NAME", help="slurm: the partition.")
@click.option("--time-min", type=click.IntRange(1), metavar="MIN",
              help="slurm: time limit per job (default 60); a run that outlives it is requeued and resumes.")
@click.option("--mem-gb", type=click.FloatRange(0, min_open=True), metavar="GB", help="slurm: memory per job.")
@click.option("--sbatch", multiple=True, metavar="KEY=VALUE", callback=_key_values,
              help="slurm: extra sbatch option, e.g. --sbatch account=myproj --sbatch qos=high (repeatable).")
@click.option("--slurm-cluster", type=click.Choice(["slurm", "local"]), default="slurm", show_default=True,
              help="slurm: local runs the same job array on this machine through submitit's local "
                   "executor (no queue), to try a spec before sending it.")
def ablate(spec: str, jobs: int | None, dry_run: bool, out: str, quiet: bool, executor: str,
           cpus_per_run: int | None, gpus_per_run: float | None, ray_address: str | None, partition: str | None,
           time_min: int | None, mem_gb: float | None, sbatch: dict[str, str], slurm_cluster: str) -> None:
    """Run every point of an ablation spec over its seeds, in parallel, then report.

    Running the same command again skips completed runs and resumes interrupted ones, whatever
    the executor. The cluster options can also sit in the spec's `cluster:` section; flags win.

    \b
    lrn ablate --config experiments/lrn_on_off.yaml --jobs 2
    lrn ablate --config experiments/lrn_on_off.yaml --dry-run
    lrn ablate --config experiments/lrn_on_off.yaml --executor ray --cpus-per-run 4
    lrn ablate --config experiments/lrn_on_off.yaml --executor slurm --partition gpu --gpus-per-run 1
    """
    from .sweep import ablate as run_sweep

    options = {"cpus_per_run": cpus_per_run, "gpus_per_run": gpus_per_run, "ray_address": ray_address,
               "partition": partition, "time_min": time_min, "mem_gb": mem_gb, "sbatch": sbatch,
               "slurm_cluster": slurm_cluster}
    outcome = run_sweep(spec, out=out, jobs=jobs, dry_run=dry_run, quiet=quiet, executor=executor, options=options)
    if dry_run:
        rows = outcome["runs"]
        how = (f"{outcome['jobs']} at a time, {outcome['threads']} threads each" if executor == "local"
               else f"executor {executor}")
        width = max([len(r.dir) for r in rows] + [3])
        lines = [f"{outcome['sweep_dir']}: {len(rows)} runs, {how}", f"{'run':{width}}  {'status':11}  point"]
        lines += [f"{r.dir:{width}}  {outcome['status'][r.run_id]:11}  {r.label}, seed {r.seed}" for r in rows]
        click.echo("\n".join(lines))
        return
    click.echo(outcome["sweep_dir"] / RESULTS_MD)
    if not quiet or outcome["exit_code"]:
        click.echo(outcome["conclusion"], err=True)
    sys.exit(outcome["exit_code"])


@main.command()
@click.argument("sweep_dir", metavar="DIR")
def report(sweep_dir: str) -> None:
    """Regenerate DIR's results.csv, results.md, plots/ and HParams from its run directories."""
    from .report import report as make_report

    outcome = make_report(sweep_dir)
    click.echo((Path(sweep_dir) / RESULTS_MD).read_text(), nl=False)
    if outcome["completed"] < outcome["rows"]:
        click.echo(f"({outcome['rows'] - outcome['completed']} of {outcome['rows']} runs not completed)", err=True)


@main.command()
@click.argument("logdir", metavar="DIR")
@click.option("--port", default=6006, show_default=True, type=click.IntRange(1, 65535))
def board(logdir: str, port: int) -> None:
    """Start TensorBoard on DIR (a run, or a sweep with its HParams dashboard) at 127.0.0.1:PORT."""
    from .tb import board as serve

    if not Path(logdir).is_dir():
        raise UserError(f"{logdir}: no such folder; give a run or sweep directory")
    click.echo(f"TensorBoard on http://127.0.0.1:{port}/ (Ctrl-C to stop)", err=True)
    sys.exit(serve(Path(logdir), port))


@main.group("config")
def config_group() -> None:
    """Inspect configs."""


@config_group.command("show")
@click.argument("file")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
def config_show(file: str, overrides: tuple[str, ...]) -> None:
    """Print the fully resolved config of FILE (defaults filled in, overrides applied)."""
    from .config import load_config

    click.echo(load_config(file, overrides).to_yaml(), nl=False)


@main.command()
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--dtype", "dtypes", multiple=True, default=("float32",), show_default=True,
              type=click.Choice(["float32", "float64", "bfloat16", "float16"]), help="Repeatable.")
@click.option("--repeats", default=10, show_default=True, type=click.IntRange(1), help="Timings per median.")
@click.option("--threads", type=click.IntRange(1), help="torch threads (default: torch's).")
@click.option("--quick", is_flag=True, help="Small shapes, no train-step table: a seconds-long check.")
@click.option("--json", "json_file", metavar="FILE", help="Also write the results as JSON.")
def bench(device: str, dtypes: tuple[str, ...], repeats: int, threads: int | None, quick: bool,
          json_file: str | None) -> None:
    """Time torch's LRN, the reference formula and the fused kernels, and LRN's share of a train step."""
    import json

    import torch

    from . import bench as bench_mod
    from .runs import write_text

    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: torch sees no GPU here")
    if threads:
        torch.set_num_threads(threads)
    result = bench_mod.run(device, dtypes, repeats, quick=quick)
    click.echo(bench_mod.format_tables(result))
    if json_file:
        write_text(Path(json_file), json.dumps(result, indent=2) + "\n")


@main.command("eval")
@click.argument("path", metavar="RUN_OR_SWEEP_DIR")
@click.option("--corruptions", metavar="WHICH",
              help="all, a family (noise, blur, weather, digital, extra, lighting, benchmark), or names and "
                   "families separated by commas (default: the run's eval.corruptions, or all if none).")
@click.option("--set", "overrides", multiple=True, metavar="eval.KEY=VALUE",
              help="Override an eval key (repeatable), e.g. --set eval.corruption_per_class=100 "
                   "--set eval.severities=[3].")
@click.option("--force", is_flag=True, help="Evaluate again runs already evaluated with the same settings.")
def eval_command(path: str, corruptions: str | None, overrides: tuple[str, ...], force: bool) -> None:
    """Measure a finished run's accuracy on corrupted test images (no training): clean, and every
    corruption x severity. On a sweep directory, every completed run, resumably (a run already
    evaluated with the same settings is skipped), then the sweep's report is refreshed.

    Writes RUN/robustness.json, the `robustness` figures of RUN/summary.json, TensorBoard scalars
    and RUN/plots/corruptions.png.

    \b
    lrn eval runs/cifar10_full-20260101-120000
    lrn eval runs/sweeps/robustness --corruptions lighting,noise --set eval.corruption_per_class=200
    """
    from .robust import evaluate_path

    if corruptions is not None and "," in corruptions:
        corruptions = "[" + corruptions + "]"
    sys.exit(evaluate_path(path, corruptions, overrides, force, line=lambda text: click.echo(text, err=True)))


@main.command()
@click.argument("run_dir", metavar="RUN_DIR")
@click.option("--onnx", "onnx_file", required=True, metavar="FILE", help="The ONNX file to write.")
@click.option("--input", "input_kind", type=click.Choice(["uint8", "normalized"]), default="uint8",
              show_default=True,
              help="uint8: the model takes uint8 images (0-255) and normalizes them itself; normalized: "
                   "it takes float32 images already normalized as (pixel - mean) / std, the mean and std "
                   "(0-255 units) recorded in its metadata.")
def export(run_dir: str, onnx_file: str, input_kind: str) -> None:
    """Export a run's trained network to ONNX (dynamic batch; LRN as native ONNX LRN nodes where
    an onnx-convention LRN computes it exactly, as standard ops otherwise).

    The metadata records the input kind, mean and std, image size, channel order, class names,
    the run's config hash and how each LRN layer was exported; the model is checked against
    PyTorch with onnxruntime before it is written.

    \b
    lrn export runs/cifar10_full-20260101-120000 --onnx cifar10_full.onnx
    lrn export runs/cifar10_full-20260101-120000 --onnx model.onnx --input normalized
    """
    from .export import export_onnx

    for line in export_onnx(run_dir, onnx_file, input=input_kind).lines():
        click.echo(line)


@main.command()
@click.argument("source", metavar="FROM")
@click.argument("target", metavar="TO")
@click.argument("params", nargs=-1, metavar="[NAME=VALUE]...")
def convert(source: str, target: str, params: tuple[str, ...]) -> None:
    """Print the TO-convention LRN that computes exactly what a FROM-convention LRN computes.

    Parameters go in FROM's own names (missing ones take FROM's defaults); conventions are
    torch, alexnet, caffe, tensorflow, onnx, cudnn, cuda-convnet.

    \b
    lrn convert caffe tensorflow local_size=5 alpha=1e-4 beta=0.75 k=2
    lrn convert tensorflow torch depth_radius=2 bias=1 alpha=1e-4 beta=0.75
    lrn convert caffe torch local_size=3 alpha=5e-5 norm_region=WITHIN_CHANNEL   # none exists
    """
    from .config import parse_yaml
    from .lrn.conventions import NoEquivalent, convert as convert_params, from_native, to_native

    given = {}
    for item in params:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UserError(f"{item!r}: write parameters as NAME=VALUE, e.g. local_size=5")
        given[name] = parse_yaml(value, name)
    try:
        ours = from_native(source, given)
        result = convert_params(source, target, **ours)
    except NoEquivalent as e:
        click.echo(f"no equivalent: {e}", err=True)
        sys.exit(1)
    except ValueError as e:
        raise UserError(str(e)) from None

    def number(v: float) -> str:  # the shortest form that reads back as exactly v: 0.14285714285714285, 2
        return repr(v).removesuffix(".0")

    def fmt(d: dict) -> str:
        return "{" + ", ".join(f"{k}: {number(v)}" if isinstance(v, float) else f"{k}: {v}" for k, v in d.items()) + "}"

    click.echo(f"{source} {fmt(to_native(source, **ours))}")
    click.echo(f"= {target} {fmt(to_native(target, **result))}")
    norm = {"type": "lrn", "convention": target, **result}
    click.echo(f"config: model.norm: {fmt(norm)}")


if __name__ == "__main__":
    main()
