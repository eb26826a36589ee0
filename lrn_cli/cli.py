"""The `lrn` command line: thin wrappers that parse options and call one function per command."""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import click

from . import __version__
from .errors import UserError

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
def train(config: str | None, overrides: tuple[str, ...], out: str, name: str | None, resume: str | None,
          quiet: bool) -> None:
    """Train one config; the results go to a new run directory under --out.

    \b
    lrn train --config configs/cifar10_full.yaml
    lrn train --config configs/cifar10_full.yaml --set model.norm.type=none
    lrn train --resume runs/cifar10_full-20260101-120000
    """
    from .engine import train as run_training

    if resume is None and config is None:
        raise UserError("give --config FILE (or --resume RUN_DIR to continue a run)")
    resume_arg: str | bool | None = True if resume == "" else resume
    result = run_training(config, overrides, out=out, name=name, resume=resume_arg, quiet=quiet)
    click.echo(result.run_dir)
    status = result.summary["status"]
    if status == "interrupted":
        sys.exit(143 if result.summary.get("signal") == "SIGTERM" else 130)
    if status != "completed":
        sys.exit(1)


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


if __name__ == "__main__":
    main()
