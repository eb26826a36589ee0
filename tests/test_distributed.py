"""`lrn train --nproc N`: one run on several processes (DistributedDataParallel, gloo on the CPU).

What a run on 2 processes must match on 1: every rank draws the whole global batch's augmentation
with the step's seed and keeps its contiguous half, so the inputs are the single process's and
DDP's averaged gradient is the global batch's up to the order of a float32 sum. Measured on this
2-core machine (float32 LRN nets, SGD):

* after one optimizer step (constant lr) the weights agree to 1.1e-7 of each tensor's largest
  value on cifar10_full (and to float precision on the synthetic net): the same gradient;
* cifar10_full on a 1,000-image CIFAR-10 slice, 2 epochs of 10 steps of 100, 500 test images:
  the same test accuracy to the image for seeds 0-3 (124, 136, 127, 128 correct either way),
  test losses within 5e-5 relative, while those seeds spread over 12 images (124-136). One
  process on 1 thread instead of 2 got 123 for seed 0: the thread count alone, another
  summation order, moves an image.

So the tests allow 3 test images (0.6%): rounding differences can flip a borderline image or
two, a broken gradient or data split moves accuracy by a seed's spread or more.
"""
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings

import pytest
import torch

from lrn_cli import runs
from lrn_cli.config import load_config
from lrn_cli.data import load_data
from lrn_cli.engine import evaluate, train
from lrn_cli.models import build_model

from conftest import REPO, run_cli

SYNTH = str(REPO / "configs" / "synthetic.yaml")
CIFAR = str(REPO / "configs" / "cifar10_full.yaml")
TIMING = ("images_per_s", "epoch_time_s")

pytestmark = pytest.mark.slow


def metrics(run_dir):
    return [{k: v for k, v in row.items() if k not in TIMING} for row in runs.read_jsonl(run_dir / runs.METRICS)]


def weights(run_dir):
    return torch.load(run_dir / runs.CHECKPOINT, weights_only=False)["model"]


def largest_relative_difference(a, b):
    """max over tensors of max |a - b| / max |b|."""
    assert a.keys() == b.keys()
    return max(((a[k] - b[k]).abs().max() / b[k].abs().max().clamp_min(1e-12)).item() for k in a)


def close(a, b, rel):
    return abs(a - b) <= rel * max(abs(a), abs(b), 1e-12)


@pytest.fixture(scope="module")
def two_procs(tmp_path_factory):
    """The synthetic config trained by `lrn train --nproc 2`, as a user runs it."""
    out = tmp_path_factory.mktemp("two")
    res = run_cli("train", "-c", SYNTH, "--out", str(out), "--name", "two", "--nproc", "2")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(out / "two")  # printed once, by the parent
    return out / "two"


def test_two_processes_leave_the_run_directory_one_leaves(two_procs, tmp_path):
    one = train(SYNTH, out=tmp_path, name="one", quiet=True).run_dir
    names = {p.name for p in two_procs.iterdir() if not p.name.startswith("events.")}
    assert names == {p.name for p in one.iterdir() if not p.name.startswith("events.")}
    assert load_config(two_procs / "config.yaml") == load_config(SYNTH, ["train.nproc=2"])
    assert load_config(two_procs / "config.yaml").hash() == load_config(SYNTH).hash()
    s = runs.read_json(two_procs / "summary.json")
    assert s["status"] == "completed" and s["epochs"] == 2 and s["images_per_s"] > 0
    assert (s["env"]["nproc"], s["env"]["threads"]) == (2, 1)  # train.threads 1 in this config
    assert [r["epoch"] for r in runs.read_jsonl(two_procs / "metrics.jsonl")] == [1, 2]
    assert len([p for p in two_procs.iterdir() if p.name.startswith("events.")]) == 1  # rank 0's only

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(two_procs))
    events.Reload()
    assert [e.step for e in events.Scalars("test/acc")] == [8, 16]  # no step written twice
    assert [e.step for e in events.Scalars("train/loss")] == [8, 16]
    assert "config" in str(events.Tags()["tensors"])

    # the checkpoint is a single-process model's: the same keys, and it evaluates to the summary
    cfg = load_config(two_procs / "config.yaml")
    data = load_data(cfg.data)
    model = build_model(cfg.model, data.channels, data.image_size, data.num_classes)
    model.load_state_dict(weights(two_procs))
    assert weights(two_procs).keys() == weights(one).keys()
    result = evaluate(model, data.test, data, cfg.eval.batch_size, torch.device("cpu"))
    assert result["acc"] == s["test_acc"] and close(result["loss"], s["test_loss"], 1e-6)


def test_two_processes_compute_what_one_does(two_procs, tmp_path):
    # one optimizer step at a constant learning rate: the same gradient, up to float32 rounding
    step = ["data.per_class=8", "train.epochs=1", "train.schedule=constant"]  # 32 images: one batch
    a = train(SYNTH, step, out=tmp_path, name="a", quiet=True, nproc=1)
    b = train(SYNTH, step, out=tmp_path, name="b", quiet=True, nproc=2)
    assert b.summary["env"]["nproc"] == 2
    assert largest_relative_difference(weights(b.run_dir), weights(a.run_dir)) < 1e-6
    # a whole run: the same metrics up to rounding
    one = train(SYNTH, out=tmp_path, name="one", quiet=True)
    for r1, r2 in zip(metrics(one.run_dir), metrics(two_procs), strict=True):
        assert r1.keys() == r2.keys() and r1["epoch"] == r2["epoch"] and r1["lr"] == r2["lr"]
        for key in ("train_loss", "test_loss"):
            assert close(r1[key], r2[key], 1e-5), (key, r1, r2)
        assert abs(r1["test_acc"] - r2["test_acc"]) * 64 <= 1  # 64 test images
    assert largest_relative_difference(weights(two_procs), weights(one.run_dir)) < 1e-4


@pytest.fixture
def cifar_root(request):
    local = REPO / "data"
    if (local / "cifar-10-batches-py").is_dir():
        return local
    return request.getfixturevalue("real_cifar")  # converted from ../shared/data, or skipped


def test_real_cifar10_slice_two_processes_match_one_within_seed_noise(cifar_root, tmp_path):
    common = [f"data.root={cifar_root}", "data.per_class=100", "data.test_per_class=50", "train.epochs=2",
              "train.batch_size=100"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the JPEG copy's checksums
        one = train(CIFAR, common, out=tmp_path, name="one", quiet=True, nproc=1).summary
        other_seed = train(CIFAR, [*common, "seed=1"], out=tmp_path, name="seed1", quiet=True, nproc=1).summary
        two = train(CIFAR, common, out=tmp_path, name="two", quiet=True, nproc=2).summary
    assert two["status"] == "completed" and two["env"]["nproc"] == 2 and two["data"]["test"] == 500
    images = lambda s: round(s["test_acc"] * 500)  # noqa: E731
    assert abs(images(two) - images(one)) <= 3, (images(one), images(two))
    assert close(two["test_loss"], one["test_loss"], 1e-3)
    assert images(one) > 75  # learning: chance is 50 of 500
    print(f"test images right: nproc 1 {images(one)}, nproc 2 {images(two)}, seed 1 {images(other_seed)}")


def test_torchrun_starts_lrn_as_its_module_target(two_procs, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "--log-dir", str(tmp_path / "torchrun-logs"),
           "-m", "lrn_cli", "train", "-c", SYNTH, "--out", str(tmp_path), "--name", "tr", "--quiet"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(tmp_path / "tr")  # rank 0 alone prints it
    assert metrics(tmp_path / "tr") == metrics(two_procs)  # the same world, the same numbers
    assert runs.read_json(tmp_path / "tr" / "summary.json")["env"]["nproc"] == 2


def test_sigterm_to_the_parent_stops_every_rank_cleanly_then_resume(tmp_path):
    out = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "lrn_cli", "train", "-c", SYNTH, "--out", str(out), "--name", "r",
                             "--set", "train.epochs=30", "--nproc", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_dir = out / "r"
    deadline = time.time() + 120
    while time.time() < deadline and len(runs.read_jsonl(run_dir / "metrics.jsonl")) < 2:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "interrupted" in err and f"lrn train --resume {run_dir}" in err and "Traceback" not in err
    s = runs.read_json(run_dir / "summary.json")
    assert s["status"] == "interrupted" and s["signal"] == "SIGTERM"
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    done = len(runs.read_jsonl(run_dir / "metrics.jsonl"))
    assert ckpt["epoch"] == done and 2 <= done < 30

    # checkpoints are interchangeable: the rest of the run on one process ...
    shutil.copytree(run_dir, tmp_path / "copy")
    alone = train(resume=tmp_path / "copy", quiet=True, nproc=1)
    assert alone.summary["status"] == "completed" and alone.summary["env"]["nproc"] == 1
    # ... or on the two of the stored config
    assert train(resume=run_dir, quiet=True).summary["status"] == "completed"
    for folder in (run_dir, tmp_path / "copy"):
        s = runs.read_json(folder / "summary.json")
        assert s["status"] == "completed" and s["epochs"] == 30 and s["test_acc"] >= 0.9
        assert [r["epoch"] for r in runs.read_jsonl(folder / "metrics.jsonl")] == list(range(1, 31))
    assert runs.read_json(run_dir / "summary.json")["env"]["nproc"] == 2


def test_a_failing_worker_fails_the_run_without_hanging(tmp_path):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(  # rank 1 raises in its third step
        "import os\n"
        "from lrn_cli import engine\n"
        "real, calls = engine.crop_flip, [0]\n"
        "def crop_flip(*args, **kwargs):\n"
        "    calls[0] += 1\n"
        "    if os.environ.get('RANK') == '1' and calls[0] == 3:\n"
        "        raise ValueError('injected failure')\n"
        "    return real(*args, **kwargs)\n"
        "engine.crop_flip = crop_flip\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-m", "lrn_cli", "train", "-c", SYNTH, "--out", str(tmp_path),
                          "--name", "f", "--nproc", "2"], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 1, res.stderr
    assert "error: rank 1 failed: ValueError: injected failure" in res.stderr
    assert "sitecustomize.py" in res.stderr  # the worker's traceback
    s = runs.read_json(tmp_path / "f" / "summary.json")
    assert s["status"] == "failed" and s["error"] == "ValueError: injected failure"


@pytest.mark.parametrize("how", [["--nproc", "3"], ["--set", "train.nproc=3"]])
def test_a_batch_that_does_not_split_is_a_one_line_error_before_anything_is_written(tmp_path, how):
    res = run_cli("train", "-c", SYNTH, "--out", str(tmp_path / "out"), *how)
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("error: train.batch_size: the global batch of 32 does not split evenly")
    assert "--nproc 3" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()

