"""The sweep report's robustness to common corruptions (Hendrycks & Dietterich, ICLR 2019), from
each completed run's `robustness.json` (robust.py writes it; its schema is in that module).

Per run, with errors E = 1 - top-1 accuracy, E_{s,c} at severity s of corruption c:

    CE_c          = sum_s E_{s,c} / sum_s E^base_{s,c}
    relative CE_c = sum_s (E_{s,c} - E_clean) / sum_s (E^base_{s,c} - E^base_clean)

the baseline's errors being the means over its seeds (per corruption and severity, and of its
clean error); mCE and relative mCE are the means of CE_c and relative CE_c over the 15 benchmark
corruptions that were evaluated (the `lighting` family and the extra ones are not in them). The
baseline's own seeds are normalized the same way, so their mean mCE is 100%. Without a baseline
the normalizer is the number of severities: the plain mean corruption error, and the mean
increase of the error over the clean error. The clean, corrupted, lighting and noise accuracies
and drops are robustness.json's own (its `headline`, `families`): the drop from clean accuracy
is the measure of sensitivity, not the corrupted accuracy.

Each run gives one value per metric; a config's values over its seeds get report.stats (mean,
std, 95% CI) and report.welch_p against the baseline. `analyse` computes everything; `csv_*`,
`markdown` and `write` put it into results.csv, results.md, plots/ and each run's
`events.out.tfevents.0.lrn-mce` (robust/mce, robust/relative_mce for the HParams dashboard).
No torch here: the report runs in a sweep's parent process.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import runs
from .layout import PLOTS, ROBUST_MCE, ROBUSTNESS, RUN_CORRUPTION_GRID
from .runs import Status

VERSION = 1
# the 15 corruptions of CIFAR-10-C / ImageNet-C's mCE, in the paper's order: data.corruptions.BENCHMARK
# (not imported: that module needs torch; tests/test_robust_report.py checks that the two agree)
BENCHMARK = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
             "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
             "jpeg_compression")
# results.csv's robustness columns, per run, after the others; fractions (mce: 1 = the baseline's)
CSV_KEYS = ("clean_acc", "corrupted_acc", "drop", "relative_drop", "mce", "relative_mce", "lighting_drop",
            "noise_drop")
HEADLINE = ("clean_acc", "corrupted_acc", "drop", "relative_drop", "lighting_acc", "lighting_drop", "noise_acc",
            "noise_drop")  # taken from robustness.json as it is
METRICS = (*HEADLINE[:4], "mce", "relative_mce", *HEADLINE[4:])  # per config, in the table's order
ACCURACIES = {"clean_acc", "corrupted_acc", "lighting_acc", "noise_acc"}  # CIs clipped to [0, 1]
TABLES = {"cifar10": ("make_cifar_c.py", 32), "tinyimagenet": ("make_tinyimagenet_c.py", 64),
          "imagenet": ("make_imagenet_c.py", 224)}  # = data.imageops.TABLES, with the reference's script


@dataclass
class Run:
    row: dict[str, Any]  # report.load's row
    data: dict[str, Any]  # its robustness.json
    values: dict[str, float | None] = field(default_factory=dict)  # METRICS
    ce: dict[str, float] = field(default_factory=dict)  # per corruption
    relative_ce: dict[str, float] = field(default_factory=dict)

    def error(self, name: str, severity: int) -> float | None:
        by = self.data["corruptions"].get(name, {}).get("by_severity", {}).get(str(severity))
        return None if by is None or by.get("acc") is None else 1.0 - by["acc"]

    def severities(self, name: str) -> list[int]:
        return sorted(int(s) for s in self.data["corruptions"].get(name, {}).get("by_severity", {}))

    @property
    def clean_error(self) -> float:
        return 1.0 - self.data["clean"]["acc"]


@dataclass
class Robustness:
    baseline: Any  # report.Group or None
    runs: dict[str, Run]  # by run_id: the completed runs with a robustness.json
    table: list[dict[str, Any]]  # per config with at least one such run
    names: list[str]  # every corruption evaluated, in the order the runs list them
    family: dict[str, str]
    families: list[str]
    severities: list[int]
    approximate: dict[str, str]
    missing_benchmark: list[str]  # of the 15, those no run evaluated
    sources: dict[str, set[str]]  # per corruption
    settings: list[dict[str, Any]]  # the distinct `settings` of the runs
    transforms: list[str]  # the distinct eval_transform
    without: list[dict[str, Any]]  # completed runs without a (readable) robustness.json
    unnormalizable: list[str]  # corruptions with no baseline errors to normalize by
    timing: dict[str, float]  # means over runs
    grid: dict[str, Any] | None  # the row of the first run with plots/corruptions.png


# ----------------------------------------------------------------------------- computing

def _read(run_dir: Path) -> dict[str, Any] | None:
    data = runs.read_json(Path(run_dir) / ROBUSTNESS)
    if not isinstance(data, dict) or data.get("version") != VERSION or not isinstance(data.get("corruptions"), dict) \
            or (data.get("clean") or {}).get("acc") is None:
        return None
    return data


def _ratio(num: list[float], den: list[float]) -> float | None:
    """sum(num) / sum(den): a corruption error over severities; None where the normalizer is not positive."""
    d = sum(den)
    return sum(num) / d if d > 0 else None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _normalizers(base: list[Run]) -> tuple[dict[tuple[str, int], float], float | None]:
    """The baseline's mean error over its seeds per (corruption, severity), and its mean clean error."""
    errors: dict[tuple[str, int], list[float]] = defaultdict(list)
    for r in base:
        for name in r.data["corruptions"]:
            for s in r.severities(name):
                if (e := r.error(name, s)) is not None:
                    errors[(name, s)].append(e)
    return {k: sum(v) / len(v) for k, v in errors.items()}, _mean([r.clean_error for r in base])


def _corruption_errors(run: Run, base: dict[tuple[str, int], float] | None, base_clean: float | None) -> None:
    """run.ce, run.relative_ce: per corruption, against the baseline's errors, or unnormalized (base
    None: the normalizer of each severity is 1)."""
    for name in run.data["corruptions"]:
        sevs = [s for s in run.severities(name) if run.error(name, s) is not None]
        if not sevs or (base is not None and any((name, s) not in base for s in sevs)):
            continue
        errs = [run.error(name, s) for s in sevs]
        ref = [base[(name, s)] for s in sevs] if base is not None else [1.0] * len(sevs)
        rel_ref = [e - base_clean for e in ref] if base is not None else [1.0] * len(sevs)
        ce = _ratio(errs, ref)
        rce = _ratio([e - run.clean_error for e in errs], rel_ref)
        if ce is not None:
            run.ce[name] = ce
        if rce is not None:
            run.relative_ce[name] = rce


def _family_curve(run: Run, names: list[str], severities: list[int]) -> list[float | None]:
    """The run's accuracy on a family at severity 0 (clean), then each severity: the mean over the
    family's corruptions that it evaluated."""
    out: list[float | None] = [run.data["clean"]["acc"]]
    for s in severities:
        errs = [e for n in names if (e := run.error(n, s)) is not None]
        out.append(1.0 - sum(errs) / len(errs) if errs else None)
    return out


def analyse(plan: dict[str, Any], rows: list[dict[str, Any]], groups: list[Any], baseline: Any) -> Robustness | None:
    """Everything the report says about robustness; None when no completed run has robustness.json."""
    from .report import stats, welch_p

    loaded: dict[str, Run] = {}
    without = []
    for r in rows:
        if r["status"] != Status.COMPLETED:
            continue
        data = _read(r["path"])
        if data is None:
            without.append(r)
        else:
            loaded[r["run_id"]] = Run(r, data)
    if not loaded:
        return None

    names: list[str] = []
    family: dict[str, str] = {}
    approximate: dict[str, str] = {}
    sources: dict[str, set[str]] = defaultdict(set)
    severities: set[int] = set()
    settings: list[dict[str, Any]] = []
    transforms: list[str] = []
    timing: dict[str, list[float]] = defaultdict(list)
    for run in loaded.values():
        d = run.data
        order = [n for n in (d.get("settings") or {}).get("corruptions") or [] if n in d["corruptions"]]
        for name in [*order, *[n for n in d["corruptions"] if n not in order]]:
            if name not in family:
                names.append(name)
                family[name] = d["corruptions"][name].get("family") or "other"
            sources[name].add(d["corruptions"][name].get("source") or "unknown")
            if d["corruptions"][name].get("approximate"):
                approximate[name] = d["corruptions"][name]["approximate"]
            severities.update(run.severities(name))
        approximate.update(d.get("approximate") or {})
        if d.get("settings") not in settings:
            settings.append(d.get("settings"))
        if d.get("eval_transform") and d["eval_transform"] not in transforms:
            transforms.append(d["eval_transform"])
        for k, v in (d.get("timing") or {}).items():
            if isinstance(v, (int, float)):
                timing[k].append(v)
    families = list(dict.fromkeys(family[n] for n in names))
    approximate = {n: approximate[n] for n in names if n in approximate}
    sev = sorted(severities)

    base_runs = [] if baseline is None else [loaded[r["run_id"]] for r in baseline.rows if r["run_id"] in loaded]
    norm, norm_clean = _normalizers(base_runs) if base_runs else (None, None)
    normalized = norm is not None
    for run in loaded.values():
        _corruption_errors(run, norm, norm_clean)
        h = run.data.get("headline") or {}
        run.values = {k: h.get(k) for k in HEADLINE}
        bench = [n for n in BENCHMARK if n in run.data["corruptions"]]
        run.values["mce"] = _mean([run.ce[n] for n in bench if n in run.ce])
        run.values["relative_mce"] = _mean([run.relative_ce[n] for n in bench if n in run.relative_ce])
    unnormalizable = [n for n in names if normalized and any(
        n in r.data["corruptions"] and not (n in r.ce and n in r.relative_ce) for r in loaded.values())]

    def values(g: Any, key: str) -> list[float]:
        return [loaded[r["run_id"]].values[key] for r in g.rows
                if r["run_id"] in loaded and loaded[r["run_id"]].values.get(key) is not None]

    table = []
    for g in groups:
        mine = [loaded[r["run_id"]] for r in g.rows if r["run_id"] in loaded]
        if not mine:
            continue
        is_base = baseline is not None and g is baseline
        entry: dict[str, Any] = {"label": g.label, "group": g.group, "baseline": is_base, "n": len(mine),
                                 "runs": len(g.rows), "trial": g.rows[0]["trial"],
                                 "run_ids": [r.row["run_id"] for r in mine]}
        for key in METRICS:
            entry[key] = stats(values(g, key), (0.0, 1.0) if key in ACCURACIES else None)
            entry[f"{key}_p"] = None if baseline is None or is_base else welch_p(values(g, key), values(baseline, key))
        entry["seeds"] = {key: values(g, key) for key in METRICS}
        fams: dict[str, dict[str, Any]] = {}
        for fam in families:
            accs = [r.data["families"][fam]["acc"] for r in mine if fam in (r.data.get("families") or {})]
            drops = [r.data["families"][fam]["drop"] for r in mine if fam in (r.data.get("families") or {})]
            members = [n for n in names if family[n] == fam]
            curves = [_family_curve(r, members, sev) for r in mine]
            fams[fam] = {"acc": stats(accs, (0.0, 1.0)), "drop": stats(drops), "drops": drops,
                         "curve": [stats([c[i] for c in curves if c[i] is not None], (0.0, 1.0))
                                   for i in range(len(sev) + 1)]}
        entry["families"] = fams
        entry["heat"] = {n: [_mean([1.0 - e for r in mine if (e := r.error(n, s)) is not None]) for s in sev]
                         for n in names}
        bench_seen = {n for r in mine for n in BENCHMARK if n in r.data["corruptions"]}
        entry["mce_over"] = [n for n in BENCHMARK if n in bench_seen]
        entry["missing_benchmark"] = [n for n in BENCHMARK if n not in bench_seen]
        entry["approximate_benchmark"] = [n for n in entry["mce_over"] if n in approximate]
        table.append(entry)
    missing = [n for n in BENCHMARK if n not in family]
    return Robustness(baseline if normalized else None, loaded, table, names, family, families, sev, approximate,
                      missing, dict(sources), settings, transforms, without, unnormalizable,
                      {k: sum(v) / len(v) for k, v in timing.items()},
                      next((r.row for r in loaded.values() if (Path(r.row["path"]) / RUN_CORRUPTION_GRID).is_file()),
                           None))


# ----------------------------------------------------------------------------- results.csv

def csv_columns(robust: Robustness | None) -> list[str]:
    """results.csv's robustness columns: none without robustness results."""
    return list(CSV_KEYS) if robust is not None else []


def csv_cells(robust: Robustness | None, row: dict[str, Any]) -> list[Any]:
    if robust is None:
        return []
    run = robust.runs.get(row["run_id"])
    return [None if run is None else run.values.get(k) for k in CSV_KEYS]


# ----------------------------------------------------------------------------- results.md

def _source_line(robust: Robustness) -> str:
    fly = [n for n in robust.names if "on_the_fly" in robust.sources[n]]
    released = [n for n in robust.names if "released" in robust.sources[n]]
    if fly and not released:
        return ("Corrupted images: **generated on the fly** (`lrn_cli.data.corruptions`, ports of the reference "
                "code) from the test images, for every corruption: these are on-the-fly results, not accuracies "
                "on the released CIFAR-10-C / ImageNet-C files.")
    if released and not fly:
        return "Corrupted images: read from the released files (CIFAR-10-C / ImageNet-C) for every corruption."
    both = [n for n in fly if n in released]
    line = (f"Corrupted images: read from the released files for {', '.join(released)}; **generated on the fly** "
            f"(`lrn_cli.data.corruptions`; marked † in the heatmaps) for {', '.join(fly)}")
    if both:
        line += f" (some runs one way, some the other: {', '.join(both)})"
    return line + "."


def _settings_lines(robust: Robustness) -> list[str]:
    def one(s: dict[str, Any]) -> str:
        sev = s.get("severities") or robust.severities
        sevs = f"{sev[0]}–{sev[-1]}" if sev == list(range(sev[0], sev[-1] + 1)) and len(sev) > 1 else \
            ", ".join(map(str, sev))
        script, side = TABLES.get(s.get("table"), (None, None))
        table = f"parameter table `{s.get('table')}`" + (f" (the reference's {script}, written for {side} px images)"
                                                         if script else "")
        images = s.get("images")
        per = f" ({s['per_class']} per class)" if s.get("per_class") else ""
        root = f"; released files from `{s['root']}`" if s.get("root") else ""
        return (f"severities {sevs}; {table}; images of {s.get('image_size')} px; "
                f"{images:,}{per} test images per corruption and severity" if isinstance(images, int) else
                f"severities {sevs}; {table}; images of {s.get('image_size')} px") + \
            f", the same images for the clean accuracy; corruption seed {s.get('seed')}{root}"

    settings = [s for s in robust.settings if isinstance(s, dict)]
    if len(settings) == 1:
        lines = [f"Settings: {one(settings[0])}."]
    else:
        lines = [f"**The runs were evaluated with {len(settings)} different settings** (their numbers are not "
                 "comparable one for one; robustness.json gives each run's):", ""]
        lines += [f"- {one(s)}" for s in settings]
        lines.append("")
    if len(robust.transforms) == 1:
        lines.append(f"The network was fed: {robust.transforms[0]}.")
    elif robust.transforms:
        lines.append("The networks were fed: " + "; ".join(robust.transforms) + ".")
    t = robust.timing
    if t.get("wall_s"):
        lines.append(f"Evaluation time per run: {t['wall_s']:.1f} s on average "
                     f"(corrupting {t.get('corrupt_s', 0):.1f} s, "
                     f"forward passes {t.get('forward_s', 0):.1f} s).")
    return lines


def _note(e: dict[str, Any]) -> str:
    """What a config's mCE is a mean over, where that is not simply the 15 (short: the corruptions
    not evaluated are listed once, above the tables)."""
    parts = []
    if len(e["mce_over"]) < len(BENCHMARK):
        parts.append(f"over {len(e['mce_over'])} of the 15")
    if e["approximate_benchmark"]:
        parts.append("approximate: " + ", ".join(f"{n}*" for n in e["approximate_benchmark"]))
    return "; ".join(parts)


LABELS = {"clean_acc": "clean top-1 (%)", "corrupted_acc": "mean corrupted top-1 (%)", "drop": "**drop (pp)**",
          "relative_drop": "relative drop (% of clean error)", "mce": "mCE (%)", "relative_mce": "relative mCE (%)",
          "lighting_acc": "lighting top-1 (%)", "lighting_drop": "lighting drop (pp)",
          "noise_acc": "noise top-1 (%)", "noise_drop": "noise drop (pp)"}
UNNORMALIZED = {"mce": "mean corruption error (%, unnormalized)",
                "relative_mce": "mean error increase over clean (pp, unnormalized)"}


def markdown(robust: Robustness | None, base_label: str | None) -> str:
    """results.md's Robustness section ("" without robustness results)."""
    if robust is None:
        return ""
    from .report import _ci, _p, _pct, _pp, short

    normalized = robust.baseline is not None
    base = f"`{short(base_label)}`" if base_label else "none"
    n_runs = len(robust.runs)
    lines = ["", "## Robustness", "",
             f"Accuracy on corrupted test images (Hendrycks & Dietterich, ICLR 2019: the 15 benchmark corruptions of "
             f"CIFAR-10-C / ImageNet-C, and further families such as lighting), from the robustness.json of {n_runs} "
             f"completed run{'s' if n_runs > 1 else ''}.", "",
             _source_line(robust), "", *_settings_lines(robust), ""]
    if robust.approximate:
        lines += ["Approximate corruptions (marked *; not the reference algorithm exactly): " +
                  "; ".join(f"{n}: {why}" for n, why in robust.approximate.items()) + ".", ""]
    if robust.missing_benchmark:
        lines += [f"Not evaluated, of the 15 benchmark corruptions: {', '.join(robust.missing_benchmark)} (the mCE is "
                  "the mean over the others).", ""]
    if normalized:
        mce_text = (f"CE of a corruption: the run's errors (E = 1 − top-1) summed over severities, over the baseline "
                    f"({base})'s, the baseline's errors being the means over its seeds; relative CE: the same with "
                    "each error's increase over the clean error; mCE and relative mCE: their means over the benchmark "
                    "corruptions evaluated (100% = the baseline; below: fewer errors under corruption, and a smaller "
                    "increase of the error, than the baseline).")
    else:
        why = f"the baseline ({base}) has no robustness.json" if base_label else "the spec names no baseline"
        mce_text = (f"**No baseline** ({why}), so no normalized mCE and no p-values: the columns give the "
                    "unnormalized mean "
                    "corruption error (the error averaged over severities, then over the benchmark corruptions "
                    "evaluated) and the mean increase of the error over the clean error, in percentage points.")
    lines += ["Sensitivity is the **drop** from clean accuracy (clean minus mean corrupted top-1, percentage points), "
              "not the corrupted accuracy: a config that is more accurate everywhere is not thereby less sensitive. "
              "Relative drop: the drop over the clean error. " + mce_text +
              " Means ± sample std over seeds, 95% CI of "
              "the mean (Student t)" + (f", p: Welch's t-test of each run's value against the baseline's ({base}), "
                                        "two-sided, not adjusted for multiple comparisons." if normalized else "."), ""]
    if robust.unnormalizable:
        lines += ["Not in every run's CE or relative CE (the baseline did not evaluate them at those severities, or "
                  "its errors there do not exceed its clean error): " + ", ".join(robust.unnormalizable) + ".", ""]

    by_group = {e["group"]: e for e in robust.table}
    b = by_group.get(robust.baseline.group) if robust.baseline is not None else None
    mce_h, rmce_h = ("mCE (%)", "relative mCE (%)") if normalized else ("mean CE (%)", "mean error increase (pp)")
    lines += ["| config | n | clean top-1 | corrupted top-1 | drop (pp) | 95% CI | p | drop − baseline's (pp) "
              f"| {rmce_h} | p | {mce_h} | p |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in robust.table:
        name = short(e["label"]) + (" (baseline)" if e["baseline"] else "")
        n = f"{e['n']}" if e["n"] == e["runs"] else f"{e['n']}/{e['runs']}"
        vs = None if b is None or e["drop"]["mean"] is None or b["drop"]["mean"] is None \
            else e["drop"]["mean"] - b["drop"]["mean"]
        lines.append(f"| {name} | {n} | {_pct(e['clean_acc'])} | {_pct(e['corrupted_acc'])} | {_pct(e['drop'])} | "
                     f"{_ci(e['drop'])} | {_p(e['drop_p'])} | {'—' if e['baseline'] else _pp(vs)} | "
                     f"{_pct(e['relative_mce'], 1)} | {_p(e['relative_mce_p'])} | {_pct(e['mce'], 1)} | "
                     f"{_p(e['mce_p'])} |")
    notes = {short(e["label"]): _note(e) for e in robust.table if _note(e)}
    if len(set(notes.values())) == 1 and len(notes) == len(robust.table):
        lines += ["", f"mCE and relative mCE of every config: {next(iter(notes.values()))}."]
    elif notes:
        lines += ["", "mCE and relative mCE " + "; ".join(f"of {k}: {v}" for k, v in notes.items()) + "."]

    for e in robust.table:
        lines += ["", f"### {short(e['label'])}" + (" (baseline)" if e["baseline"] else "") +
                  f": {e['n']} seed{'s' if e['n'] > 1 else ''}", "",
                  "| metric | mean ± std | 95% CI | p vs baseline |", "|---|---|---|---|"]
        for key in METRICS:
            s = e[key]
            if s["n"] == 0:
                continue
            label = LABELS[key] if normalized or key not in UNNORMALIZED else UNNORMALIZED[key]
            if key in ("mce", "relative_mce") and _note(e):
                label += f" ({_note(e)})"
            lines.append(f"| {label} | {_pct(s)} | {_ci(s)} | {'—' if e['baseline'] else _p(e[f'{key}_p'])} |")

    lines += ["", "### By family", "",
              "Mean top-1 (%) / drop from clean (pp), means over seeds; a family's figures average its corruptions "
              "and severities.", "",
              "| config | " + " | ".join(f"{fam} ({sum(robust.family[n] == fam for n in robust.names)})"
                                        for fam in robust.families) + " |",
              "|---|" + "---|" * len(robust.families)]
    for e in robust.table:
        cells = []
        for fam in robust.families:
            f = e["families"][fam]
            cells.append("—" if f["acc"]["mean"] is None else
                         f"{100 * f['acc']['mean']:.2f} / {100 * f['drop']['mean']:.2f}")
        lines.append(f"| {short(e['label'])}{' (baseline)' if e['baseline'] else ''} | " + " | ".join(cells) + " |")
    def members(fam: str) -> str:
        return ", ".join(n + ("*" if n in robust.approximate else "") for n in robust.names if robust.family[n] == fam)

    lines += ["", "Families: " + "; ".join(f"{fam}: {members(fam)}" for fam in robust.families) + "."]
    grid = (f"plots/corruption_grid.png (the corrupted images, as `{robust.grid['dir']}` was evaluated on them)"
            if robust.grid is not None else f"no corruption grid (no run has {RUN_CORRUPTION_GRID})")
    lines += ["", "Plots: plots/robust_drops.png (the drop per family), plots/robust_severity.png (accuracy against "
              f"severity per family), plots/robust_heatmap_*.png (per config, corruption x severity); {grid}."]
    if robust.without:
        lines += ["", "Completed runs without robustness.json (not in these statistics; `lrn eval` makes it):", ""]
        lines += [f"- `{r['dir']}` {short(r['label'])}, seed {r['seed']}" for r in robust.without]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- files

def write_events(rows: list[dict[str, Any]], robust: Robustness | None) -> None:
    """Each run's robust/mce and robust/relative_mce (fractions, 1 = the baseline's) for the HParams
    dashboard, in its own event file, rewritten whole; removed where there is none (no baseline,
    no robustness.json)."""
    from .tb import write_scalars

    for r in rows:
        path = Path(r["path"]) / ROBUST_MCE
        run = robust.runs.get(r["run_id"]) if robust is not None and robust.baseline is not None else None
        values = {} if run is None else {f"robust/{k}": run.values[k] for k in ("mce", "relative_mce")
                                         if run.values.get(k) is not None}
        if values and path.parent.is_dir():
            write_scalars(path, values, step=int(r.get("epochs") or 0))
        elif path.exists():
            path.unlink()


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._-") or "config"


def write_plots(sweep_dir: Path, plan: dict[str, Any], robust: Robustness | None) -> list[str]:
    """plots/robust_*.png and plots/corruption_grid.png -> the names written."""
    if robust is None:
        return []
    from . import robust_plots
    from .report import short

    out = Path(sweep_dir) / PLOTS
    out.mkdir(exist_ok=True)
    written = []
    title = plan.get("name", "sweep")
    base = short(robust.baseline.label) if robust.baseline is not None else None
    fly = {n for n, s in robust.sources.items() if "on_the_fly" in s}
    if fly == set(robust.names):  # all on the fly: said once in the title, not on every row
        fly, how = set(), " (corruptions generated on the fly)"
    else:
        how = ""
    for e in robust.table:
        name = f"robust_heatmap_{_slug(e['trial'])}.png"
        robust_plots.heatmap(out / name, f"{title}: {short(e['label'])}{' (baseline)' if e['baseline'] else ''}, "
                             f"n={e['n']}{how}", robust.names, robust.family, robust.severities,
                             [[math.nan if v is None else v for v in e["heat"][n]] for n in robust.names],
                             e["clean_acc"]["mean"], set(robust.approximate), fly)
        written.append(name)
    for stale in out.glob("robust_heatmap_*.png"):  # configs of an earlier report
        if stale.name not in written:
            stale.unlink()
    labels = {e["group"]: short(e["label"]) for e in robust.table}
    robust_plots.severity_curves(out / "robust_severity.png", title + how, robust.families, robust.severities,
                                 {labels[e["group"]]: {f: e["families"][f]["curve"] for f in robust.families}
                                  for e in robust.table}, base)
    written.append("robust_severity.png")
    robust_plots.drop_bars(out / "robust_drops.png", title + how, ["all", *robust.families],
                           {labels[e["group"]]: [e["drop"], *[e["families"][f]["drop"] for f in robust.families]]
                            for e in robust.table},
                           {labels[e["group"]]: [e["seeds"]["drop"], *[e["families"][f]["drops"]
                                                                       for f in robust.families]]
                            for e in robust.table}, base)
    written.append("robust_drops.png")
    if robust.grid is not None:  # the first completed run's (plan order), as its evaluation drew it
        data = (Path(robust.grid["path"]) / RUN_CORRUPTION_GRID).read_bytes()
        runs.atomic_write(out / "corruption_grid.png", lambda f: f.write(data), mode="wb")
        written.append("corruption_grid.png")
    return written


def write(sweep_dir: Path, plan: dict[str, Any], rows: list[dict[str, Any]], robust: Robustness | None) -> None:
    """The report's robustness files: each run's mCE events, and the plots."""
    write_events(rows, robust)
    write_plots(sweep_dir, plan, robust)
