"""The sweep report's robustness section (robust_report.py, robust_plots.py) on fake sweeps whose
robustness.json files hold hand-chosen errors: CE, mCE, relative mCE, drops and Welch p against
values computed by hand; results.csv's columns, the HParams metrics, the plots; a sweep without
robustness.json reports exactly as before; the grid of corrupted images."""
import csv
import math
import re

import numpy as np
import pytest
from scipy import stats as st
from test_sweep import fake_sweep, read_hparams

from lrn_cli import layout, robust_plots, robust_report, runs, tb
from lrn_cli.report import report

FAMILY = {"gaussian_noise": "noise", "glass_blur": "blur", "gamma": "lighting"}
APPROX = {"glass_blur": "a faster local shuffle than the reference's"}
# per run: clean error, then the errors at severities 1 and 2 of each corruption
ERRORS = {
    "base": [(0.10, {"gaussian_noise": (0.30, 0.50), "glass_blur": (0.20, 0.40), "gamma": (0.15, 0.25)}),
             (0.12, {"gaussian_noise": (0.32, 0.52), "glass_blur": (0.22, 0.38), "gamma": (0.17, 0.23)}),
             (0.08, {"gaussian_noise": (0.28, 0.48), "glass_blur": (0.18, 0.42), "gamma": (0.13, 0.27)})],
    "lrn": [(0.15, {"gaussian_noise": (0.25, 0.39), "glass_blur": (0.21, 0.33), "gamma": (0.20, 0.22)}),
            (0.13, {"gaussian_noise": (0.27, 0.45), "glass_blur": (0.25, 0.35), "gamma": (0.18, 0.20)}),
            (0.14, {"gaussian_noise": (0.26, 0.38), "glass_blur": (0.20, 0.28), "gamma": (0.19, 0.21)})],
}


def robustness_json(clean_err: float, errors: dict[str, tuple[float, ...]]) -> dict:
    """A robustness.json as the per-run evaluation writes it (its schema, version 1)."""
    clean = 1 - clean_err

    def block(names):
        accs = [1 - e for n in names for e in errors[n]]
        acc = sum(accs) / len(accs)
        return {"acc": acc, "drop": clean - acc, "relative_drop": (clean - acc) / clean_err, "corruptions": names}

    corruptions = {n: {"family": FAMILY[n], "source": "on_the_fly", "approximate": APPROX.get(n),
                       "by_severity": {str(s + 1): {"acc": 1 - e, "top5": 0.99, "loss": e} for s, e in enumerate(es)},
                       "acc": sum(1 - e for e in es) / len(es)} for n, es in errors.items()}
    families = {f: block([n for n in errors if FAMILY[n] == f]) for f in ("noise", "blur", "lighting")}
    every = block(list(errors))
    bench = block(["gaussian_noise", "glass_blur"])
    return {"version": 1,
            "settings": {"corruptions": list(errors), "severities": [1, 2], "seed": 0, "per_class": None, "root": None,
                         "table": "cifar10", "image_size": 32, "images": 1000},
            "eval_transform": "the stored 32 px test images, normalized",
            "clean": {"acc": clean, "top5": 0.999, "loss": clean_err},
            "corruptions": corruptions, "families": families,
            "headline": {"clean_acc": clean, "corrupted_acc": every["acc"], "drop": every["drop"],
                         "relative_drop": every["relative_drop"], "benchmark_acc": bench["acc"],
                         "benchmark_drop": bench["drop"], "lighting_acc": families["lighting"]["acc"],
                         "lighting_drop": families["lighting"]["drop"], "noise_acc": families["noise"]["acc"],
                         "noise_drop": families["noise"]["drop"]},
            "approximate": dict(APPROX), "missing_benchmark": [n for n in robust_report.BENCHMARK if n not in errors],
            "timing": {"wall_s": 3.0, "corrupt_s": 1.0, "forward_s": 1.5, "forward_images": 7000}}


def robust_sweep(tmp_path, baseline="base", grid=True):
    sweep = fake_sweep(tmp_path, {k: [1 - e for e, _ in v] for k, v in ERRORS.items()}, baseline)
    for label, seeds in ERRORS.items():
        for seed, (clean_err, errors) in enumerate(seeds):
            runs.write_json(sweep / f"{label}-{seed}" / layout.ROBUSTNESS, robustness_json(clean_err, errors))
    if grid:  # the evaluation's picture, in the second run only: the report takes the first that has one
        robust_plots.save_png(np.full((20, 30, 3), 7, dtype=np.uint8), sweep / "base-1" / layout.RUN_CORRUPTION_GRID)
    return sweep


# by hand. The baseline's mean errors over its 3 seeds: gaussian_noise 0.30, 0.50 (sum 0.80), glass_blur
# 0.20, 0.40 (sum 0.60), clean 0.10; minus the clean error: sums 0.60 and 0.40 (gamma is not a benchmark
# corruption, so in neither mCE).
MCE = {"base": [(0.80 / 0.80 + 0.60 / 0.60) / 2, (0.84 / 0.80 + 0.60 / 0.60) / 2, (0.76 / 0.80 + 0.60 / 0.60) / 2],
       "lrn": [(0.64 / 0.80 + 0.54 / 0.60) / 2, (0.72 / 0.80 + 0.60 / 0.60) / 2, (0.64 / 0.80 + 0.48 / 0.60) / 2]}
RMCE = {"base": [(0.60 / 0.60 + 0.40 / 0.40) / 2, (0.60 / 0.60 + 0.36 / 0.40) / 2, (0.60 / 0.60 + 0.44 / 0.40) / 2],
        "lrn": [(0.34 / 0.60 + 0.24 / 0.40) / 2, (0.46 / 0.60 + 0.34 / 0.40) / 2, (0.36 / 0.60 + 0.20 / 0.40) / 2]}
# clean minus the mean of the 6 corrupted accuracies (3 corruptions x 2 severities)
DROP = {"base": [0.90 - 4.20 / 6, 0.88 - 4.16 / 6, 0.92 - 4.24 / 6],
        "lrn": [0.85 - 4.40 / 6, 0.87 - 4.30 / 6, 0.86 - 4.48 / 6]}
NOISE_DROP = {"base": [0.90 - 0.60, 0.88 - 0.58, 0.92 - 0.62], "lrn": [0.85 - 0.68, 0.87 - 0.64, 0.86 - 0.68]}


def welch_by_hand(a, b):
    ma, mb = np.mean(a), np.mean(b)
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return 2 * st.t.sf(abs(ma - mb) / math.sqrt(va + vb), df)


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("robust")
    sweep = robust_sweep(tmp)
    tb.write_hparams_config(sweep, ["x"], [{"x": k} for k in ERRORS])  # what `lrn ablate` writes first
    out = report(sweep)
    return sweep, {e["label"]: e for e in out["robustness"]}


def test_mce_relative_mce_and_drops_against_hand_computed_values(reported):
    _, table = reported
    assert MCE["lrn"] == pytest.approx([0.85, 0.95, 0.80])
    assert RMCE["lrn"] == pytest.approx([0.35 / 0.6, 0.80833333, 0.55])
    for label in ("base", "lrn"):
        e = table[label]
        assert e["n"] == 3
        assert e["seeds"]["mce"] == pytest.approx(MCE[label], abs=1e-12)
        assert e["seeds"]["relative_mce"] == pytest.approx(RMCE[label], abs=1e-12)
        assert e["seeds"]["drop"] == pytest.approx(DROP[label], abs=1e-12)
        assert e["seeds"]["noise_drop"] == pytest.approx(NOISE_DROP[label], abs=1e-12)
        for key, want in (("mce", MCE), ("drop", DROP)):
            m, sd = np.mean(want[label]), np.std(want[label], ddof=1)
            assert e[key]["mean"] == pytest.approx(m, abs=1e-12) and e[key]["std"] == pytest.approx(sd, abs=1e-12)
            assert e[key]["hi"] - m == pytest.approx(st.t.ppf(0.975, 2) * sd / math.sqrt(3), rel=1e-9)
    # the baseline normalized by its own mean: exactly 100%, and no test against itself
    assert table["base"]["mce"]["mean"] == pytest.approx(1.0)
    assert table["base"]["relative_mce"]["mean"] == pytest.approx(1.0)
    assert table["base"]["mce_p"] is None and table["base"]["drop_p"] is None
    for key, want in (("mce", MCE), ("relative_mce", RMCE), ("drop", DROP), ("noise_drop", NOISE_DROP)):
        assert table["lrn"][f"{key}_p"] == pytest.approx(welch_by_hand(want["lrn"], want["base"]), rel=1e-9)
    # lrn is less accurate clean (86% vs 90%) yet less sensitive: a smaller drop, and relative mCE < 100%
    assert table["lrn"]["clean_acc"]["mean"] == pytest.approx(0.86)
    assert table["lrn"]["drop"]["mean"] < table["base"]["drop"]["mean"]
    f = table["lrn"]["families"]
    assert f["lighting"]["drop"]["mean"] == pytest.approx(0.06)
    assert f["lighting"]["drop"]["std"] == pytest.approx(0, abs=1e-12)
    # accuracy against severity, per family: the clean accuracy first, then the family's mean per severity
    assert [s["mean"] for s in f["blur"]["curve"]] == pytest.approx([0.86, 1 - 0.22, 1 - 0.32])
    assert table["lrn"]["heat"]["gaussian_noise"] == pytest.approx([1 - 0.26, 1 - (0.39 + 0.45 + 0.38) / 3])
    assert table["lrn"]["mce_over"] == ["gaussian_noise", "glass_blur"]


def test_results_md_csv_and_plots(reported):
    sweep, table = reported
    md = (sweep / "results.md").read_text()
    section = md[md.index("\n## Robustness"):]
    assert "**generated on the fly**" in section and "not accuracies on the released CIFAR-10-C" in section
    assert "parameter table `cifar10` (the reference's make_cifar_c.py, written for 32 px images)" in section
    assert "1,000 test images per corruption and severity" in section and "severities 1–2" in section
    assert "glass_blur: a faster local shuffle" in section
    assert "Not evaluated, of the 15 benchmark corruptions: shot_noise" in section
    assert "mCE and relative mCE of every config: over 2 of the 15; approximate: glass_blur*." in section
    # the overview row: clean, corrupted, drop ± std, CI, p, drop minus the baseline's, relative mCE, mCE
    row = next(x for x in section.splitlines() if x.startswith("| lrn | 3 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    d = np.array(DROP["lrn"])
    assert cells[2] == "86.00 ± 1.00" and cells[4] == f"{100 * d.mean():.2f} ± {100 * d.std(ddof=1):.2f}"
    assert cells[6] == f"{welch_by_hand(DROP['lrn'], DROP['base']):.2g}"
    assert cells[7] == f"{100 * (d.mean() - np.mean(DROP['base'])):+.2f}"
    assert cells[8].startswith(f"{100 * np.mean(RMCE['lrn']):.1f} ± ") and cells[10].startswith("86.7 ± ")
    assert "| base (baseline) | 3 | 90.00 ± 2.00 |" in section and "| 100.0 ± 5.0 | — | 100.0 ± 2.5 | — |" in section
    assert "### lrn: 3 seeds" in section and "| lighting drop (pp) | 6.00 ± 0.00 | [6.00, 6.00] |" in section
    assert "| **drop (pp)** |" in section
    assert "| relative mCE (%) (over 2 of the 15; approximate: glass_blur*) | 64.72 ± 14.05 |" in section
    fam = next(x for x in section.splitlines() if x.startswith("| lrn | ") and x.count("|") == 5)
    # noise, blur, lighting: mean acc / drop over seeds; noise (0.68, 0.64, 0.68) / (0.17, 0.23, 0.18), blur
    # (0.73, 0.70, 0.76) / (0.12, 0.17, 0.10), lighting (0.79, 0.81, 0.80) / 0.06 each
    assert fam == "| lrn | 66.67 / 19.33 | 73.00 / 13.00 | 80.00 / 6.00 |"
    assert "| config | noise (1) | blur (1) | lighting (1) |" in section
    assert "as `base-1` was evaluated on them" in section
    # results.csv: the old columns, in order, then the robustness ones
    with open(sweep / "results.csv") as fh:
        header, *rows = list(csv.reader(fh))
    assert header[-len(robust_report.CSV_KEYS) - 5:] == ["git_commit", "lrn_inert", "paired_only_this_correct",
                                                          "paired_only_baseline_correct", "mcnemar_p",
                                                          *robust_report.CSV_KEYS]
    by = {r[0]: dict(zip(header, r)) for r in rows}
    assert float(by["lrn-0"]["mce"]) == pytest.approx(0.85)
    assert float(by["lrn-2"]["drop"]) == pytest.approx(DROP["lrn"][2])
    assert float(by["lrn-1"]["noise_drop"]) == pytest.approx(0.23)
    assert float(by["base-2"]["lighting_drop"]) == pytest.approx(0.12)
    plots = sweep / "plots"
    heatmaps = [f"robust_heatmap_{e['trial']}.png" for e in table.values()]
    for name in ("robust_drops.png", "robust_severity.png", *heatmaps):
        assert (plots / name).stat().st_size > 10_000, name
    assert (plots / "corruption_grid.png").read_bytes() == (sweep / "base-1" / layout.RUN_CORRUPTION_GRID).read_bytes()


def test_hparams_dashboard_gets_the_mce_of_each_run(reported):
    sweep, _ = reported
    experiment, groups = read_hparams(sweep)
    assert {"robust/mce", "robust/relative_mce", "robust/drop", "robust/noise_drop"} <= \
        {m.name.tag for m in experiment.metric_infos}
    for g in groups:
        label = "lrn" if "lrn" in g.name else "base"
        values = {m.name.tag: m.value for m in g.metric_values}
        assert values["robust/mce"] == pytest.approx(np.mean(MCE[label]), abs=1e-6)  # the mean of the seeds
        assert values["robust/relative_mce"] == pytest.approx(np.mean(RMCE[label]), abs=1e-6)
    report(sweep)  # rewritten, not appended to
    _, again = read_hparams(sweep)
    assert all(len(g.sessions) == 3 for g in again)
    assert [p.name for p in (sweep / "lrn-0").glob("*lrn-mce*")] == [layout.ROBUST_MCE]


def test_without_a_baseline_the_corruption_errors_are_unnormalized(tmp_path):
    sweep = robust_sweep(tmp_path, baseline=None, grid=False)
    (sweep / "lrn-0" / layout.ROBUST_MCE).write_bytes(b"stale")
    # a run that did not complete is not in the statistics, even with a robustness.json
    runs.write_json(sweep / "lrn-2" / "summary.json", {"status": "failed", "epochs": 1})
    table = {e["label"]: e for e in report(sweep)["robustness"]}
    assert table["lrn"]["n"] == 2 and table["lrn"]["seeds"]["mce"][1] == pytest.approx((0.36 + 0.30) / 2)
    # the mean over the benchmark corruptions of the error averaged over severities, and of its
    # increase over the clean error: lrn seed 0, (0.32 + 0.27) / 2 and ((0.32 - 0.15) + (0.27 - 0.15)) / 2
    assert table["lrn"]["seeds"]["mce"][0] == pytest.approx(0.295, abs=1e-12)
    assert table["lrn"]["seeds"]["relative_mce"][0] == pytest.approx(0.145, abs=1e-12)
    assert table["lrn"]["mce_p"] is None and table["lrn"]["drop_p"] is None
    md = (sweep / "results.md").read_text()
    assert "**No baseline** (the spec names no baseline)" in md and "mean CE (%)" in md
    assert "no corruption grid" in md and "| lrn | 2/3 |" in md
    assert not (sweep / "lrn-0" / layout.ROBUST_MCE).exists()  # no baseline, no mCE for the dashboard


def _undated(text: str) -> str:
    return re.sub(r"generated \d{4}-\d\d-\d\d \d\d:\d\d", "generated -", text)


def test_a_sweep_without_robustness_json_reports_as_before(tmp_path, reported):
    plain = fake_sweep(tmp_path, {k: [1 - e for e, _ in v] for k, v in ERRORS.items()}, "base")
    out = report(plain)
    assert out["robustness"] is None
    md = (plain / "results.md").read_text()
    assert "Robustness" not in md and not list((plain / "plots").glob("robust_*")) and \
        not (plain / "plots" / "corruption_grid.png").exists()
    with open(plain / "results.csv") as fh:
        header = next(csv.reader(fh))
    assert header[-1] == "mcnemar_p" and not set(robust_report.CSV_KEYS) & set(header)
    assert not list(plain.glob("*/events.out.tfevents.0.lrn-mce"))
    # the same sweep with robustness: results.md is the same up to the section appended to it
    with_section = (reported[0] / "results.md").read_text()
    assert _undated(with_section[:with_section.index("\n## Robustness")]) == _undated(md)


# ----------------------------------------------------------------------------- the grid of corruptions

def test_corruption_grid_lays_out_every_corruption_and_severity(tmp_path):
    import torch

    from lrn_cli.data import corruptions as mod

    names = [n for n in mod.CORRUPTIONS if mod.CORRUPTIONS[n] in ("noise", "lighting")][:1] + \
        [n for n in mod.CORRUPTIONS if mod.CORRUPTIONS[n] == "blur"][:1]
    images = np.random.default_rng(0).integers(0, 256, (3, 3, 32, 32), dtype=np.uint8)
    sev = [1, 3, 5]
    grid = robust_plots.corruption_grid(images, names, sev, seed=0, start=0)
    cell = robust_plots.grid_cell(32)
    assert cell == 96 and grid.dtype == np.uint8 and grid.ndim == 3 and grid.shape[2] == 3
    block = 4 * cell + 3 * robust_plots._GAP
    assert grid.shape[1] == 170 + 3 * block + 2 * robust_plots._BLOCK_GAP + 8
    families = len({mod.CORRUPTIONS[n] for n in names})
    approx = any(n in mod.APPROXIMATE for n in names)
    assert grid.shape[0] == 64 + 2 * cell + robust_plots._GAP + (families - 1) * robust_plots._FAMILY_GAP + \
        (24 if approx else 8)
    # the clean image 1 sits upscaled 3x, pixel for pixel, in the first row; severity 5 of the first
    # corruption is what corrupt() makes of it
    x0 = 170 + block + robust_plots._BLOCK_GAP
    up = images[1].transpose(1, 2, 0).repeat(3, 0).repeat(3, 1)
    assert (grid[64:64 + cell, x0:x0 + cell] == up).all()
    c5 = mod.corrupt(torch.from_numpy(images), names[0], 5).numpy()
    x5 = x0 + 3 * (cell + robust_plots._GAP)
    assert (grid[64:64 + cell, x5:x5 + cell] == c5[1].transpose(1, 2, 0).repeat(3, 0).repeat(3, 1)).all()
    assert grid[:64].min() < 100  # labels drawn
    robust_plots.save_png(grid, tmp_path / "p" / "g.png")
    from PIL import Image

    assert (np.asarray(Image.open(tmp_path / "p" / "g.png")) == grid).all()
    assert not list((tmp_path / "p").glob(".*.tmp"))


def test_the_benchmark_list_is_the_corruption_modules():
    try:
        from lrn_cli.data.corruptions import BENCHMARK
    except ImportError:
        pytest.skip("lrn_cli.data.corruptions is not there yet")
    assert tuple(BENCHMARK) == robust_report.BENCHMARK
