"""Sweep results from the run directories: results.csv, results.md, plots/*.png, HParams.

Everything is recomputed from what the runs left on disk, so `lrn report DIR` works on a
partial sweep (missing runs are marked) and any number of times. Statistics come from scipy:
Student-t 95% confidence intervals of the mean over seeds, Welch's t-test against the
baseline, Holm's correction for testing several configs against it, and the difference that
Welch's test would detect with 80% power at the seeds' std (`detectable_difference`).

The seeds of a config and of the baseline see the same test images, and each run leaves its
per-image predictions (`predictions.npy`, `test_labels.npy`), so each config's seed s is also
compared with the baseline's seed s, image by image: McNemar's exact test of whether those two
trained networks differ on these images (`mcnemar`), and a hierarchical bootstrap confidence
interval of the accuracy difference, seeds resampled first and images within each seed
(`hierarchical_bootstrap`): the evidence about a config stays at the level of its seeds, never
pooling images across seeds as if they were independent. Runs made before predictions were kept
get "—" there.

Where runs have a robustness.json (accuracy under common corruptions, robust.py), robust_report.py
adds the mCE, relative mCE and drops to results.csv, a Robustness section to results.md, its plots
and each run's mCE for the HParams dashboard.
"""
from __future__ import annotations

import csv
import datetime as _dt
import io
import math
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import runs
from .errors import UserError
from .layout import PLOTS, RESULTS_CSV, RESULTS_MD, SWEEP_FILE, describe
from .runs import Status
from .tb import get_key, run_hparams, write_run_hparams

MISSING = "missing"  # a run's status in the report while it has no summary (not started, or lost)
METRIC_KEYS = ("test_acc", "test_top5", "test_loss", "val_acc", "wall_time_s", "images_per_s", "epochs")
# results.csv's columns after the metrics: the run's commit, its LRN verdict, and its comparison
# with the baseline's run of the same seed on the same test images (blank where there is none)
PAIRED_KEYS = ("git_commit", "lrn_inert", "paired_only_this_correct", "paired_only_baseline_correct", "mcnemar_p")
ALPHA, POWER = 0.05, 0.8  # of the detectable difference
BOOT_RESAMPLES, BOOT_SEED = 2000, 0  # of the hierarchical bootstrap
INERT = 0.01  # = activity.INERT (not imported: it imports torch, which a sweep's parent does not load)


@dataclass
class Group:
    """The runs of one config: one per seed."""

    group: str
    label: str
    point: dict[str, Any]
    variant: bool
    rows: list[dict[str, Any]] = field(default_factory=list)

    def values(self, key: str) -> list[float]:
        return [r[key] for r in self.rows if r["status"] == Status.COMPLETED and r.get(key) is not None]

    @property
    def n_done(self) -> int:
        return sum(r["status"] == Status.COMPLETED for r in self.rows)


def stats(values: list[float], bounds: tuple[float, float] | None = None) -> dict[str, float | None]:
    """mean, sample std and the Student-t 95% confidence interval of the mean (clipped to
    `bounds`, e.g. [0, 1] for an accuracy, where the t interval would run past them)."""
    from scipy import stats as st

    n = len(values)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "lo": None, "hi": None}
    mean = sum(values) / n
    if n < 2:
        return {"n": n, "mean": mean, "std": None, "lo": None, "hi": None}
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    if std == 0:
        return {"n": n, "mean": mean, "std": 0.0, "lo": mean, "hi": mean}
    lo, hi = (float(v) for v in st.t.interval(0.95, n - 1, loc=mean, scale=std / math.sqrt(n)))
    if bounds:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return {"n": n, "mean": mean, "std": std, "lo": lo, "hi": hi}


def welch_p(a: list[float], b: list[float]) -> float | None:
    """Two-sided Welch's t-test p-value (unequal variances); None with fewer than 2 per side; NaN
    when neither side varies (every seed the same value): t is then d / 0 or 0 / 0, and no
    p-value follows from it, whether the two values differ or not."""
    from scipy import stats as st

    if len(a) < 2 or len(b) < 2:
        return None
    if len(set(a)) == 1 and len(set(b)) == 1:
        return math.nan
    with warnings.catch_warnings():  # one side constant: scipy warns of precision loss, the test stands
        warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
        return float(st.ttest_ind(a, b, equal_var=False).pvalue)


def detectable_difference(sd_a: float | None, n_a: int, sd_b: float | None, n_b: int, alpha: float = ALPHA,
                          power: float = POWER, test: str = "welch") -> float | None:
    """The minimum detectable difference: the difference of means that a two-sided test at level
    `alpha` finds with probability `power`, for samples of these sizes from normal populations
    with these standard deviations (the observed ones, taken as the truth). None where it is
    undefined: fewer than 2 per side, or no variation on either side.

    test="t": the textbook calculation. se = sqrt(sd_a^2/n_a + sd_b^2/n_b), df by
    Welch-Satterthwaite from the true sds; the statistic is noncentral t with noncentrality
    d / se, and P(|T| > t_{1-alpha/2, df}) is solved for d. With equal sizes and sds it is the
    two-sample t-test's, statsmodels' TTestIndPower (d = 3.07 sd for 3 seeds a side).

    test="welch" (the report's): the power of Welch's test as it is run, estimating its df from
    the samples: for 3 seeds a side that df is often near 2, not 4, and at the textbook
    difference Welch's test rejects 70% of the time, not 80% (simulated: 69.6%). Given the two
    sample variances (scaled chi-squared), the mean difference is normal and independent of
    them, so the power is a two-dimensional integral over the variances, taken by Gauss-Legendre
    quadrature in their quantiles: exact to 1e-6, deterministic, milliseconds. For 3 seeds a side
    the detectable difference is 14% larger than the textbook one; from 10 on they agree to 1%."""
    from scipy import special
    from scipy import stats as st

    if n_a < 2 or n_b < 2 or sd_a is None or sd_b is None:
        return None
    va, vb = sd_a ** 2 / n_a, sd_b ** 2 / n_b
    if va + vb == 0:
        return None
    se = math.sqrt(va + vb)
    if test == "t":
        df = (va + vb) ** 2 / (va ** 2 / (n_a - 1) + vb ** 2 / (n_b - 1))
        crit = float(st.t.ppf(1 - alpha / 2, df))

        def reaches(nc: float) -> float:  # power at noncentrality nc, minus the power asked for
            return float(st.nct.sf(crit, df, nc) + st.nct.cdf(-crit, df, nc)) - power

        return _solve(reaches, crit + 4.0) * se
    if test != "welch":
        raise ValueError(f"detectable_difference: test {test!r} is 'welch' or 't'")
    import numpy as np

    x, w = np.polynomial.legendre.leggauss(64)
    u, w = (x + 1) / 2, w / 2

    def variances(sd: float, n: int) -> tuple[Any, Any]:  # the sample variance's quantiles / n, weights
        if sd == 0:
            return np.zeros(1), np.ones(1)
        return sd ** 2 * st.chi2.ppf(u, n - 1) / (n - 1) / n, w

    (a, wa), (b, wb) = variances(sd_a, n_a), variances(sd_b, n_b)
    a, b, weight = a[:, None], b[None, :], wa[:, None] * wb[None, :]
    df = (a + b) ** 2 / (a ** 2 / (n_a - 1) + b ** 2 / (n_b - 1))
    threshold = st.t.ppf(1 - alpha / 2, df) * np.sqrt(a + b)  # |mean difference| beyond it rejects

    def reaches_welch(nc: float) -> float:
        d = nc * se
        return float((weight * (special.ndtr((d - threshold) / se) + special.ndtr((-d - threshold) / se))).sum()) - power

    return _solve(reaches_welch, 8.0) * se


def _solve(short_of: Any, hi: float) -> float:
    """The root in (0, inf) of an increasing function that is negative at 0."""
    from scipy import optimize

    while short_of(hi) < 0:
        hi *= 2
    return float(optimize.brentq(short_of, 0.0, hi, xtol=1e-12))


def mcnemar(correct_a: Any, correct_b: Any) -> dict[str, Any]:
    """McNemar's exact test of two classifiers on the same images: of the images exactly one of
    them gets right (`a_only` + `b_only`), under the null each is a's with probability 1/2; the
    two-sided binomial test of `a_only` among them (scipy's binomtest). p = 1 when no image is
    discordant."""
    import numpy as np
    from scipy import stats as st

    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    p = float(st.binomtest(a_only, a_only + b_only, 0.5).pvalue) if a_only + b_only else 1.0
    return {"a_only": a_only, "b_only": b_only, "p": p}


def hierarchical_bootstrap(diffs: list[Any], resamples: int = BOOT_RESAMPLES, seed: int = BOOT_SEED,
                           level: float = 0.95) -> dict[str, float]:
    """A percentile confidence interval of the mean over seeds of a paired accuracy difference.

    `diffs` holds per seed the per-image difference correct(config) - correct(baseline) (-1, 0
    or 1) of the two runs of that seed on the same test images. Each resample draws as many
    seeds as there are, with replacement, then each drawn seed's images with replacement (the
    same image for both runs: its d), and takes the mean over the drawn seeds of the mean d.
    The mean of n images drawn with replacement depends only on how many of them have d = -1,
    0, 1, which are multinomial(n, the seed's shares of -1, 0, 1): drawing those counts is the
    same distribution as drawing the indices, and takes milliseconds for any number of images.
    -> {"diff": the observed mean difference, "lo", "hi"}."""
    import numpy as np

    d = [np.asarray(x, dtype=np.int64) for x in diffs]
    counts = np.array([[(x == -1).sum(), (x == 0).sum(), (x == 1).sum()] for x in d], dtype=np.int64)
    n = counts.sum(axis=1)
    if len(d) == 0 or (n == 0).any() or counts.sum() != sum(x.size for x in d):
        raise ValueError("hierarchical_bootstrap: each seed needs at least one image, every d in {-1, 0, 1}")
    observed = float(np.mean([x.mean() for x in d]))
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(d), size=(resamples, len(d)))  # the seeds of each resample
    drawn = rng.multinomial(n[pick], counts[pick] / n[pick][..., None])  # (resamples, seeds, 3)
    means = ((drawn[..., 2] - drawn[..., 0]) / n[pick]).mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return {"diff": observed, "lo": float(lo), "hi": float(hi)}


def holm(pvalues: dict[str, float]) -> dict[str, float]:
    """Holm's step-down adjustment of several p-values (controls the family-wise error rate);
    undefined ones (NaN) are no test, stay NaN and do not count in the family."""
    out = {key: p for key, p in pvalues.items() if math.isnan(p)}
    ordered = sorted(((k, p) for k, p in pvalues.items() if not math.isnan(p)), key=lambda kv: kv[1])
    m, running = len(ordered), 0.0
    for i, (key, p) in enumerate(ordered):
        running = max(running, min(1.0, (m - i) * p))
        out[key] = running
    return out


def load(sweep_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]], list[Group]]:
    plan = runs.read_json(Path(sweep_dir) / SWEEP_FILE)
    if plan is None:
        raise UserError(f"{sweep_dir}: not a sweep directory (no {SWEEP_FILE}); give the folder "
                        "`lrn ablate` made (OUT/NAME)")
    rows, groups = [], {}
    for run in plan["runs"]:
        name = run.get("dir") or run["run_id"]  # sweeps made before readable names: the bare hash
        run_dir = Path(sweep_dir) / name
        summary = runs.read_summary(run_dir)
        status = MISSING if summary["status"] == Status.PENDING else summary["status"]
        row = {"run_id": run["run_id"], "dir": name, "group": run["group"], "label": run["label"],
               "seed": run["seed"], "status": status, **{k: summary.get(k) for k in METRIC_KEYS},
               # the HParams session group of its seeds, by what they are and their shared hash
               "trial": f"{describe(run['point'], run['label'] if run['variant'] else None)}-{run['group']}"}
        row["curve"] = runs.read_jsonl(run_dir / runs.METRICS)
        row["config"] = run["config"]
        row["git_commit"] = (summary.get("env") or {}).get("git_commit")
        row["lrn_activity"], row["lrn_inert"] = summary.get("lrn_activity"), summary.get("lrn_inert")
        row["path"] = run_dir
        rows.append(row)
        groups.setdefault(run["group"], Group(run["group"], run["label"], run["point"], run["variant"])).rows.append(row)
    return plan, rows, list(groups.values())


def report(sweep_dir: str | Path) -> dict[str, Any]:
    """Write results.csv, results.md, plots/ and the HParams sessions; -> the table as dicts."""
    sweep_dir = Path(sweep_dir)
    plan, rows, groups = load(sweep_dir)
    swept = plan["swept"]
    for r in rows:
        if (sweep_dir / r["dir"]).exists():
            write_run_hparams(sweep_dir / r["dir"], run_hparams(r["config"], swept), r["trial"], r["status"])

    baseline = next((g for g in groups if g.label == plan.get("baseline")), None)
    paired = {g.group: _paired(g, baseline) for g in groups if baseline is not None and g is not baseline}
    from . import robust_report  # here: it imports this module's statistics

    robust = robust_report.analyse(plan, rows, groups, baseline)  # None: no run has robustness.json

    # results.csv: one row per run
    by_run = {m["run_id"]: m for p in paired.values() for m in p["mcnemar"]}
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["run_id", "run_dir", "label", *swept, "seed", "status", *METRIC_KEYS, *PAIRED_KEYS,
                *robust_report.csv_columns(robust)])
    for r in rows:
        m = by_run.get(r["run_id"], {})
        w.writerow([r["run_id"], r["dir"], r["label"], *[get_key(r["config"], k) for k in swept], r["seed"],
                    r["status"], *[r[k] for k in METRIC_KEYS], r["git_commit"], r["lrn_inert"],
                    m.get("a_only"), m.get("b_only"), m.get("p"), *robust_report.csv_cells(robust, r)])
    runs.write_text(sweep_dir / RESULTS_CSV, buf.getvalue())

    # one row per config
    table = []
    for g in groups:
        entry = {"label": g.label, "group": g.group, "point": g.point, "runs": len(g.rows), "done": g.n_done,
                 "statuses": sorted({r["status"] for r in g.rows}),
                 **{k: stats(g.values(k), (0.0, 1.0) if k.endswith(("acc", "top5")) else None)
                    for k in ("test_acc", "test_top5", "test_loss", "wall_time_s")}}
        entry["p"] = None if baseline is None or g is baseline else welch_p(g.values("test_acc"),
                                                                            baseline.values("test_acc"))
        entry["detectable"] = None
        if baseline is not None and g is not baseline:
            b = stats(baseline.values("test_acc"))
            entry["detectable"] = detectable_difference(entry["test_acc"]["std"], entry["test_acc"]["n"],
                                                        b["std"], b["n"])
        entry["paired"] = paired.get(g.group)
        entry["lrn_activity"], entry["inert"] = _activity(g)
        table.append(entry)
    adjusted = holm({e["group"]: e["p"] for e in table if e["p"] is not None})
    for e in table:
        e["p_holm"] = adjusted.get(e["group"])
    means = [e for e in table if e["test_acc"]["mean"] is not None]
    best = max(means, key=lambda e: e["test_acc"]["mean"]) if means else None
    for e in table:
        e["best"] = e is best
    runs.write_text(sweep_dir / RESULTS_MD, _markdown(plan, table, rows, baseline)
                    + robust_report.markdown(robust, plan.get("baseline")))
    _plots(sweep_dir, plan, table, groups, baseline)
    robust_report.write(sweep_dir, plan, rows, robust)
    return {"table": table, "rows": len(rows), "completed": sum(r["status"] == Status.COMPLETED for r in rows),
            "failed": sum(r["status"] in runs.FAILURES for r in rows),
            "robustness": None if robust is None else robust.table}


def _predictions(run_dir: Path) -> tuple[Any, Any] | None:
    """A run's (predicted, true) class per test image, or None: made before they were kept, or
    not readable as two int arrays of one length."""
    import numpy as np

    try:
        pred = np.load(run_dir / runs.PREDICTIONS, allow_pickle=False)
        labels = np.load(run_dir / runs.TEST_LABELS, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if pred.ndim != 1 or pred.shape != labels.shape or pred.dtype.kind not in "iu" or labels.dtype.kind not in "iu":
        return None
    return pred, labels


def _paired(g: Group, baseline: Group) -> dict[str, Any]:
    """A config against the baseline seed by seed, on the same test images: McNemar per seed
    pair, the hierarchical bootstrap over the pairs (with 2 or more). A seed that either side
    did not complete, or whose runs have no predictions, or whose two runs saw different test
    images, makes no pair (`unpaired` says how many, and why)."""
    def done(grp: Group) -> dict[int, dict[str, Any]]:
        return {r["seed"]: r for r in grp.rows if r["status"] == Status.COMPLETED}

    mine, theirs = done(g), done(baseline)
    pairs, diffs, why = [], [], defaultdict(int)
    for seed in sorted(set(mine) & set(theirs)):
        a, b = _predictions(mine[seed]["path"]), _predictions(theirs[seed]["path"])
        if a is None or b is None:
            why["no predictions.npy"] += 1
            continue
        if a[1].shape != b[1].shape or (a[1] != b[1]).any():
            why["different test images"] += 1
            continue
        ca, cb = a[0] == a[1], b[0] == b[1]
        pairs.append({"seed": seed, "run_id": mine[seed]["run_id"], **mcnemar(ca, cb)})
        diffs.append(ca.astype("int8") - cb.astype("int8"))
    out: dict[str, Any] = {"pairs": len(pairs), "seeds": len(mine), "mcnemar": pairs, "unpaired": dict(why),
                           "diff": None, "lo": None, "hi": None}
    if diffs:
        out["diff"] = float(sum(float(d.mean()) for d in diffs) / len(diffs))
    if len(diffs) >= 2:
        out.update(hierarchical_bootstrap(diffs))
    return out


def _activity(g: Group) -> tuple[dict[str, dict[str, float]], bool | None]:
    """Per LRN layer, the mean over the completed seeds of its frac_changed_1pct and of its
    median factor; and whether the config is inert: every seed's every LRN layer changed fewer
    than 1% of its activations by more than 1% (None without LRN layers, or runs made before
    activity was measured)."""
    measured = [r for r in g.rows if r["status"] == Status.COMPLETED and r.get("lrn_activity")]
    layers: dict[str, dict[str, list[float]]] = {}
    for r in measured:
        for name, a in r["lrn_activity"].items():
            layer = layers.setdefault(name, {"frac_changed_1pct": [], "median": []})
            layer["frac_changed_1pct"].append(a["frac_changed_1pct"])
            layer["median"].append(a["median"])
    means = {name: {k: sum(v) / len(v) for k, v in layer.items()} for name, layer in layers.items()}
    if not measured:
        return means, None
    inert = all(r["lrn_inert"] if r.get("lrn_inert") is not None else
                all(a["frac_changed_1pct"] < INERT for a in r["lrn_activity"].values()) for r in measured)
    return means, inert


def short(label: str) -> str:
    """'model.norm.size=3 model.norm.alpha=0.0001' -> 'size=3 alpha=0.0001' (variant names stay)."""
    return " ".join(part.split("=", 1)[0].split(".")[-1] + "=" + part.split("=", 1)[1] if "=" in part else part
                    for part in label.split(" "))


def _pct(s: dict[str, Any], digits: int = 2) -> str:
    if s["mean"] is None:
        return "—"
    return f"{100 * s['mean']:.{digits}f}" + (f" ± {100 * s['std']:.{digits}f}" if s["std"] is not None else "")


def _ci(s: dict[str, Any]) -> str:
    return "—" if s["lo"] is None else f"[{100 * s['lo']:.2f}, {100 * s['hi']:.2f}]"


ZERO_VARIANCE = "n/a (zero variance)"


def _p(p: float | None) -> str:
    if p is None:
        return "—"
    if math.isnan(p):
        return ZERO_VARIANCE
    return f"{p:.2g}" if p >= 1e-4 else "< 1e-4"


def _pp(x: float | None, sign: bool = True) -> str:
    """A difference of fractions in percentage points."""
    return "—" if x is None else f"{100 * x:+.2f}" if sign else f"{100 * x:.2f}"


def _share(f: float) -> str:
    pct = 100 * f
    return "0%" if pct == 0 else "<0.1%" if pct < 0.05 else f"{pct:.1f}%" if pct < 10 else f"{pct:.0f}%"


def _factor(f: float) -> str:
    if math.isnan(f):
        return "—"
    return f"{f:.6g}" if f != 1 and abs(f - 1) < 0.005 else f"{f:.3g}"  # 0.99995 is not 1


def _activity_cell(e: dict[str, Any]) -> str:
    if not e["lrn_activity"]:
        return "—"
    cell = "; ".join(f"{name}: {_share(a['frac_changed_1pct'])} / {_factor(a['median'])}"
                     for name, a in e["lrn_activity"].items())
    return f"**inert**: {cell}" if e["inert"] else cell


def _commits(rows: list[dict[str, Any]]) -> list[str]:
    """Which commit the runs ran at: one sentence, or a plain warning listing them."""
    counted: dict[str, int] = defaultdict(int)
    for r in rows:
        if r["status"] != MISSING:
            counted[r["git_commit"] or "unknown"] += 1

    def name(commit: str) -> str:
        if commit == "unknown":
            return "an unknown commit (not run from a git checkout)"
        dirty = commit.endswith("-dirty")
        return f"`{commit.removesuffix('-dirty')[:12]}`" + (" with uncommitted changes" if dirty else "")

    if not counted:
        return []
    if len(counted) == 1:
        (commit, n), = counted.items()
        return [f"Code: every run ({n}) ran at commit {name(commit)}.", ""]
    listed = ", ".join(f"{name(c)} ({n} run{'s' if n > 1 else ''})"
                       for c, n in sorted(counted.items(), key=lambda kv: (-kv[1], kv[0])))
    return [f"**The runs ran at {len(counted)} different commits**: {listed}. Differences between configs "
            "may be differences between the code versions; results.csv gives each run's commit (a "
            "resumed run records the commit it was resumed at).", ""]


def _markdown(plan: dict[str, Any], table: list[dict[str, Any]], rows: list[dict[str, Any]], baseline: Any) -> str:
    done = sum(r["status"] == Status.COMPLETED for r in rows)
    base = plan.get("baseline") or "none"
    lines = [f"# Sweep `{plan['name']}`", "",
             f"{done} of {len(rows)} runs completed; generated {_dt.datetime.now():%Y-%m-%d %H:%M}.", "",
             *_commits(rows),
             "Accuracies in %, mean ± sample std over seeds; 95% CI of the mean (Student t); "
             f"p: Welch's t-test of test top-1 against the baseline (`{base}`), "
             "two-sided, and Holm-adjusted for the number of configs compared; detectable: the smallest "
             f"difference of test top-1 (percentage points) that this test finds with {POWER:.0%} power at "
             f"α = {ALPHA} for these numbers of seeds at their observed std (a p above {ALPHA} for a "
             "difference below it says the seeds are too few to tell, not that there is no difference); "
             "LRN activity: per LRN layer (module name), the share of its activations that it scales by more "
             "than 1% / its median factor, means over seeds.", "",
             "| config | n | test top-1 | 95% CI | test top-5 | test loss | wall time (s) | p | p (Holm) "
             "| detectable (pp) | LRN activity |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in table:
        name = f"**{short(e['label'])}** (best)" if e["best"] else short(e["label"])
        if baseline is not None and e["group"] == baseline.group:
            name += " (baseline)"
        if e["inert"]:
            name += " *(inert LRN)*"
        n = f"{e['done']}" if e["done"] == e["runs"] else f"{e['done']}/{e['runs']}"
        loss = "—" if e["test_loss"]["mean"] is None else (
            f"{e['test_loss']['mean']:.4f}" + (f" ± {e['test_loss']['std']:.4f}" if e["test_loss"]["std"] is not None else ""))
        w = e["wall_time_s"]["mean"]
        wall = "—" if w is None else f"{w:.0f}" if w >= 10 else f"{w:.1f}"
        lines.append(f"| {name} | {n} | {_pct(e['test_acc'])} | {_ci(e['test_acc'])} | {_pct(e['test_top5'])} | "
                     f"{loss} | {wall} | {_p(e['p'])} | {_p(e['p_holm'])} | {_pp(e['detectable'], sign=False)} | "
                     f"{_activity_cell(e)} |")
    if any(e["inert"] for e in table):
        lines += ["", f"*inert LRN*: in every seed every LRN layer of the config scales fewer than {INERT:.0%} of its "
                  "activations by more than 1%. An inert LRN only rescales: its comparison says nothing about "
                  "normalization."]
    if any(e["p"] is not None and math.isnan(e["p"]) for e in table):
        lines += ["", f"{ZERO_VARIANCE}: the config's seeds all gave one test top-1 and the baseline's "
                  "seeds all gave one too, so Welch's t-test is undefined (its t divides by a zero "
                  "standard error); more test images or seeds let the seeds differ."]
    lines += _paired_markdown(table, baseline, base)
    missing = [r for r in rows if r["status"] != Status.COMPLETED]
    if missing:
        lines += ["", "Not completed (not in the statistics):", ""]
        lines += [f"- `{r['dir']}` {short(r['label'])}, seed {r['seed']}: {r['status']}" for r in missing]
    return "\n".join(lines) + "\n"


MCNEMAR_LISTED = 5  # seed pairs whose McNemar p-values are listed one by one; more: their median


def _paired_markdown(table: list[dict[str, Any]], baseline: Any, base: str) -> list[str]:
    compared = [e for e in table if e["paired"] is not None]
    if baseline is None or not compared:
        return []
    lines = ["", f"## Seed by seed against the baseline (`{base}`), on the same test images", "",
             "Each seed of a config is paired with the baseline's run of the same seed; both classified the same "
             "test images. Δ: test top-1 of the config minus the baseline's, in percentage points, mean over the "
             f"pairs; its 95% CI: a hierarchical bootstrap ({BOOT_RESAMPLES} resamples, RNG seed {BOOT_SEED}) "
             "drawing seed pairs with replacement, then within each the test images with replacement (the same "
             "images for both runs of a pair), so the interval rests on the seeds, not on images pooled across "
             "them (with as few as 3 seeds it tends to be too narrow: a bootstrap sees only the spread of the "
             "seeds it has). McNemar: the exact test (two-sided binomial, on the images one run of a pair gets right and "
             "the other wrong) of whether those two trained networks differ on these images; it speaks of the "
             "pair of networks, not of the config: the config's evidence is how consistent the pairs are.", "",
             "| config | seed pairs | Δ top-1 (pp) | 95% CI (bootstrap) | McNemar: pairs at p < 0.05 "
             "| McNemar p by seed (only this / only baseline right) |",
             "|---|---|---|---|---|---|"]
    unpaired = False
    for e in compared:
        pr = e["paired"]
        name = short(e["label"]) + (" *(inert LRN)*" if e["inert"] else "")
        if not pr["pairs"]:
            unpaired = unpaired or bool(pr["seeds"])
            lines.append(f"| {name} | 0 | — | — | — | — |")
            continue
        unpaired = unpaired or pr["pairs"] < pr["seeds"]
        pairs = f"{pr['pairs']}" if pr["pairs"] == pr["seeds"] else f"{pr['pairs']} of {pr['seeds']}"
        ci = "—" if pr["lo"] is None else f"[{_pp(pr['lo'])}, {_pp(pr['hi'])}]"
        ms = pr["mcnemar"]
        below = sum(m["p"] < ALPHA for m in ms)
        if len(ms) <= MCNEMAR_LISTED:
            by_seed = "; ".join(f"s{m['seed']}: {_p(m['p'])} ({m['a_only']} / {m['b_only']})" for m in ms)
        else:
            import statistics

            by_seed = f"median {_p(statistics.median(m['p'] for m in ms))}"
        lines.append(f"| {name} | {pairs} | {_pp(pr['diff'])} | {ci} | {below} of {len(ms)} | {by_seed} |")
    if unpaired or any(e["paired"]["pairs"] == 1 for e in compared):
        lines += ["", "—, or fewer pairs than seeds: a seed that the baseline did not complete too, runs made before "
                  "lrn kept predictions (no predictions.npy), or runs of one seed that saw different test images, "
                  "make no pair; one pair gives no bootstrap interval (nothing to resample at the seed level)."]
    return lines


# ----------------------------------------------------------------------------- plots

def _numeric(values: list[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _plots(sweep_dir: Path, plan: dict[str, Any], table: list[dict[str, Any]], groups: list[Group],
           baseline: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = sweep_dir / PLOTS
    out.mkdir(exist_ok=True)
    by_group = {e["group"]: e for e in table}
    swept = plan["swept"]
    # the keys that vary across the grid's points (variants are shown in configs.png)
    grid_groups = [g for g in groups if not g.variant]
    varying = [k for k in swept if len({str(g.point.get(k)) for g in grid_groups if k in g.point}) > 1]

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        runs.atomic_write(out / name, lambda f: fig.savefig(f, format="png", dpi=120), mode="wb")
        plt.close(fig)

    for key in varying:
        others = [k for k in varying if k != key]
        lines: dict[str, list[tuple[Any, dict[str, Any]]]] = defaultdict(list)
        for g in grid_groups:
            if key not in g.point:
                continue
            line = ", ".join(f"{k.split('.')[-1]}={g.point.get(k)}" for k in others) or "test top-1"
            lines[line].append((g.point[key], by_group[g.group]["test_acc"]))
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        xs_all = []
        logx = _numeric([x for pts in lines.values() for x, _ in pts]) and \
            min(x for pts in lines.values() for x, _ in pts) > 0 and \
            max(x for pts in lines.values() for x, _ in pts) / min(x for pts in lines.values() for x, _ in pts) > 50
        for j, (line, pts) in enumerate(sorted(lines.items())):
            pts = [(x, s) for x, s in pts if s["mean"] is not None]
            if not pts:
                continue
            pts.sort(key=lambda p: p[0] if _numeric([p[0]]) else str(p[0]))
            xs = [p[0] for p in pts] if _numeric([p[0] for p in pts]) else [str(p[0]) for p in pts]
            xs_all += xs
            if _numeric(xs) and len(lines) > 1:  # dodge the lines a little so error bars do not hide
                shift = (j - (len(lines) - 1) / 2) * 0.03
                span = (max(xs) - min(xs)) or 1.0
                xs = [x * (1 + shift) if logx else x + shift * span for x in xs]
            ys = [100 * p[1]["mean"] for p in pts]
            err = [[100 * (p[1]["mean"] - p[1]["lo"]) if p[1]["lo"] is not None else 0 for p in pts],
                   [100 * (p[1]["hi"] - p[1]["mean"]) if p[1]["hi"] is not None else 0 for p in pts]]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=4, label=line)
        if baseline is not None and by_group[baseline.group]["test_acc"]["mean"] is not None:
            b = by_group[baseline.group]["test_acc"]
            ax.axhline(100 * b["mean"], color="gray", ls="--", label=f"{baseline.label} (baseline)")
            if b["lo"] is not None:
                ax.axhspan(100 * b["lo"], 100 * b["hi"], color="gray", alpha=0.15)
        if logx:
            ax.set_xscale("log")
        ax.set_xlabel(key)
        ax.set_ylabel("test top-1 accuracy (%)")
        ax.set_title(f"{plan['name']}: test accuracy vs {key.split('.')[-1]} (mean, 95% CI)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        save(fig, f"acc_vs_{key.replace('.', '_')}.png")

    # every config side by side
    shown = [e for e in table if e["test_acc"]["mean"] is not None]
    if shown:
        fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(shown) + 2), 4.2))
        ys = [100 * e["test_acc"]["mean"] for e in shown]
        err = [[100 * (e["test_acc"]["mean"] - e["test_acc"]["lo"]) if e["test_acc"]["lo"] is not None else 0
                for e in shown],
               [100 * (e["test_acc"]["hi"] - e["test_acc"]["mean"]) if e["test_acc"]["hi"] is not None else 0
                for e in shown]]
        names = [short(e["label"]) for e in shown]
        ax.bar(range(len(shown)), ys, yerr=err, capsize=5, color=["C1" if e["best"] else "C0" for e in shown])
        members = {g.group: g for g in groups}
        for i, e in enumerate(shown):  # the seeds themselves
            for v in members[e["group"]].values("test_acc"):
                ax.plot(i, 100 * v, "k.", ms=4)
        ax.set_xticks(range(len(shown)), names, rotation=20, ha="right", fontsize=8)
        lo = min(100 * (e["test_acc"]["lo"] or e["test_acc"]["mean"]) for e in shown)
        hi = max(100 * (e["test_acc"]["hi"] or e["test_acc"]["mean"]) for e in shown)
        ax.set_ylim(max(0, lo - 3 * max(hi - lo, 0.5)), min(100, hi + max(hi - lo, 0.5)))
        ax.set_ylabel("test top-1 accuracy (%)")
        ax.set_title(f"{plan['name']}: mean over seeds, 95% CI, dots = seeds")
        ax.grid(axis="y", alpha=0.3)
        save(fig, "configs.png")

    # training curves, mean ± std over seeds
    for metric, ylabel, name in (("test_acc", "test top-1 accuracy (%)", "curves_test_acc.png"),
                                 ("train_loss", "training loss", "curves_train_loss.png")):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        drawn = False
        for i, g in enumerate(groups):
            curves = [[row[metric] for row in r["curve"]] for r in g.rows if r["status"] == Status.COMPLETED]
            if not curves:
                continue
            length = min(len(c) for c in curves)
            scale = 100 if metric.endswith("acc") else 1
            import statistics as st

            mean = [scale * st.mean(c[t] for c in curves) for t in range(length)]
            std = [scale * st.stdev(c[t] for c in curves) if len(curves) > 1 else 0 for t in range(length)]
            epochs = list(range(1, length + 1))
            ax.plot(epochs, mean, color=f"C{i % 10}", label=f"{short(g.label)} (n={len(curves)})")
            ax.fill_between(epochs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                            color=f"C{i % 10}", alpha=0.2)
            drawn = True
        if drawn:
            ax.set_xlabel("epoch")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{plan['name']}: {ylabel}, mean ± std over seeds")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
            save(fig, name)
        else:
            plt.close(fig)
