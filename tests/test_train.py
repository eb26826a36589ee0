"""`lrn train` end to end: the run directory, determinism, resume, divergence, and user errors."""
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from lrn_cli import engine, runs
from lrn_cli.config import load_config
from lrn_cli.engine import lr_factor, train

from conftest import REPO, run_cli

SYNTH = str(REPO / "configs" / "synthetic.yaml")
TIMING = ("images_per_s", "epoch_time_s")


def metrics(run_dir):
    return [{k: v for k, v in row.items() if k not in TIMING} for row in runs.read_jsonl(run_dir / runs.METRICS)]


def weights(run_dir):
    return torch.load(run_dir / runs.CHECKPOINT, weights_only=False)["model"]


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def scalar_steps(run_dir, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return [e.step for e in acc.Scalars(tag)], acc


def test_train_through_the_cli_leaves_a_complete_run_directory(tmp_path):
    out = tmp_path / "runs"
    res = run_cli("train", "--config", SYNTH, "--out", str(out), "--name", "smoke")
    assert res.returncode == 0, res.stderr
    run_dir = out / "smoke"
    assert res.stdout.strip() == str(run_dir)
    assert {p.name for p in run_dir.iterdir()} >= {"config.yaml", "metrics.jsonl", "summary.json", "checkpoint.pt"}
    assert any(p.name.startswith("events.out.tfevents") for p in run_dir.iterdir())
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["status"] == "completed" and s["epochs"] == 2
    for key in ("test_acc", "test_top5", "test_loss", "wall_time_s", "images_per_s"):
        assert isinstance(s[key], float), key
    assert 0 <= s["test_acc"] <= s["test_top5"] <= 1 and s["images_per_s"] > 0
    assert s["env"]["torch"] == torch.__version__ and s["env"]["threads"] == 1
    assert s["test_acc"] >= 0.75  # the synthetic patterns are learnable in two epochs
    assert len(runs.read_jsonl(run_dir / "metrics.jsonl")) == 2
    assert load_config(run_dir / "config.yaml") == load_config(SYNTH)  # the resolved config
    steps, acc = scalar_steps(run_dir, "test/acc")
    assert steps == [8, 16]  # 256 images / 32 per batch = 8 steps an epoch
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/acc", "test/loss", "test/acc", "test/top5", "train/lr",
            "speed/images_per_s"} <= tags
    assert "config" in str(acc.Tags()["tensors"])  # the config as text
    # a second run never overwrites the first
    again = run_cli("train", "--config", SYNTH, "--out", str(out), "--name", "smoke", "--quiet")
    assert again.returncode == 0 and again.stdout.strip() == str(out / "smoke-2") and again.stderr == ""


def test_same_config_and_seed_give_the_same_metrics_bit_for_bit(tmp_path):
    a = train(SYNTH, ["train.epochs=3"], out=tmp_path, name="a", quiet=True)
    b = train(SYNTH, ["train.epochs=3"], out=tmp_path, name="b", quiet=True)
    c = train(SYNTH, ["train.epochs=3", "seed=1"], out=tmp_path, name="c", quiet=True)
    assert metrics(a.run_dir) == metrics(b.run_dir) and same_weights(weights(a.run_dir), weights(b.run_dir))
    assert metrics(a.run_dir) != metrics(c.run_dir)


def sigterm_at_step(monkeypatch, n):
    """Send this process SIGTERM during the n-th training step (a real signal, mid-epoch)."""
    calls = {"n": 0}
    real = engine.crop_flip

    def crop_flip(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "crop_flip", crop_flip)


@pytest.mark.parametrize("stop_step", [11, 16])  # mid-epoch 2, and the last step of epoch 2
def test_interrupted_then_resumed_run_equals_an_uninterrupted_one(tmp_path, monkeypatch, stop_step):
    over = ["train.epochs=3"]
    full = train(SYNTH, over, out=tmp_path, name="full", quiet=True)
    sigterm_at_step(monkeypatch, stop_step)
    part = train(SYNTH, over, out=tmp_path, name="part", quiet=True)
    monkeypatch.undo()
    s = runs.read_json(part.run_dir / "summary.json")
    assert s["status"] == "interrupted" and s["signal"] == "SIGTERM"
    ckpt = torch.load(part.run_dir / "checkpoint.pt", weights_only=False)
    assert (ckpt["epoch"], ckpt["step"]) == ((1, 3) if stop_step == 11 else (2, 0))
    resumed = train(resume=part.run_dir, quiet=True)
    assert resumed.summary["status"] == "completed"
    assert metrics(resumed.run_dir) == metrics(full.run_dir)
    assert same_weights(weights(resumed.run_dir), weights(full.run_dir))
    for key in ("test_acc", "test_loss", "test_top5", "epochs"):
        assert resumed.summary[key] == full.summary[key]
    steps, _ = scalar_steps(part.run_dir, "test/acc")
    assert steps == [8, 16, 24]  # no duplicated steps in TensorBoard
    loss_steps, _ = scalar_steps(part.run_dir, "train/loss")
    assert loss_steps == sorted(set(loss_steps))
    # resuming a completed run does nothing
    assert train(resume=part.run_dir, quiet=True).summary == resumed.summary


def test_dropout_runs_resume_bit_identically_too(tmp_path, monkeypatch):
    raw = load_config(SYNTH).to_dict()
    raw["model"]["layers"][-1:-1] = [{"dropout": 0.3}]
    full = train(raw, ["train.epochs=2"], out=tmp_path, name="full", quiet=True)
    sigterm_at_step(monkeypatch, 5)
    part = train(raw, ["train.epochs=2"], out=tmp_path, name="part", quiet=True)
    monkeypatch.undo()
    resumed = train(resume=part.run_dir, quiet=True)
    assert metrics(resumed.run_dir) == metrics(full.run_dir)


def test_sigterm_through_the_cli_then_resume(tmp_path):
    out = tmp_path / "runs"
    over = ["--set", "train.epochs=40", "--set", "data.per_class=200"]
    proc = subprocess.Popen([sys.executable, "-m", "lrn_cli", "train", "-c", SYNTH, "--out", str(out),
                             "--name", "r", *over], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics_file = out / "r" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics_file.exists() and metrics_file.read_text().count("\n") >= 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "interrupted" in err and "lrn train --resume" in err
    assert runs.read_json(out / "r" / "summary.json")["status"] == "interrupted"
    res = run_cli("train", "--resume", str(out / "r"), "--quiet")
    assert res.returncode == 0, res.stderr
    full = train(SYNTH, [o for o in over if o != "--set"], out=tmp_path, name="full", quiet=True)
    assert metrics(out / "r") == metrics(full.run_dir)


def test_bare_resume_continues_or_starts_out_name(tmp_path):
    a = train(SYNTH, ["train.epochs=1"], out=tmp_path, name="n", resume=True, quiet=True)
    assert a.run_dir == tmp_path / "n" and a.summary["status"] == "completed"
    b = train(SYNTH, ["train.epochs=1"], out=tmp_path, name="n", resume=True, quiet=True)
    assert b.summary == a.summary  # found completed, nothing redone
    res = run_cli("train", "-c", SYNTH, "--set", "seed=5", "--out", str(tmp_path), "--name", "n", "--resume")
    assert res.returncode == 2 and "different config" in res.stderr


def test_divergence_stops_the_run_with_a_clear_status(tmp_path):
    res = run_cli("train", "-c", SYNTH, "--set", "train.lr=1.0e+30", "--set", "train.schedule=constant",
                  "--out", str(tmp_path), "--name", "d")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "diverged: loss became nan" in res.stderr or "diverged: loss became inf" in res.stderr
    s = runs.read_json(tmp_path / "d" / "summary.json")
    assert s["status"] == "diverged" and "lower train.lr" in s["error"]


@pytest.mark.parametrize("args, needle", [
    (["--config", "nope.yaml"], "nope.yaml: no such file"),
    (["--config", SYNTH, "--set", "train.epoch=3"], "unknown key 'train.epoch' (did you mean 'epochs'?)"),
    (["--config", SYNTH, "--set", "model.norm.alpha=-1"], "model.norm.alpha must be a finite number >= 0"),
    (["--config", SYNTH, "--set", "train.epochs"], "KEY=VALUE"),
    (["--config", SYNTH, "--set", "data.dataset=cifar10", "--set", "data.root=/no/such/dir",
      "--set", "data.image_size=null"], "/no/such/dir: no CIFAR-10 here"),
    (["--config", SYNTH, "--set", "data.dataset=cifar10", "--set", "data.image_size=64"],
     "data.image_size: CIFAR-10 images are 32 px"),
    (["--config", SYNTH, "--set", "data.image_size=8", "--set", "model.layers.3.pool.kernel=9"], "does not fit"),
    (["--resume", "/no/such/run"], "not a run directory"),
    ([], "give --config FILE"),
])
def test_user_errors_exit_2_with_one_line_and_write_nothing(tmp_path, args, needle):
    out = tmp_path / "out"
    res = run_cli("train", *args, "--out", str(out))
    assert res.returncode == 2, res.stderr
    assert needle in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and res.stderr.startswith("error: ")
    assert not out.exists()


def test_config_show_prints_the_resolved_config():
    res = run_cli("config", "show", SYNTH, "--set", "model.norm.convention=alexnet")
    assert res.returncode == 0
    shown = load_config({**__import__("yaml").safe_load(res.stdout)})
    assert shown.model.norm.k == 2.0 and shown.train.optimizer == "sgd"
    bad = run_cli("config", "show", SYNTH, "--set", "train.optimiser=adam")
    assert bad.returncode == 2 and "did you mean 'optimizer'" in bad.stderr


@pytest.mark.parametrize("norm", ["none", "batchnorm", "groupnorm"])
def test_every_norm_type_trains(tmp_path, norm):
    r = train(SYNTH, [f"model.norm.type={norm}", "model.norm.groups=4", "train.epochs=1",
                      "train.optimizer=adamw", "train.lr=0.01"], out=tmp_path, quiet=True)
    assert r.summary["status"] == "completed"


def test_schedules():
    cfg = load_config({}, ["train.schedule=onecycle"]).train
    assert cfg.warmup == 0.25  # onecycle's default, in the schema (and so in config.yaml and the hash)
    assert lr_factor(24, 100, cfg) == 1 and lr_factor(25, 100, cfg) == 1 and lr_factor(100, 100, cfg) == 0
    assert lr_factor(0, 100, cfg) == pytest.approx(0.5 - 0.5 * math.cos(math.pi / 25))
    cos = load_config({}, ["train.schedule=cosine", "train.warmup=0.1"]).train
    assert lr_factor(4, 100, cos) == 0.5 and lr_factor(9, 100, cos) == 1 and lr_factor(10, 100, cos) == 1
    assert lr_factor(55, 100, cos) == pytest.approx(0.5)
    ms = load_config({}, ["train.schedule=multistep", "train.milestones=[0.5, 0.8]", "train.gamma=0.2"]).train
    assert [lr_factor(s, 10, ms) for s in (0, 4, 5, 8, 9)] == [1, 1, 0.2, pytest.approx(0.04), pytest.approx(0.04)]
    const = load_config({}, ["train.schedule=constant"]).train
    assert lr_factor(77, 100, const) == 1


def test_onecycle_without_warmup_can_be_asked_for():
    """warmup 0 under onecycle was silently 0.25: the same run under two hashes, and no way to
    ask for none."""
    none, default = (load_config({}, ["train.schedule=onecycle", *w]) for w in (["train.warmup=0"], []))
    assert none.train.warmup == 0 and lr_factor(0, 100, none.train) == 1
    assert none.hash() != default.hash()
    assert default.hash() == load_config({}, ["train.schedule=onecycle", "train.warmup=0.25"]).hash()


@pytest.mark.parametrize("schedule", ["onecycle", "cosine", "constant", "multistep"])
def test_the_first_step_under_warmup_has_a_learning_rate(schedule):
    cfg = load_config({}, [f"train.schedule={schedule}", "train.warmup=0.2"]).train
    factors = [lr_factor(s, 50, cfg) for s in range(10)]
    assert 0 < factors[0] < factors[1] < factors[9] == 1  # rises from the first step to the peak at the last


def test_real_cifar10_slice_through_the_cli(real_cifar, tmp_path):
    common = ["--set", f"data.root={real_cifar}", "--set", "data.per_class=300", "--set", "data.test_per_class=100",
              "--set", "train.epochs=3", "--set", "train.threads=2", "--out", str(tmp_path)]
    for name, extra in (("lrn", []), ("none", ["--set", "model.norm.type=none"])):
        res = run_cli("train", "-c", str(REPO / "configs" / "cifar10_full.yaml"), *common, "--name", name, *extra)
        assert res.returncode == 0, res.stderr
        assert "differ from the official release" in res.stderr  # the JPEG copy: a warning, not an error
        s = runs.read_json(tmp_path / name / "summary.json")
        assert s["status"] == "completed" and s["data"]["train"] == 3000 and s["data"]["test"] == 1000
        assert s["test_acc"] > 0.25, s  # chance is 0.10


def test_python_api_exports_the_commands():
    import lrn_cli
    from lrn_cli import sweep

    assert lrn_cli.train is train and lrn_cli.ablate is sweep.ablate
    assert lrn_cli.load_config(SYNTH).name == "synthetic"
