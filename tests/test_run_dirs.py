"""Run directories under the mistakes and accidents a user meets: names that escape --out, an
--out that is a file, a checkpoint that is cut short, foreign or malicious, a full disk, an empty
config, and run identities that survive new config keys (a sweep made before them resumes)."""
import errno
import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from lrn_cli import engine, runs
from lrn_cli.cli import main
from lrn_cli.config import load_config, load_run_config
from lrn_cli.engine import train

from conftest import REPO, run_cli

SYNTH = str(REPO / "configs" / "synthetic.yaml")
OLD_SWEEP = REPO / "tests" / "fixtures" / "old_sweep"


def one_line_error(res, needle: str) -> None:
    assert res.returncode == 2, res.stderr
    assert needle in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and res.stderr.startswith("error: ")


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def interrupted(tmp_path, monkeypatch) -> Path:
    """A run stopped by SIGTERM in its second epoch: a checkpoint to resume from."""
    real, calls = engine.crop_flip, {"n": 0}

    def crop_flip(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 11:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "crop_flip", crop_flip)
    r = train(SYNTH, [], out=tmp_path, name="part", quiet=True)
    monkeypatch.undo()
    assert r.summary["status"] == "interrupted"
    return r.run_dir


@pytest.mark.parametrize("name", ["../escape", "..", "a/b", "/abs"])
def test_name_flag_cannot_leave_out(tmp_path, name):
    out = tmp_path / "out"
    res = run_cli("train", "--config", SYNTH, "--out", str(out), "--name", name)
    one_line_error(res, "--name")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("sub", ["", "sub"])
def test_out_naming_a_file(tmp_path, sub):
    f = tmp_path / "afile"
    f.write_text("x")
    res = run_cli("train", "--config", SYNTH, "--out", str(f / sub) if sub else str(f))
    one_line_error(res, "is a file, not a folder")
    assert f.read_text() == "x"


def test_empty_config_file_is_named(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    res = run_cli("train", "--config", str(empty), "--out", str(tmp_path / "out"))
    one_line_error(res, f"{empty}: the file is empty")
    assert not (tmp_path / "out").exists()


def test_resume_of_another_config_prints_the_run_dir(tmp_path):
    train(SYNTH, ["train.epochs=1"], out=tmp_path, name="n", quiet=True)
    res = run_cli("train", "-c", SYNTH, "--set", "seed=3", "--out", str(tmp_path), "--name", "n", "--resume")
    one_line_error(res, f"lrn train --resume {tmp_path / 'n'}`")
    assert "{run_dir}" not in res.stderr


class Payload:
    """A pickle that runs code when loaded: what a checkpoint from a stranger could hold."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


@pytest.mark.parametrize("damage", ["truncated", "not ours", "other config", "malicious", "wrong shapes"])
def test_a_bad_checkpoint_stops_resume_with_one_line_and_changes_nothing(interrupted, tmp_path, damage):
    ckpt = interrupted / runs.CHECKPOINT
    marker = tmp_path / "pwned"
    good = torch.load(ckpt, weights_only=True)
    if damage == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[:1000])
    elif damage == "not ours":
        torch.save({"weights": torch.zeros(3)}, ckpt)
    elif damage == "other config":
        torch.save({**good, "config_hash": "0123456789"}, ckpt)
    elif damage == "malicious":
        torch.save({**good, "extra": Payload(marker)}, ckpt)
    else:
        torch.save({**good, "model": {k: v[:1] for k, v in good["model"].items()}}, ckpt)
    before = snapshot(interrupted)
    res = run_cli("train", "--resume", str(interrupted))
    one_line_error(res, str(ckpt))
    assert "delete it" in res.stderr or "restore" in res.stderr
    assert snapshot(interrupted) == before
    assert not marker.exists()  # weights_only: the pickle's code never ran


def test_checkpoints_load_with_weights_only(interrupted):
    ckpt = torch.load(interrupted / runs.CHECKPOINT, weights_only=True)
    assert set(engine.CHECKPOINT_KEYS) <= set(ckpt) and ckpt["config_hash"] == load_config(SYNTH).hash()


def test_disk_full_is_one_line_and_the_run_resumes(tmp_path, monkeypatch):
    real, calls = torch.save, {"n": 0}

    def save(obj, f, *args, **kwargs):  # the second checkpoint finds the disk full
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "r" / runs.CHECKPOINT))
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    res = CliRunner().invoke(main, ["train", "-c", SYNTH, "--set", "train.epochs=3", "--out", str(tmp_path),
                                    "--name", "r", "--quiet"])
    monkeypatch.undo()
    assert res.exit_code == 2, res.output
    assert "checkpoint.pt: no space left on the device" in res.output and "lrn train --resume" in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    summary = runs.read_json(tmp_path / "r" / runs.SUMMARY)
    assert summary["status"] == "interrupted"
    assert not list((tmp_path / "r").glob(".*.tmp"))  # the atomic write left nothing behind
    done = train(resume=tmp_path / "r", quiet=True)  # space freed: the run goes on from epoch 1
    assert done.summary["status"] == "completed" and done.summary["epochs"] == 3
    full = train(SYNTH, ["train.epochs=3"], out=tmp_path, name="full", quiet=True)
    assert done.summary["test_loss"] == full.summary["test_loss"]


def test_identity_leaves_out_evaluation_and_how_to_run():
    base = load_config(SYNTH)
    assert load_config(SYNTH, ["eval.batch_size=7"]).hash() == base.hash()
    assert load_config(SYNTH, ["train.threads=2", "train.nproc=2", "train.device=cpu"]).hash() == base.hash()
    assert load_config(SYNTH, ["model.norm.alpha=0.5"]).hash() != base.hash()
    assert load_config(SYNTH, ["train.schedule=onecycle", "train.warmup=0"]).legacy_hash() is None


def test_a_sweep_made_before_the_identity_change_resumes_without_new_runs(tmp_path):
    """tests/fixtures/old_sweep was written by the code before (README there): three completed
    runs under their old bare-hash names and one interrupted mid-epoch."""
    copy = tmp_path / "old"
    shutil.copytree(OLD_SWEEP, copy)
    sweep = copy / "out" / "old_sweep"
    before = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    completed = {n: snapshot(sweep / n) for n in before if runs.read_json(sweep / n / runs.SUMMARY)["status"] == "completed"}
    res = run_cli("ablate", "--config", "spec.yaml", "--out", "out", "--jobs", "1", "--quiet", cwd=copy)
    assert res.returncode == 0, res.stderr
    after = sorted(p.name for p in sweep.iterdir() if p.is_dir() and p.name != "plots")
    assert after == before  # no new run directory
    for name, files in completed.items():
        assert runs.read_json(sweep / name / runs.SUMMARY)["status"] == "completed"
        assert json.loads(files["metrics.jsonl"]) == runs.read_jsonl(sweep / name / runs.METRICS)[0]
    resumed = runs.read_json(sweep / "f3b096b490" / runs.SUMMARY)
    assert resumed["status"] == "completed" and resumed["epochs"] == 1
    # read as the old code meant it: its onecycle `warmup: 0` trained with a warmup of 0.25
    old = load_run_config(sweep / "7c60bfadce", runs.read_json(sweep / "7c60bfadce" / runs.SUMMARY))
    assert old.train.schedule == "onecycle" and old.train.warmup == 0.25
    rows = (sweep / "results.csv").read_text().splitlines()
    assert len(rows) == 5
