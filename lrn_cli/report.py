"""Sweep results from the run directories: results.csv, results.md, plots/*.png, HParams.

Everything is recomputed from what the runs left on disk, so `lrn report DIR` works on a
partial sweep (missing runs are marked) and any number of times. Statistics come from scipy:
Student-t 95% confidence intervals of the mean over seeds, Welch's t-test against the
baseline, and Holm's correction for testing several configs against it.
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

    # results.csv: one row per run
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["run_id", "run_dir", "label", *swept, "seed", "status", *METRIC_KEYS])
    for r in rows:
        w.writerow([r["run_id"], r["dir"], r["label"], *[get_key(r["config"], k) for k in swept], r["seed"],
                    r["status"], *[r[k] for k in METRIC_KEYS]])
    runs.write_text(sweep_dir / RESULTS_CSV, buf.getvalue())

    # one row per config
    baseline = next((g for g in groups if g.label == plan.get("baseline")), None)
    table = []
    for g in groups:
        entry = {"label": g.label, "group": g.group, "point": g.point, "runs": len(g.rows), "done": g.n_done,
                 "statuses": sorted({r["status"] for r in g.rows}),
                 **{k: stats(g.values(k), (0.0, 1.0) if k.endswith(("acc", "top5")) else None)
                    for k in ("test_acc", "test_top5", "test_loss", "wall_time_s")}}
        entry["p"] = None if baseline is None or g is baseline else welch_p(g.values("test_acc"),
                                                                            baseline.values("test_acc"))
        table.append(entry)
    adjusted = holm({e["group"]: e["p"] for e in table if e["p"] is not None})
    for e in table:
        e["p_holm"] = adjusted.get(e["group"])
    means = [e for e in table if e["test_acc"]["mean"] is not None]
    best = max(means, key=lambda e: e["test_acc"]["mean"]) if means else None
    for e in table:
        e["best"] = e is best
    runs.write_text(sweep_dir / RESULTS_MD, _markdown(plan, table, rows, baseline))
    _plots(sweep_dir, plan, table, groups, baseline)
    return {"table": table, "rows": len(rows), "completed": sum(r["status"] == Status.COMPLETED for r in rows),
            "failed": sum(r["status"] in runs.FAILURES for r in rows)}


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


def _markdown(plan: dict[str, Any], table: list[dict[str, Any]], rows: list[dict[str, Any]], baseline: Any) -> str:
    done = sum(r["status"] == Status.COMPLETED for r in rows)
    lines = [f"# Sweep `{plan['name']}`", "",
             f"{done} of {len(rows)} runs completed; generated {_dt.datetime.now():%Y-%m-%d %H:%M}. "
             "Accuracies in %, mean ± sample std over seeds; 95% CI of the mean (Student t); "
             f"p: Welch's t-test of test top-1 against the baseline (`{plan.get('baseline') or 'none'}`), "
             "two-sided, and Holm-adjusted for the number of configs compared.", "",
             "| config | n | test top-1 | 95% CI | test top-5 | test loss | wall time (s) | p | p (Holm) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for e in table:
        name = f"**{short(e['label'])}** (best)" if e["best"] else short(e["label"])
        if baseline is not None and e["group"] == baseline.group:
            name += " (baseline)"
        n = f"{e['done']}" if e["done"] == e["runs"] else f"{e['done']}/{e['runs']}"
        loss = "—" if e["test_loss"]["mean"] is None else (
            f"{e['test_loss']['mean']:.4f}" + (f" ± {e['test_loss']['std']:.4f}" if e["test_loss"]["std"] is not None else ""))
        w = e["wall_time_s"]["mean"]
        wall = "—" if w is None else f"{w:.0f}" if w >= 10 else f"{w:.1f}"
        lines.append(f"| {name} | {n} | {_pct(e['test_acc'])} | {_ci(e['test_acc'])} | {_pct(e['test_top5'])} | "
                     f"{loss} | {wall} | {_p(e['p'])} | {_p(e['p_holm'])} |")
    if any(e["p"] is not None and math.isnan(e["p"]) for e in table):
        lines += ["", f"{ZERO_VARIANCE}: the config's seeds all gave one test top-1 and the baseline's "
                  "seeds all gave one too, so Welch's t-test is undefined (its t divides by a zero "
                  "standard error); more test images or seeds let the seeds differ."]
    missing = [r for r in rows if r["status"] != Status.COMPLETED]
    if missing:
        lines += ["", "Not completed (not in the statistics):", ""]
        lines += [f"- `{r['dir']}` {short(r['label'])}, seed {r['seed']}: {r['status']}" for r in missing]
    return "\n".join(lines) + "\n"


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
