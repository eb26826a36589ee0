"""`lrn ablate` and `lrn report`: spec expansion, validation, running, resume after kill -9,
the lock, the statistics, and the HParams data as TensorBoard itself reads them."""
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lrn_cli import layout, runs, sweep as sweep_mod
from lrn_cli.errors import UserError
from lrn_cli.report import holm, report, stats, welch_p
from lrn_cli.sweep import SWEEP_FILE, plan

from conftest import REPO, run_cli

SYNTH = str(REPO / "configs" / "synthetic.yaml")


def csv_rows(sweep: Path) -> list[dict]:
    import csv

    with open(sweep / "results.csv") as f:
        return list(csv.DictReader(f))


def write_spec(tmp_path: Path, **spec) -> Path:
    spec = {"name": "s", "base": SYNTH, **spec}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_grid_zip_variants_and_seeds_expand_to_the_product(tmp_path):
    path = write_spec(tmp_path, seeds=[0, 1], grid={"model.norm.size": [3, 5, 7], "model.norm.alpha": [1e-4, 1e-3]},
                      zip={"train.lr": [0.1, 0.05], "train.batch_size": [16, 32]},
                      variants={"bn": {"model.norm.type": "batchnorm"}}, baseline="bn")
    spec, rs = plan(path)
    assert len(rs) == (3 * 2 * 2 + 1) * 2
    grid = [r for r in rs if not r.variant]
    assert {(r.config["train"]["lr"], r.config["train"]["batch_size"]) for r in grid} == {(0.1, 16), (0.05, 32)}
    assert {r.config["model"]["norm"]["size"] for r in grid} == {3, 5, 7}
    bn = [r for r in rs if r.label == "bn"]
    assert len(bn) == 2 and bn[0].group == bn[1].group and bn[0].run_id != bn[1].run_id
    assert all(r.config["seed"] == r.seed for r in rs)
    assert len({r.run_id for r in rs}) == len(rs)


def test_random_points_are_seeded_and_inside_the_space(tmp_path):
    space = {"model.norm.beta": {"uniform": [0.5, 1.0]}, "model.norm.alpha": {"loguniform": [1e-6, 1e-2]},
             "model.norm.size": {"choice": [3, 5]}}
    path = write_spec(tmp_path, random={"n": 6, "seed": 3, "space": space})
    _, a = plan(path)
    _, b = plan(path)
    assert [r.point for r in a] == [r.point for r in b] and len(a) == 6
    for r in a:
        assert 0.5 <= r.point["model.norm.beta"] <= 1.0 and 1e-6 <= r.point["model.norm.alpha"] <= 1e-2
        assert r.point["model.norm.size"] in (3, 5)
    _, c = plan(write_spec(tmp_path, random={"n": 6, "seed": 4, "space": space}))
    assert [r.point for r in c] != [r.point for r in a]


def test_points_that_resolve_to_one_config_run_once(tmp_path):
    # the LRN size means nothing without LRN: three sizes x none is one network per seed
    path = write_spec(tmp_path, seeds=[0, 1], grid={"model.norm.size": [3, 5, 7], "model.norm.type": ["lrn", "none"]},
                      variants={"plain": {"model.norm.type": "none"}})
    _, rs = plan(path)
    assert len(rs) == (3 + 1) * 2
    assert len([r for r in rs if r.config["model"]["norm"]["type"] == "none"]) == 2


@pytest.mark.parametrize("spec, needle", [
    ({"gird": {"seed": [1]}}, "unknown key 'gird' (did you mean 'grid'?)"),
    ({"grid": {}}, "the grid is empty"),
    ({"grid": {"model.norm.size": []}}, "'model.norm.size' has no values"),
    ({"zip": {"train.lr": [0.1, 0.2], "train.epochs": [1]}}, "one length"),
    ({"random": {"n": 2, "space": {"train.lr": {"loguniform": [0, 1]}}}}, "loguniform needs low > 0"),
    ({"variants": {"v": {}}, "baseline": "nope"}, "baseline 'nope' is not a point"),
    ({"base": "missing.yaml"}, "base: no such file"),
    ({"grid": {"model.norm.alpha": [1e-4, -1.0]}}, "point 'model.norm.alpha=-1' (seed 0): model.norm.alpha must be"),
    ({"grid": {"model.norm.alpah": [1e-4]}}, "unknown key 'model.norm.alpah' (did you mean 'alpha'?)"),
    ({"seeds": []}, "seeds"),
    ({"seeds": ["1", 2.0]}, "seeds.0: Input should be a valid integer (got '1'); seeds.1: Input should be"),
    ({"seeds": [True]}, "seeds.0: Input should be a valid integer"),
    ({"random": {"n": 2.0, "space": {"train.lr": {"uniform": [0.1, 0.2]}}}}, "random.n: Input should be"),
])
def test_bad_specs_fail_up_front_naming_the_key_and_point(tmp_path, spec, needle):
    with pytest.raises(UserError) as e:
        plan(write_spec(tmp_path, **spec))
    assert needle in str(e.value)


def test_bad_spec_through_the_cli_writes_nothing(tmp_path):
    path = write_spec(tmp_path, grid={"model.norm.size": [3, 0]})
    res = run_cli("ablate", "--config", str(path), "--out", str(tmp_path / "out"))
    assert res.returncode == 2 and res.stderr.startswith("error: ") and "Traceback" not in res.stderr
    assert "model.norm.size" in res.stderr and not (tmp_path / "out").exists()


def test_a_second_sweep_on_a_locked_directory_refuses(tmp_path):
    path = write_spec(tmp_path, variants={"a": {}})
    out = tmp_path / "out"
    (out / "s").mkdir(parents=True)
    with runs.locked(out / "s", "this sweep directory"):
        res = run_cli("ablate", "--config", str(path), "--out", str(out))
    assert res.returncode == 2 and "in use by another lrn process" in res.stderr
    assert not (out / "s" / SWEEP_FILE).exists()


def test_dry_run_prints_the_table_and_runs_nothing(tmp_path):
    path = write_spec(tmp_path, seeds=[0, 1], grid={"model.norm.size": [3, 5]})
    res = run_cli("ablate", "--config", str(path), "--out", str(tmp_path / "out"), "--dry-run")
    assert res.returncode == 0 and "4 runs" in res.stdout and res.stdout.count("pending") == 4
    assert "model.norm.size=5" in res.stdout and not (tmp_path / "out" / "s").exists()


def test_seeds_that_are_not_ints_are_a_one_line_error_naming_the_key(tmp_path):
    path = write_spec(tmp_path, seeds=["1", 2.0])  # the config itself takes neither as a seed
    res = run_cli("ablate", "--config", str(path), "--out", str(tmp_path / "out"), "--dry-run")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert res.stderr.startswith(f"error: {path}: seeds.0: ") and "seeds.1" in res.stderr


def test_run_directories_are_named_after_the_point_its_seed_and_hash(tmp_path):
    path = write_spec(tmp_path, seeds=[0, 1], grid={"model.norm.size": [3], "model.norm.alpha": [1e-4, 0.01]},
                      variants={"no_lrn": {"model.norm.type": "none"}, "odd name/with spaces": {"train.lr": 0.1}})
    _, rs = plan(path)
    for r in rs:
        assert re.fullmatch(r"[A-Za-z0-9_.-]{1,80}", r.dir) and r.dir.endswith(f"-s{r.seed}-{r.run_id}")
    assert sorted(r.dir.rsplit("-", 1)[0] for r in rs) == [
        "alpha0.0001_size3-s0", "alpha0.0001_size3-s1", "alpha0.01_size3-s0", "alpha0.01_size3-s1",
        "no_lrn-s0", "no_lrn-s1", "odd_name_with_spaces-s0", "odd_name_with_spaces-s1"]  # the spec's key order
    res = run_cli("ablate", "--config", str(path), "--out", str(tmp_path / "out"), "--dry-run")
    assert "alpha0.01_size3-s1-" in res.stdout and "no_lrn-s0-" in res.stdout
    # keys that end alike keep enough of their path to tell apart; strings and long points stay safe
    assert layout.describe({"model.layers.0.conv.out": 8, "model.layers.4.conv.out": 16,
                            "model.norm.convention": "caffe"}, None) == "0.conv.out8_4.conv.out16_convention.caffe"
    long = layout.describe({f"train.k{i}": 1e-4 for i in range(20)}, None)
    assert len(long) <= layout.MAX_WHAT and re.fullmatch(r"[A-Za-z0-9_.-]+", long) and long[-1] not in "._-"
    assert layout.describe({}, None) == "base" and layout.describe({}, "...") == "base"


def test_a_sweep_made_with_bare_hash_names_resumes_in_those_directories(tmp_path):
    """What a sweep made before readable names looks like: each run directory named by the bare
    config hash of its day (Config.legacy_hash), sweep.json without directory names."""
    path = write_spec(tmp_path, seeds=[0, 1], set={"train.epochs": 1})
    out = tmp_path / "out"
    assert run_cli("ablate", "--config", str(path), "--out", str(out), "--quiet").returncode == 0
    sweep = out / "s"
    _, rs = plan(path)
    table = json.loads((sweep / SWEEP_FILE).read_text())
    for r, row in zip(rs, table["runs"]):
        assert r.legacy and row["dir"] == r.dir
        (sweep / r.dir).rename(sweep / r.legacy)
        row.update(run_id=r.legacy, group="old-" + row["group"])
        del row["dir"], row["legacy"]
    runs.write_json(sweep / SWEEP_FILE, table)
    assert run_cli("report", str(sweep)).returncode == 0  # the old table reads its bare-hash runs
    assert {r["run_dir"] for r in csv_rows(sweep)} == {r.legacy for r in rs}
    (sweep / rs[1].legacy / "summary.json").unlink()  # as if it had not run yet
    before = (sweep / rs[0].legacy / "summary.json").stat().st_mtime_ns
    res = run_cli("ablate", "--config", str(path), "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "2 runs, 1 already completed, 1 to run" in res.stderr and f"started {rs[1].legacy}" in res.stderr
    assert (sweep / rs[0].legacy / "summary.json").stat().st_mtime_ns == before
    assert runs.read_json(sweep / rs[1].legacy / "summary.json")["status"] == "completed"
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir() and p.name != "plots") == sorted(r.legacy for r in rs)
    assert {r["run_dir"]: r["status"] for r in csv_rows(sweep)} == {r.legacy: "completed" for r in rs}
    # a readable directory, where there is one, comes first; a config the old code could not make has none
    (sweep / rs[0].dir).mkdir()
    assert layout.locate(sweep, rs[0].dir, rs[0].legacy) == rs[0].dir
    assert layout.locate(sweep, rs[1].dir, rs[1].legacy) == rs[1].legacy
    assert layout.locate(sweep, rs[1].dir, None) == layout.locate(tmp_path, rs[1].dir, rs[1].legacy) == rs[1].dir


def test_the_base_config_is_read_once_for_every_point_and_seed(tmp_path, monkeypatch):
    path = write_spec(tmp_path, seeds=[0, 1, 2], grid={"model.norm.size": [3, 5], "model.norm.alpha": [1e-4, 1e-3]},
                      variants={"none": {"model.norm.type": "none"}})
    reads = []
    real = sweep_mod.read_yaml
    monkeypatch.setattr(sweep_mod, "read_yaml", lambda p: reads.append(Path(p).name) or real(p))
    _, rs = plan(path)
    assert len(rs) == 15 and reads == ["spec.yaml", "synthetic.yaml"]
    assert {r.config["seed"] for r in rs} == {0, 1, 2} and len({r.group for r in rs}) == 5


def test_a_run_that_only_diverged_fails_the_sweep_and_its_last_line_says_so(tmp_path):
    path = write_spec(tmp_path, set={"train.epochs": 1}, variants={
        "ok": {}, "diverges": {"train.lr": 1.0e30, "train.schedule": "constant"}})
    res = run_cli("ablate", "--config", str(path), "--out", str(tmp_path / "out"), "--jobs", "2")
    assert res.returncode == 1, res.stderr  # as `lrn train` of a diverging config
    assert res.stderr.strip().splitlines()[-1] == "sweep not completed: 1 of 2 runs completed, 1 diverged (exit code 1)"
    quiet = run_cli("ablate", "--config", str(path), "--out", str(tmp_path / "out"), "--quiet")
    assert quiet.returncode == 1 and quiet.stderr.strip().splitlines()[-1].startswith("sweep not completed")


def test_sweep_exit_codes_and_last_lines():
    S, busy = runs.Status, "busy"
    assert sweep_mod.conclusion([S.COMPLETED] * 3, None, []) == (0, "all 3 runs completed")
    assert sweep_mod.conclusion([S.COMPLETED, busy], None, []) == (
        0, "1 of 2 runs completed, 1 still running in another process")
    assert sweep_mod.conclusion([S.COMPLETED, S.FAILED, S.DIVERGED, S.INTERRUPTED], None, [None])[0] == 1
    assert sweep_mod.conclusion([S.COMPLETED, S.INTERRUPTED], None, ["SIGTERM"])[0] == 143
    code, last = sweep_mod.conclusion([S.COMPLETED, S.FAILED, S.PENDING], "SIGINT", [])
    assert code == 130 and last == "sweep interrupted by SIGINT: 1 of 3 runs completed; the same command resumes it"
    ends = [(S.COMPLETED, None), (S.FAILED, None), (S.DIVERGED, None), (S.INTERRUPTED, None), (S.INTERRUPTED, "SIGTERM")]
    assert [runs.exit_code(s, sig) for s, sig in ends] == [0, 1, 1, 130, 143]


def test_sigterm_stops_a_local_sweep_with_runs_still_queued_and_exits_143(tmp_path):
    path = write_spec(tmp_path, seeds=[0, 1, 2], set={"train.epochs": 6, "data.per_class": 400})
    _, rs = plan(path)
    cmd = [sys.executable, "-m", "lrn_cli", "ablate", "--config", str(path), "--out", str(tmp_path / "out"),
           "--jobs", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    sweep = tmp_path / "out" / "s"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:  # the first run under way, the two others queued
            s = runs.read_json(sweep / rs[0].dir / "summary.json")
            if s and s["epochs"] >= 1:
                break
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=120)  # it used to wait for the queued runs for ever
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == \
        "sweep interrupted by SIGTERM: 0 of 3 runs completed; the same command resumes it"
    assert runs.read_json(sweep / rs[0].dir / "summary.json")["status"] == "interrupted"
    assert not (sweep / rs[2].dir / "summary.json").exists()


def test_sweep_report_and_tensorboard_modules_import_one_another_without_a_cycle():
    """The sweep directory's layout sits in layout.py, below the three (imports inside functions count)."""
    import ast

    names = ("sweep", "report", "tb", "layout", "runs", "executors")
    graph = {}
    for name in names:
        path = REPO / "lrn_cli" / f"{name}.py"
        tree = ast.parse(path.read_text() if path.exists() else "")
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                found |= {node.module} if node.module else {a.name for a in node.names}
        graph[name] = found & set(names)

    def reaches(a: str, b: str, seen: frozenset = frozenset()) -> bool:
        return any(n == b or (n not in seen and reaches(n, b, seen | {n})) for n in graph[a])

    assert [n for n in names if reaches(n, n)] == [], graph


def test_cores_are_the_ones_this_process_may_run_on_everywhere(monkeypatch):
    """Inside a SLURM allocation (or under taskset) the affinity is a few of the machine's cores."""
    from lrn_cli import distributed, executors
    from lrn_cli.data import folder

    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert sweep_mod.default_jobs() == 2 and executors.Local(2).threads == 2
    assert distributed.threads(0, distributed.World(0, 2, 0, 2, True)) == 2
    assert folder.worker_count(10**6) == 4


def test_failed_and_diverged_runs_are_recorded_and_the_others_go_on(tmp_path):
    path = write_spec(tmp_path, set={"train.epochs": 1}, variants={
        "ok": {}, "diverges": {"train.lr": 1.0e30, "train.schedule": "constant"},
        "crashes": {"data.image_size": 8, "model.layers.3.pool.kernel": 9}})  # fails when the model is built
    res = run_cli("ablate", "--config", str(path), "--out", str(tmp_path / "out"), "--jobs", "2")
    assert res.returncode == 1, res.stderr
    rows = csv_rows(tmp_path / "out" / "s")
    status = {r["label"]: r["status"] for r in rows}
    assert status == {"ok": "completed", "diverges": "diverged", "crashes": "failed"}
    md = (tmp_path / "out" / "s" / "results.md").read_text()
    assert "Not completed" in md and "crashes, seed 0: failed" in md
    assert any("does not fit" in p.read_text() for p in (tmp_path / "out" / "s").glob("*/log.txt"))


def test_kill_9_then_the_same_command_finishes_every_run_exactly_once(tmp_path):
    path = write_spec(tmp_path, seeds=[0, 1], set={"train.epochs": 8, "data.per_class": 400},
                      grid={"model.norm.size": [3, 5]})
    out = tmp_path / "out"
    _, planned = plan(path)
    cmd = [sys.executable, "-m", "lrn_cli", "ablate", "--config", str(path), "--out", str(out), "--jobs", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    sweep = out / "s"
    deadline = time.time() + 240
    while time.time() < deadline:  # until one run is done and another has a checkpoint mid-way
        statuses = {r.dir: runs.read_json(sweep / r.dir / "summary.json") for r in planned}
        done = [k for k, s in statuses.items() if s and s["status"] == "completed"]
        partial = [k for k, s in statuses.items() if s and s["status"] == "running" and s["epochs"] >= 1]
        if done and partial:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the sweep never reached a mid-way state")
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its workers, at once
    proc.wait()
    time.sleep(0.5)
    before = {k: (sweep / k / "summary.json").stat().st_mtime_ns for k in done}
    res = run_cli("ablate", "--config", str(path), "--out", str(out), "--jobs", "2", timeout=600)
    assert res.returncode == 0, res.stderr
    assert f"{len(done)} already completed" in res.stderr
    for k in done:  # finished runs were not run again
        assert (sweep / k / "summary.json").stat().st_mtime_ns == before[k]
    for r in planned:
        s = runs.read_json(sweep / r.dir / "summary.json")
        assert s["status"] == "completed" and s["epochs"] == 8
        epochs = [m["epoch"] for m in runs.read_jsonl(sweep / r.dir / "metrics.jsonl")]
        assert epochs == list(range(1, 9))  # nothing duplicated, nothing lost
    rows = csv_rows(sweep)
    assert sorted(r["run_id"] for r in rows) == sorted(r.run_id for r in planned)
    assert all(r["status"] == "completed" for r in rows)
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir() and p.name != "plots") == \
        sorted(r.dir for r in planned)


def fake_sweep(tmp_path: Path, accs: dict[str, list[float]], baseline: str) -> Path:
    """A sweep directory with hand-chosen final accuracies (one group per label)."""
    sweep = tmp_path / "fake"
    sweep.mkdir()
    plan_runs = []
    for label, values in accs.items():
        for seed, acc in enumerate(values):
            run_id = f"{label}-{seed}"
            (sweep / run_id).mkdir()
            runs.write_json(sweep / run_id / "summary.json", {
                "status": "completed", "test_acc": acc, "test_top5": 0.99, "test_loss": 1 - acc,
                "wall_time_s": 10.0, "images_per_s": 100.0, "epochs": 1})
            runs.write_jsonl(sweep / run_id / "metrics.jsonl", [{"epoch": 1, "test_acc": acc, "train_loss": 1.0}])
            plan_runs.append({"run_id": run_id, "group": label, "label": label, "point": {"x": label},
                              "variant": True, "seed": seed, "config": {"x": label}})
    runs.write_json(sweep / SWEEP_FILE, {"name": "fake", "baseline": baseline, "swept": ["x"], "runs": plan_runs})
    return sweep


def test_statistics_against_hand_computed_values(tmp_path):
    a, b, c = [0.80, 0.82, 0.84], [0.70, 0.71, 0.75], [0.79, 0.81]
    table = {e["label"]: e for e in report(fake_sweep(tmp_path, {"base": a, "b": b, "c": c}, "base"))["table"]}
    # mean, sample std and the t interval, by hand: t(0.975, 2) = 4.302652729911275
    s = table["base"]["test_acc"]
    assert s["mean"] == pytest.approx(0.82) and s["std"] == pytest.approx(0.02)
    assert s["lo"] == pytest.approx(0.82 - 4.302652729911275 * 0.02 / math.sqrt(3))
    # Welch: t = (mb - ma) / sqrt(va/na + vb/nb), df by Welch-Satterthwaite, p from the t cdf
    va, vb = 0.02 ** 2, sum((x - 0.72) ** 2 for x in b) / 2
    t = (0.72 - 0.82) / math.sqrt(va / 3 + vb / 3)
    df = (va / 3 + vb / 3) ** 2 / ((va / 3) ** 2 / 2 + (vb / 3) ** 2 / 2)
    from scipy.special import stdtr

    p_b = 2 * stdtr(df, -abs(t))
    assert table["b"]["p"] == pytest.approx(p_b, rel=1e-9)
    assert welch_p(b, a) == pytest.approx(p_b, rel=1e-9)
    # Holm over the two comparisons: the smaller p times 2, the larger times 1 (kept monotone)
    p_c = table["c"]["p"]
    lo_p, hi_p = sorted([p_b, p_c])
    assert sorted([table["b"]["p_holm"], table["c"]["p_holm"]]) == pytest.approx([2 * lo_p, max(2 * lo_p, hi_p)])
    assert table["base"]["p"] is None and table["base"]["best"] and not table["b"]["best"]
    md = (tmp_path / "fake" / "results.md").read_text()
    assert "| **base** (best) (baseline) | 3 | 82.00 ± 2.00 |" in md
    assert stats([0.5])["std"] is None and stats([]) ["mean"] is None
    assert holm({"x": 0.01, "y": 0.04, "z": 0.03}) == pytest.approx({"x": 0.03, "y": 0.06, "z": 0.06})
    for plot in ("configs.png", "curves_test_acc.png", "curves_train_loss.png"):
        assert (tmp_path / "fake" / "plots" / plot).stat().st_size > 5000


def test_partial_sweep_report_marks_what_is_missing(tmp_path):
    sweep = fake_sweep(tmp_path, {"base": [0.8, 0.82], "b": [0.7, 0.72]}, "base")
    (sweep / "b-1" / "summary.json").unlink()
    runs.write_json(sweep / "b-0" / "summary.json", {"status": "interrupted", "epochs": 1})
    res = run_cli("report", str(sweep))
    assert res.returncode == 0
    assert "| b | 0/2 | — |" in res.stdout and "`b-1` b, seed 1: missing" in res.stdout
    assert "2 of 4 runs not completed" in res.stderr


def test_a_running_summary_without_a_live_process_is_an_interrupted_run(tmp_path):
    """A run whose process crashed, was killed or hit a full disk still says `running`: no reader
    takes it for a live one, while one that a process holds is."""
    sweep = fake_sweep(tmp_path, {"base": [0.8, 0.82], "b": [0.7, 0.72]}, "base")
    runs.write_json(sweep / "b-0" / "summary.json", {"status": "running", "epochs": 3})
    runs.write_json(sweep / "b-1" / "summary.json", {"status": "running", "epochs": 1})
    with runs.locked(sweep / "b-1", "the run"):
        res = run_cli("report", str(sweep))
    assert res.returncode == 0
    assert "`b-0` b, seed 0: interrupted" in res.stdout and "`b-1` b, seed 1: running" in res.stdout
    assert {r["run_id"]: r["status"] for r in csv_rows(sweep)}["b-0"] == "interrupted"
    with runs.locked(sweep / "b-1", "the run"):
        assert runs.run_status(sweep / "b-1") == "running"
    assert runs.run_status(sweep / "b-1") == runs.Status.INTERRUPTED == "interrupted"
    assert runs.run_status(sweep / "missing") == "pending" and not (sweep / "missing").exists()


def test_a_p_value_of_two_configs_that_do_not_vary_is_undefined_not_zero(tmp_path):
    sweep = fake_sweep(tmp_path, {"base": [0.75] * 3, "b": [0.5] * 3, "c": [0.25, 0.375, 0.5]}, "base")
    table = {e["label"]: e for e in report(sweep)["table"]}
    assert math.isnan(table["b"]["p"]) and math.isnan(table["b"]["p_holm"])
    assert table["c"]["p_holm"] == pytest.approx(table["c"]["p"])  # the undefined one is no test in the family
    assert math.isnan(welch_p([0.5, 0.5], [0.5, 0.5])) and welch_p([0.5], [0.6, 0.7]) is None
    res = run_cli("report", str(sweep))
    line = next(x for x in res.stdout.splitlines() if x.startswith("| b |"))
    # p, Holm, and no detectable difference where no seed varies
    assert line.endswith("| n/a (zero variance) | n/a (zero variance) | — | — |") and "1e-4" not in line
    assert "n/a (zero variance): the config's seeds all gave one test top-1" in res.stdout


def read_hparams(logdir: Path):
    """Session groups as TensorBoard's HParams plugin computes them from the event files."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import api_pb2, backend_context, list_session_groups

    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(logdir))
    mux.Reload()
    tbc = base_plugin.TBContext(logdir=str(logdir), multiplexer=mux,
                                data_provider=data_provider.MultiplexerDataProvider(mux, str(logdir)))
    ctx = backend_context.Context(tbc)
    rc = context.RequestContext()
    experiment = ctx.experiment_from_metadata(rc, "", include_metrics=True,
                                              hparams_run_to_tag_to_content=ctx.hparams_metadata(rc, ""),
                                              data_provider_hparams=ctx.hparams_from_data_provider(rc, "", 100))
    request = api_pb2.ListSessionGroupsRequest(
        start_index=0, slice_size=100, aggregation_type=api_pb2.AGGREGATION_AVG,
        allowed_statuses=[api_pb2.STATUS_UNKNOWN, api_pb2.STATUS_SUCCESS, api_pb2.STATUS_FAILURE,
                          api_pb2.STATUS_RUNNING])
    return experiment, list_session_groups.Handler(rc, ctx, "", request).run().session_groups


def test_sweep_end_to_end_and_hparams_read_back_by_tensorboard(tmp_path):
    path = write_spec(tmp_path, seeds=[0, 1], set={"train.epochs": 1},
                      grid={"model.norm.alpha": [1e-4, 1e-2]}, variants={"none": {"model.norm.type": "none"}},
                      baseline="none")
    res = run_cli("ablate", "--config", str(path), "--out", str(tmp_path / "out"), "--jobs", "2", timeout=600)
    assert res.returncode == 0, res.stderr
    sweep = tmp_path / "out" / "s"
    assert res.stdout.strip() == str(sweep / "results.md")
    experiment, groups = read_hparams(sweep)
    assert [h.name for h in experiment.hparam_infos] == ["model.norm.alpha", "model.norm.type"]
    assert {m.name.tag for m in experiment.metric_infos} >= {"test/acc", "test/top5", "test/loss"}
    assert len(groups) == 3 and all(len(g.sessions) == 2 for g in groups)  # seeds grouped
    _, rs = plan(path)
    # TensorBoard's run list: each run by what it is, its seed and hash, not a bare hash
    from tensorboard.backend.event_processing import plugin_event_multiplexer

    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(sweep))
    assert set(mux.Runs()) - {"."} == {r.dir for r in rs}
    assert sorted(r.dir.rsplit("-", 1)[0] for r in rs) == [
        "alpha0.0001-s0", "alpha0.0001-s1", "alpha0.01-s0", "alpha0.01-s1", "none-s0", "none-s1"]
    assert {g.name.rsplit("-", 1)[0] for g in groups} == {"alpha0.0001", "alpha0.01", "none"}  # HParams' trial ids
    assert {s.name for g in groups for s in g.sessions} == {r.dir for r in rs}
    for g in groups:
        members = [r for r in rs if g.name.endswith("-" + r.group)]
        assert len(members) == 2
        assert g.hparams["model.norm.type"].string_value == members[0].config["model"]["norm"]["type"]
        accs = [runs.read_json(sweep / r.dir / "summary.json")["test_acc"] for r in members]
        value = {m.name.tag: m.value for m in g.metric_values}["test/acc"]
        assert value == pytest.approx(sum(accs) / 2, abs=1e-6)  # the dashboard's mean of the seeds
        assert all(s.status == 1 for s in g.sessions)  # STATUS_SUCCESS
    # reporting again rewrites the same files: nothing is duplicated
    assert run_cli("report", str(sweep)).returncode == 0
    _, again = read_hparams(sweep)
    assert len(again) == 3 and all(len(g.sessions) == 2 for g in again)
    assert (sweep / "spec.yaml").read_text() == path.read_text()
    # the same command again: everything is done already
    res2 = run_cli("ablate", "--config", str(path), "--out", str(tmp_path / "out"), "--quiet")
    assert res2.returncode == 0
    assert json.loads((sweep / SWEEP_FILE).read_text())["name"] == "s"


def start_board(logdir: Path) -> tuple[subprocess.Popen, bytes | None]:
    """`lrn board logdir` on a free port, once it answers -> (the process, its /data/logdir)."""
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "lrn_cli", "board", str(logdir), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline, body = time.time() + 60, None
    while time.time() < deadline and body is None:
        try:
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/data/logdir", timeout=2).read()
        except OSError:
            time.sleep(0.3)
    return proc, body


def alive(pid: int) -> bool:
    stat = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()
    return bool(stat) and not stat.startswith("Z")


def test_board_stopped_with_sigterm_stops_its_tensorboard_too(tmp_path):
    proc, body = start_board(tmp_path)
    try:
        assert body is not None
        children = [int(p) for p in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                                   text=True).stdout.split()]
        assert children and all(alive(c) for c in children)
        os.kill(proc.pid, signal.SIGTERM)  # lrn board alone, as a service manager or `kill` does
        assert proc.wait(timeout=30) == 143
        deadline = time.time() + 10
        while any(alive(c) for c in children) and time.time() < deadline:
            time.sleep(0.1)
        assert not any(alive(c) for c in children), "TensorBoard outlived lrn board"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_board_serves_tensorboard_on_localhost(tmp_path):
    proc, body = start_board(tmp_path)
    try:
        assert body is not None and str(tmp_path).encode() in body
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    bad = run_cli("board", str(tmp_path / "nope"))
    assert bad.returncode == 2 and "no such folder" in bad.stderr
