"""`lrn ablate --executor ray|slurm`: the same sweep, the same run directories and results as the
local executor, kill -9 and resume on a real local Ray instance, SIGTERM and resume, SLURM job
arrays through submitit's local executor (failures with their log, requeue on a time-out), and the
one-line errors when an extra or the cluster is missing."""
import csv
import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lrn_cli import executors, runs
from lrn_cli.config import load_config
from lrn_cli.errors import UserError
from lrn_cli.sweep import plan

from conftest import REPO, run_cli

SYNTH = str(REPO / "configs" / "synthetic.yaml")
METRICS = ("test_acc", "test_top5", "test_loss")


def write_spec(tmp_path: Path, **spec) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "base": SYNTH, **spec}))
    return path


def results(sweep: Path) -> dict[str, dict]:
    with open(sweep / "results.csv") as f:
        return {r["run_id"]: r for r in csv.DictReader(f)}


def same_results(a: Path, b: Path) -> None:
    """The two sweep directories hold the same runs with the same statuses and final metrics."""
    ra, rb = results(a), results(b)
    assert sorted(ra) == sorted(rb)
    for run_id, row in ra.items():
        assert row["status"] == rb[run_id]["status"], run_id
        for key in METRICS:  # the same config and threads train bit for bit the same on the CPU
            assert row[key] == rb[run_id][key], (run_id, key)
    dirs = lambda s: sorted(p.name for p in s.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert dirs(a) == dirs(b)


def session(sid: int) -> list[int]:
    """The live processes of a process session (zombies waiting for their reaper left out)."""
    out = subprocess.run(["ps", "-eo", "pid=,sid=,stat="], capture_output=True, text=True).stdout
    return [int(pid) for pid, s, stat in (line.split() for line in out.splitlines())
            if s == str(sid) and not stat.startswith("Z")]


def kill_session(sid: int) -> None:
    """SIGKILL whatever is left of a session (Ray's daemons, should they outlive the test)."""
    for pid in session(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_for(sweep: Path, planned: list, epochs: int, timeout: float = 240) -> list[str]:
    """Until one run has completed and another has a checkpoint mid-way -> the completed ones."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        statuses = {r.dir: runs.read_json(sweep / r.dir / "summary.json") for r in planned}
        done = [k for k, s in statuses.items() if s and s["status"] == "completed"]
        partial = [k for k, s in statuses.items() if s and s["status"] == "running" and 1 <= s["epochs"] <= epochs // 3]
        if done and partial:
            return done
        time.sleep(0.1)
    pytest.fail("the sweep never reached a mid-way state")


def every_run_completed_once(sweep: Path, planned: list, epochs: int) -> None:
    for r in planned:
        s = runs.read_json(sweep / r.dir / "summary.json")
        assert s["status"] == "completed" and s["epochs"] == epochs, (r.run_id, s)
        assert [m["epoch"] for m in runs.read_jsonl(sweep / r.dir / "metrics.jsonl")] == list(range(1, epochs + 1))
    rows = results(sweep)
    assert all(rows[r.run_id]["status"] == "completed" for r in planned)


def test_a_run_held_by_a_live_process_is_left_to_it_and_not_marked_failed(tmp_path):
    """What a SLURM job still running from an earlier, killed driver looks like to a new one."""
    path = write_spec(tmp_path, seeds=[0, 1], set={"train.epochs": 1})
    _, planned = plan(path)
    held = tmp_path / "out" / "s" / planned[0].dir
    held.mkdir(parents=True)
    with runs.locked(held, "the run"):
        res = run_cli("ablate", "--config", str(path), "--out", str(tmp_path / "out"), "--jobs", "1")
    assert res.returncode == 0, res.stderr
    assert "1 still running in another process, left to it" in res.stderr
    assert not (held / "summary.json").exists()  # untouched
    assert runs.read_json(tmp_path / "out" / "s" / planned[1].dir / "summary.json")["status"] == "completed"


# ----------------------------------------------------------------------------- Ray

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason='the Ray extra is not installed: pip install -e ".[ray]"')
RAY = ["--executor", "ray", "--ray-address", "local", "--cpus-per-run", "1"]


@needs_ray
@pytest.mark.slow
def test_ray_kill_9_then_the_same_command_finishes_every_run_once_with_the_local_results(tmp_path):
    path = write_spec(tmp_path, seeds=[0, 1], set={"train.epochs": 9, "data.per_class": 1000},
                      grid={"model.norm.size": [3, 5]})
    _, planned = plan(path)
    cmd = [sys.executable, "-m", "lrn_cli", "ablate", "--config", str(path), "--out", str(tmp_path / "ray"), *RAY]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    sweep = tmp_path / "ray" / "s"
    try:
        done = wait_for(sweep, planned, 9)
        os.killpg(proc.pid, signal.SIGKILL)  # the driver; Ray's daemons and the runs go with it
        proc.wait()
        deadline = time.time() + 30
        while session(proc.pid) and time.time() < deadline:
            time.sleep(0.2)
        assert not session(proc.pid), "Ray or a run outlived the killed driver"
    finally:
        kill_session(proc.pid)
    before = {k: (sweep / k / "summary.json").stat().st_mtime_ns for k in done}
    res = run_cli("ablate", "--config", str(path), "--out", str(tmp_path / "ray"), *RAY, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "started a local Ray instance" in res.stderr
    assert len(done) <= int(re.search(r"(\d+) already completed", res.stderr)[1]) < len(planned)
    for k in done:  # finished runs were not run again
        assert (sweep / k / "summary.json").stat().st_mtime_ns == before[k]
    every_run_completed_once(sweep, planned, 9)
    assert any("resuming at epoch" in (sweep / r.dir / "log.txt").read_text() for r in planned)

    res = run_cli("ablate", "--config", str(path), "--out", str(tmp_path / "local"), "--jobs", "2", timeout=600)
    assert res.returncode == 0, res.stderr  # 2 jobs on 2 cores: 1 thread per run, as --cpus-per-run 1
    same_results(sweep, tmp_path / "local" / "s")


@needs_ray
@pytest.mark.slow
def test_ray_sigterm_stops_runs_at_a_checkpoint_they_resume_and_a_failed_run_is_recorded(tmp_path):
    """The sweep starts with SIGINT ignored, as a process started in the background by a shell
    without job control is (nohup, `cmd &` in a script, CI runners): Ray cancels a task with a
    KeyboardInterrupt, which an ignored SIGINT used to swallow, so the runs trained on to the end."""
    epochs = 20  # epochs take under a second: time for the stop to land while the runs are under way
    path = write_spec(tmp_path, seeds=[0, 1], set={"train.epochs": epochs, "data.per_class": 1000}, variants={
        "base": {}, "crashes": {"data.image_size": 8, "model.layers.3.pool.kernel": 9}})
    _, planned = plan(path)
    ok = [r for r in planned if r.label == "base"]
    cmd = [sys.executable, "-m", "lrn_cli", "ablate", "--config", str(path), "--out", str(tmp_path / "out"), *RAY]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    sweep = tmp_path / "out" / "s"
    try:
        deadline = time.time() + 240
        while time.time() < deadline:  # a run under way
            s = [runs.read_json(sweep / r.dir / "summary.json") for r in ok]
            if any(x and x["status"] == "running" and 1 <= x["epochs"] < 5 for x in s):
                break
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        kill_session(proc.pid)
    assert proc.returncode == 143, err
    statuses = {r.dir: runs.read_json(sweep / r.dir / "summary.json") for r in ok}
    assert "interrupted" in {s["status"] for s in statuses.values() if s}, statuses
    assert all((sweep / k / "checkpoint.pt").exists() for k, s in statuses.items() if s and s["status"] == "interrupted")
    res = run_cli("ablate", "--config", str(path), "--out", str(tmp_path / "out"), *RAY, timeout=600)
    assert res.returncode == 1, res.stderr  # the crashing runs failed; the others completed
    every_run_completed_once(sweep, ok, epochs)
    for r in planned:
        if r.label == "crashes":
            s = runs.read_json(sweep / r.dir / "summary.json")
            assert s["status"] == "failed" and "does not fit" in Path(s["log"]).read_text()
    assert "failed; see" in res.stderr


@needs_ray
def test_ray_refuses_a_sweep_directory_that_a_node_cannot_see(tmp_path):
    class Task:  # a node that reads nothing there: what one without the shared mount does
        def options(self, **kw):
            return self

        def remote(self, path, token):
            return ("node-7", False)

    class FakeRay:
        def remote(self, **kw):
            return lambda fn: Task()

        def get(self, ref, timeout=None):
            return ref

    ex = executors.Ray.__new__(executors.Ray)
    ex.ray = FakeRay()
    with pytest.raises(UserError, match=r"not visible from Ray node\(s\) node-7; put --out on storage"):
        ex.check_shared(tmp_path, [{"NodeID": "ab" * 28, "NodeManagerAddress": "10.0.0.7"}])
    assert not list(tmp_path.glob(".probe-*"))  # the probe file is cleaned up


# ----------------------------------------------------------------------------- SLURM (submitit)

needs_submitit = pytest.mark.skipif(importlib.util.find_spec("submitit") is None,
                                    reason='the SLURM extra is not installed: pip install -e ".[slurm]"')
SLURM_LOCAL = ["--executor", "slurm", "--slurm-cluster", "local", "--cpus-per-run", "1", "--jobs", "2"]


@needs_submitit
@pytest.mark.slow
def test_slurm_array_through_submitit_gives_the_local_executors_results_directory(tmp_path):
    path = write_spec(tmp_path, seeds=[0, 1], set={"train.epochs": 2}, grid={"model.norm.size": [3, 5]},
                      variants={"crashes": {"data.image_size": 8, "model.layers.3.pool.kernel": 9}})
    res = run_cli("ablate", "--config", str(path), "--out", str(tmp_path / "slurm"), *SLURM_LOCAL, timeout=600)
    assert res.returncode == 1, res.stderr  # the crashing variant fails; the others complete
    local = run_cli("ablate", "--config", str(path), "--out", str(tmp_path / "local"), "--jobs", "2", timeout=600)
    assert local.returncode == 1, local.stderr
    sweep = tmp_path / "slurm" / "s"
    same_results(sweep, tmp_path / "local" / "s")
    failed = [runs.read_json(p) for p in sweep.glob("*/summary.json") if runs.read_json(p)["status"] == "failed"]
    assert len(failed) == 2 and all(Path(f["log"]).exists() for f in failed)
    assert "does not fit" in Path(failed[0]["log"]).read_text()
    assert "failed; see" in res.stderr and (sweep / ".submitit").is_dir()
    # the same command again: completed runs are skipped, the failed ones are retried (and fail again)
    again = run_cli("ablate", "--config", str(path), "--out", str(tmp_path / "slurm"), *SLURM_LOCAL, timeout=600)
    assert again.returncode == 1 and "4 already completed, 2 to run" in again.stderr


@needs_submitit
@pytest.mark.slow
def test_a_slurm_job_that_times_out_is_requeued_and_its_run_resumes(tmp_path):
    """submitit's time-out signal (USR2) makes the run checkpoint, and the requeued job resumes it."""
    import submitit

    run_dir = tmp_path / "r"
    run_dir.mkdir()
    cfg = load_config(SYNTH, ["train.epochs=12", "data.per_class=1000", "train.threads=1"])
    runs.write_text(run_dir / "config.yaml", cfg.to_yaml())  # what the sweep prepares for a job
    ex = submitit.AutoExecutor(folder=tmp_path / "jobs" / "%j", cluster="local")
    ex.update_parameters(timeout_min=10)
    job = ex.submit(executors.TrainJob(die_with_parent=False), str(run_dir))
    deadline = time.time() + 120
    while time.time() < deadline:
        s = runs.read_json(run_dir / "summary.json")
        if s and s["epochs"] >= 2:
            break
        time.sleep(0.1)
    # what SLURM sends every process of the job ahead of its time limit (or on preemption); here
    # to submitit's task (our TrainJob) and the run under it, as job._interrupt() would if it
    # reached past submitit's local controller
    task = subprocess.run(["pgrep", "-P", str(job._process.pid)], capture_output=True, text=True).stdout.split()
    run = subprocess.run(["pgrep", "-P", task[0]], capture_output=True, text=True).stdout.split()
    for pid in task + run:
        os.kill(int(pid), signal.SIGUSR2)
    result = job.result()
    assert result["returncode"] == 0
    s = runs.read_json(run_dir / "summary.json")
    assert s["status"] == "completed" and s["epochs"] == 12
    assert [m["epoch"] for m in runs.read_jsonl(run_dir / "metrics.jsonl")] == list(range(1, 13))
    assert "resuming at epoch" in (run_dir / "log.txt").read_text()
    assert "Caught signal SIGUSR2" in job.stderr()


@needs_submitit
def test_slurm_without_sbatch_is_a_one_line_error_and_writes_nothing(tmp_path, monkeypatch):
    path = write_spec(tmp_path)
    monkeypatch.setenv("PATH", "/nonexistent")
    res = subprocess.run([sys.executable, "-m", "lrn_cli", "ablate", "--config", str(path), "--out",
                          str(tmp_path / "out"), "--executor", "slurm"], capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "error: --executor slurm: no sbatch on this machine; run lrn ablate on a SLURM login node "
        "(or try the array here with --slurm-cluster local)"]
    assert not (tmp_path / "out" / "s").exists()


@pytest.mark.parametrize("module, extra", [("ray", "ray"), ("submitit", "slurm")])
def test_a_missing_extra_names_the_install_command(tmp_path, module, extra):
    fake = tmp_path / "fake" / module
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(f"raise ImportError('no {module} here')\n")
    path = write_spec(tmp_path)
    executor = "ray" if module == "ray" else "slurm"
    res = subprocess.run([sys.executable, "-m", "lrn_cli", "ablate", "--config", str(path), "--out",
                          str(tmp_path / "out"), "--executor", executor], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(tmp_path / "fake")})
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f'error: --executor {executor} needs {module.capitalize() if module == "ray" else module}; '
        f'install it with: pip install "lrn-runner[{extra}]"']
    assert not (tmp_path / "out" / "s").exists()


def test_bad_cluster_section_names_the_key(tmp_path):
    path = write_spec(tmp_path, cluster={"cpus": 4})
    res = run_cli("ablate", "--config", str(path), "--out", str(tmp_path / "out"), "--dry-run")
    assert res.returncode == 2
    assert "unknown key 'cluster.cpus'" in res.stderr and "cpus_per_run" in res.stderr
