"""Evidence a reviewer accepts: each run's per-image test predictions, and the report's paired
statistics (McNemar per seed pair, the hierarchical bootstrap), the detectable difference of
Welch's test, the LRN activity column and the commits, against values computed by hand."""
import csv
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from scipy import stats as st

from lrn_cli import runs
from lrn_cli.config import load_config
from lrn_cli.data import load_data
from lrn_cli.data.augment import normalize
from lrn_cli.engine import train
from lrn_cli.report import detectable_difference, hierarchical_bootstrap, mcnemar, report
from lrn_cli.sweep import ablate
from lrn_cli.trained import load_trained

from conftest import REPO

SYNTH = str(REPO / "configs" / "synthetic.yaml")


# ----------------------------------------------------------------------------- predictions.npy

def argmax_of_checkpoint(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The trained network's top-1 class of every test image, computed here (not by evaluate)."""
    trained = load_trained(run_dir)
    data = load_data(load_config(run_dir / "config.yaml").data)
    with torch.no_grad():
        x = normalize(data.test.x, data.mean, data.std)
        return trained.model(x).argmax(1).numpy(), data.test.y.numpy()


def test_a_run_keeps_the_argmax_of_every_test_image_and_its_label(tmp_path):
    result = train(SYNTH, ["train.epochs=2"], out=tmp_path, name="r", quiet=True)
    pred = np.load(result.run_dir / runs.PREDICTIONS, allow_pickle=False)
    labels = np.load(result.run_dir / runs.TEST_LABELS, allow_pickle=False)
    assert pred.dtype == np.int16 and labels.dtype == np.int16 and pred.shape == labels.shape == (64,)
    assert (result.run_dir / runs.PREDICTIONS).stat().st_size < 64 * 2 + 200  # int16 and a header
    mine, truth = argmax_of_checkpoint(result.run_dir)
    assert (pred == mine).all() and (labels == truth).all()
    assert float((pred == labels).mean()) == result.summary["test_acc"]
    assert not list(result.run_dir.glob(".*.tmp"))  # written atomically: no temporary left


def test_two_processes_gather_their_shards_of_the_predictions_in_order(tmp_path):
    # 64 test images in batches of 16: each rank evaluates two batches, rank 1 the last two
    result = train(SYNTH, ["train.epochs=1", "eval.batch_size=16"], out=tmp_path, name="two", quiet=True, nproc=2)
    assert result.summary["env"]["nproc"] == 2
    pred = np.load(result.run_dir / runs.PREDICTIONS)
    labels = np.load(result.run_dir / runs.TEST_LABELS)
    mine, truth = argmax_of_checkpoint(result.run_dir)
    assert pred.shape == (64,) and (pred == mine).all() and (labels == truth).all()
    assert float((pred == labels).mean()) == result.summary["test_acc"]


# ----------------------------------------------------------------------------- McNemar

def test_mcnemar_is_the_exact_binomial_test_of_the_discordant_images():
    # 8 images only a gets right, 2 only b, and 90 that agree (either way: they do not count).
    # Two-sided exact: 2 * P(X <= 2), X ~ Binomial(10, 1/2) = 2 * (1 + 10 + 45) / 1024
    a = np.array([1] * 8 + [0] * 2 + [1] * 60 + [0] * 30, dtype=bool)
    b = np.array([0] * 8 + [1] * 2 + [1] * 60 + [0] * 30, dtype=bool)
    m = mcnemar(a, b)
    assert (m["a_only"], m["b_only"]) == (8, 2) and m["p"] == pytest.approx(112 / 1024, rel=1e-12)
    assert mcnemar(b, a)["p"] == pytest.approx(112 / 1024, rel=1e-12)  # symmetric
    assert mcnemar([1, 0, 1], [1, 0, 1]) == {"a_only": 0, "b_only": 0, "p": 1.0}  # no discordant image
    assert mcnemar([1, 0], [0, 1])["p"] == 1.0  # 1 of 2: as likely as can be
    # 6 of 6 one way: 2 * (1/2)^6
    assert mcnemar([1] * 6, [0] * 6)["p"] == pytest.approx(2 / 64, rel=1e-12)


# ----------------------------------------------------------------------------- the bootstrap

def seed_diffs(plus: list[int], minus: list[int], n: int, seed: int = 0) -> list[np.ndarray]:
    """Per seed the per-image d = correct(config) - correct(baseline): `plus` images +1, `minus` -1."""
    rng = np.random.default_rng(seed)
    out = []
    for p, m in zip(plus, minus):
        d = np.zeros(n, dtype=np.int8)
        d[:p], d[p:p + m] = 1, -1
        out.append(rng.permutation(d))
    return out


def test_identical_predictions_give_a_bootstrap_interval_of_zero():
    assert hierarchical_bootstrap([np.zeros(10_000, dtype=np.int8)] * 3) == {"diff": 0.0, "lo": 0.0, "hi": 0.0}


def test_a_known_difference_lies_in_the_interval_and_the_interval_is_reproducible():
    # every seed: 300 images only the config gets right, 100 only the baseline: +2 points each
    diffs = seed_diffs([300, 300, 300], [100, 100, 100], 10_000)
    t0 = time.perf_counter()
    ci = hierarchical_bootstrap(diffs)
    assert time.perf_counter() - t0 < 0.5
    assert ci["diff"] == pytest.approx(0.02, abs=1e-15) and ci["lo"] < 0.02 < ci["hi"]
    # the seeds agree exactly, so only the images spread it: sd of one seed's mean d is
    # sqrt(var(d) / n) = sqrt((0.04 - 0.02^2) / 10000) = 0.19 points, of the mean of 3 about 0.11
    assert 0.0015 < ci["hi"] - ci["lo"] < 0.006
    assert hierarchical_bootstrap(diffs) == ci  # fixed RNG seed
    assert hierarchical_bootstrap(diffs, seed=1) != ci


def test_the_bootstrap_resamples_seeds_first_then_images_within_each():
    """Against the literal procedure (indices of seeds, then of images, per resample), on seeds
    that disagree: the two draw from one distribution, so their intervals agree closely."""
    diffs = seed_diffs([20, 60, 100], [0, 0, 0], 2000, seed=3)  # +1, +3, +5 points
    rng = np.random.default_rng(7)
    literal = []
    for _ in range(2000):
        seeds = rng.integers(0, 3, 3)
        literal.append(np.mean([diffs[s][rng.integers(0, 2000, 2000)].mean() for s in seeds]))
    lo, hi = np.quantile(literal, [0.025, 0.975])
    ci = hierarchical_bootstrap(diffs)
    assert ci["diff"] == pytest.approx(0.03)
    assert ci["lo"] == pytest.approx(lo, abs=0.002) and ci["hi"] == pytest.approx(hi, abs=0.002)
    # the seed-level spread dominates: far wider than pooling the 6000 images would make it
    pooled_sd = np.concatenate(diffs).std() / math.sqrt(6000)
    assert ci["hi"] - ci["lo"] > 4 * 1.96 * pooled_sd


# ----------------------------------------------------------------------------- detectable difference

def welch_rejects(difference: float, n: int, sd: float = 0.5, trials: int = 100_000) -> float:
    """How often Welch's test (scipy's) rejects at 0.05, simulated."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.0, sd, (trials, n)), rng.normal(difference, sd, (trials, n))
    return float((st.ttest_ind(a, b, axis=1, equal_var=False).pvalue < 0.05).mean())


def test_detectable_difference_for_three_seeds_a_side_at_sd_half_a_point():
    # the textbook value: statsmodels' TTestIndPower().solve_power(nobs1=3, ratio=1, alpha=0.05,
    # power=0.8) = 3.0709 standard deviations (the two-sample t-test, 4 df)
    textbook = detectable_difference(0.5, 3, 0.5, 3, test="t")
    assert textbook == pytest.approx(3.070892269599019 * 0.5, rel=1e-6)
    sm = pytest.importorskip("statsmodels.stats.power")
    for n in (3, 5, 10):
        d = sm.TTestIndPower().solve_power(effect_size=None, nobs1=n, alpha=0.05, power=0.8, ratio=1.0)
        assert detectable_difference(0.5, n, 0.5, n, test="t") == pytest.approx(0.5 * d, rel=1e-5)
    # Welch's test as run estimates its df from 3 + 3 seeds and rejects less often than that:
    # 69.6% at the textbook difference; the report's figure is the one where it rejects 80%
    assert welch_rejects(textbook, 3) == pytest.approx(0.696, abs=0.005)
    welch = detectable_difference(0.5, 3, 0.5, 3)
    assert welch == pytest.approx(1.14 * textbook, rel=0.01)
    assert welch_rejects(welch, 3) == pytest.approx(0.80, abs=0.005)
    assert welch_rejects(detectable_difference(0.5, 5, 0.5, 5), 5) == pytest.approx(0.80, abs=0.005)
    assert detectable_difference(0.5, 30, 0.5, 30) == pytest.approx(
        detectable_difference(0.5, 30, 0.5, 30, test="t"), rel=0.005)
    # undefined without two seeds a side or without any variation; one constant side is allowed
    assert detectable_difference(0.5, 1, 0.5, 3) is None and detectable_difference(0.0, 3, 0.0, 3) is None
    assert detectable_difference(None, 3, 0.5, 3) is None
    assert detectable_difference(0.0, 3, 0.5, 3) == pytest.approx(detectable_difference(0.5, 3, 0.0, 3))


# ----------------------------------------------------------------------------- the report

@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory) -> Path:
    """No LRN (the baseline), the synthetic net's default LRN (inert: alpha 1e-4) and one that acts
    (alpha 50, k 1), two seeds each, one epoch."""
    tmp = tmp_path_factory.mktemp("sweep")
    spec = {"name": "s", "base": SYNTH, "seeds": [0, 1], "set": {"train.epochs": 1}, "baseline": "none",
            "variants": {"none": {"model.norm.type": "none"}, "weak": {},
                         "strong": {"model.norm.alpha": 50, "model.norm.k": 1}}}
    path = tmp / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    outcome = ablate(path, out=tmp / "out", jobs=2, quiet=True)
    assert outcome["exit_code"] == 0
    return tmp / "out" / "s"


def test_the_report_pairs_seeds_on_their_test_images(tiny_sweep):
    table = {e["label"]: e for e in report(tiny_sweep)["table"]}
    by = {r["label"] + str(r["seed"]): r for r in runs.read_json(tiny_sweep / "sweep.json")["runs"]}
    def load(key: str) -> tuple[np.ndarray, np.ndarray]:
        return (np.load(tiny_sweep / by[key]["dir"] / runs.PREDICTIONS),
                np.load(tiny_sweep / by[key]["dir"] / runs.TEST_LABELS))

    assert table["none"]["paired"] is None  # the baseline is not compared with itself
    for label in ("weak", "strong"):
        pr = table[label]["paired"]
        assert pr["pairs"] == pr["seeds"] == 2 and not pr["unpaired"]
        diffs = []
        for m, seed in zip(pr["mcnemar"], (0, 1)):
            (pa, la), (pb, lb) = load(f"{label}{seed}"), load(f"none{seed}")
            assert (la == lb).all()
            ca, cb = pa == la, pb == lb
            k, n = int((ca & ~cb).sum()), int((ca ^ cb).sum())
            assert (m["seed"], m["a_only"], m["b_only"]) == (seed, k, n - k)
            assert m["p"] == pytest.approx(st.binomtest(k, n, 0.5).pvalue if n else 1.0)
            diffs.append(ca.astype(int) - cb.astype(int))
        # Δ: the mean over seeds of the accuracy difference, as the summaries give it
        def accs(lab: str) -> list[float]:
            return [runs.read_json(tiny_sweep / by[lab + s]["dir"] / "summary.json")["test_acc"] for s in "01"]

        assert pr["diff"] == pytest.approx(np.mean(accs(label)) - np.mean(accs("none")), abs=1e-12)
        assert pr["lo"] <= pr["diff"] <= pr["hi"]
        assert hierarchical_bootstrap(diffs) == {k: pr[k] for k in ("diff", "lo", "hi")}
        b = table["none"]["test_acc"]
        assert table[label]["detectable"] == pytest.approx(
            detectable_difference(table[label]["test_acc"]["std"], 2, b["std"], 2))


def test_the_report_shows_lrn_activity_and_marks_the_inert_config(tiny_sweep):
    table = {e["label"]: e for e in report(tiny_sweep)["table"]}
    assert table["weak"]["inert"] is True and table["strong"]["inert"] is False and table["none"]["inert"] is None
    assert set(table["strong"]["lrn_activity"]) == {"2", "6"}  # the layer list's norm slots, by module name
    by = {r["label"] + str(r["seed"]): r for r in runs.read_json(tiny_sweep / "sweep.json")["runs"]}
    seeds = [runs.read_json(tiny_sweep / by[f"strong{s}"]["dir"] / "summary.json")["lrn_activity"] for s in (0, 1)]
    for layer in ("2", "6"):
        for key in ("frac_changed_1pct", "median"):
            assert table["strong"]["lrn_activity"][layer][key] == pytest.approx(
                (seeds[0][layer][key] + seeds[1][layer][key]) / 2)
    md = (tiny_sweep / "results.md").read_text()
    weak = next(line for line in md.splitlines() if line.startswith("| weak *(inert LRN)* | 2 |"))
    assert "**inert**: 2: " in weak and "; 6: " in weak
    strong = next(line for line in md.splitlines() if line.startswith("| strong | 2 |"))
    s2 = table["strong"]["lrn_activity"]["2"]
    assert f"2: {100 * s2['frac_changed_1pct']:.0f}% / {s2['median']:.3g}" in strong and "inert" not in strong
    assert "An inert LRN only rescales: its comparison says nothing about normalization." in md
    none = next(line for line in md.splitlines() if "none" in line and "(baseline) | 2 |" in line)  # maybe (best)
    assert none.endswith("| — | — | — | — |")  # no p, no Holm, no detectable difference, no LRN


def test_the_report_names_the_commit_and_the_paired_table(tiny_sweep):
    report(tiny_sweep)
    md = (tiny_sweep / "results.md").read_text()
    commit = runs.read_json(next(tiny_sweep.glob("none-s0-*")) / "summary.json")["env"]["git_commit"]
    if commit:
        assert f"Code: every run (6) ran at commit `{commit[:12]}`" in md
    assert "## Seed by seed against the baseline (`none`), on the same test images" in md
    line = [x for x in md.splitlines() if x.startswith("| strong | 2 | ")][-1]  # the paired table's
    assert line.count("|") == 7 and " of 2 |" in line and "s0: " in line and "s1: " in line
    assert "detectable (pp)" in md and "80% power" in md
    with open(tiny_sweep / "results.csv") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        assert r["git_commit"] == (commit or "")
        if r["label"] == "none":
            assert r["mcnemar_p"] == "" and r["lrn_inert"] == ""
        else:
            assert 0 <= float(r["mcnemar_p"]) <= 1 and int(r["paired_only_this_correct"]) >= 0
            assert r["lrn_inert"] == str(r["label"] == "weak")


def test_runs_without_predictions_or_of_other_commits_are_reported_plainly(tiny_sweep, tmp_path):
    import shutil

    sweep = tmp_path / "s"
    shutil.copytree(tiny_sweep, sweep)
    # older runs: strong keeps no predictions at all, weak's seed 1 none
    for d in [*sweep.glob("strong-s*"), *sweep.glob("weak-s1-*")]:
        (d / runs.PREDICTIONS).unlink()
    # and one run made at another commit
    weak0 = next(sweep.glob("weak-s0-*"))
    s = runs.read_json(weak0 / "summary.json")
    s["env"]["git_commit"] = "0123456789abcdef0123456789abcdef01234567-dirty"
    runs.write_json(weak0 / "summary.json", s)
    table = {e["label"]: e for e in report(sweep)["table"]}
    assert table["strong"]["paired"]["pairs"] == 0 and table["strong"]["paired"]["diff"] is None
    assert table["strong"]["paired"]["unpaired"] == {"no predictions.npy": 2}
    assert table["weak"]["paired"]["pairs"] == 1 and table["weak"]["paired"]["lo"] is None
    assert table["weak"]["p"] is not None  # Welch over seeds needs no predictions
    md = (sweep / "results.md").read_text()
    assert "| strong | 0 | — | — | — | — |" in md
    assert "| weak *(inert LRN)* | 1 of 2 | " in md and "one pair gives no bootstrap interval" in md
    assert "**The runs ran at 2 different commits**" in md
    assert "`0123456789ab` with uncommitted changes (1 run)" in md and "(5 runs)" in md
    with open(sweep / "results.csv") as f:
        rows = {r["run_dir"]: r for r in csv.DictReader(f)}
    assert rows[weak0.name]["git_commit"].endswith("-dirty") and rows[weak0.name]["mcnemar_p"] != ""
    assert all(r["mcnemar_p"] == "" for k, r in rows.items() if k.startswith("strong"))
