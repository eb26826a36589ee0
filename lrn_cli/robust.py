"""Robustness: a trained network's accuracy on corrupted test images (`lrn eval`, and the end of
`lrn train` when `eval.corruptions` is set).

`evaluate_run(run_dir)` reads the run's checkpoint (`trained.load_trained`) and its test split,
then for every corruption x severity of `eval.*` corrupts the test images the network sees
(after the run's eval transform: CIFAR's stored 32 px, an image folder's center crop) with
`data.corruptions.corrupt`, or reads them from released files (`eval.corruptions_root`,
`data.released`), and measures top-1, top-5 and loss. The clean images are measured on the same
selection (`eval.corruption_per_class`: a fixed stratified subset of the test split; image i of
the selection is image i to the corruptions' random draws). It writes, each atomically:

    RUN/robustness.json                            per corruption x severity, families, headline
    RUN/summary.json                               its `robustness` headline figures (updated)
    RUN/events.out.tfevents.0.lrn-robustness       TensorBoard: robust/*, corruption/<name> by severity
    RUN/plots/corruptions.png                      a few test images under every corruption and severity

A run counts as evaluated when its robustness.json holds the same `settings`: `lrn eval` on a
sweep skips those, so an interrupted evaluation resumes run by run. Metrics: accuracies are
fractions; a family's `drop` is clean accuracy minus its mean corrupted accuracy (sensitivity is
the drop, not the corrupted accuracy), `relative_drop` the drop over the clean error. The mCE and
relative mCE need a baseline, so the sweep report computes them (`robust_report.py`).
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F

from . import runs
from .config import Config, load_config
from .data import Data, load_data, stratified_subset
from .data.augment import normalize
from .errors import UserError
from .layout import ROBUSTNESS, ROBUSTNESS_EVENTS, RUN_CORRUPTION_GRID as GRID
from .runs import Status

VERSION = 1
GRID_IMAGES = 4  # test images in the grid of corruptions
HEADLINE_FAMILIES = ("benchmark", "lighting", "noise")


def settings_of(cfg: Config, image_size: int, images: int) -> dict[str, Any]:
    """What an evaluation depends on: a robustness.json made with other settings is redone."""
    from .data.corruptions import APPROXIMATE  # noqa: F401  (fails early if the module is broken)
    from .data.imageops import table_for

    ev = cfg.eval
    return {"corruptions": ev.corruption_names, "severities": list(ev.severities), "seed": ev.corruption_seed,
            "per_class": ev.corruption_per_class, "root": ev.corruptions_root,
            "table": table_for(image_size) if ev.corruption_table == "auto" else ev.corruption_table,
            "image_size": image_size, "images": images}


def selection(y: torch.Tensor, per_class: int | None) -> torch.Tensor:
    """The test images the corrupted evaluations use: all, or a fixed stratified subset."""
    return torch.arange(len(y)) if per_class is None else stratified_subset(y, per_class)


@torch.no_grad()
def measure(model: torch.nn.Module, batches: Iterator[tuple[torch.Tensor, torch.Tensor]], mean: torch.Tensor,
            std: torch.Tensor, device: torch.device, num_classes: int, timing: dict[str, float]) -> dict[str, float]:
    """Top-1, top-5 and mean cross-entropy of `model` over uint8 (images, labels) batches;
    adds the forward passes' seconds and count to `timing`."""
    loss = c1 = c5 = n = 0.0
    k = min(5, num_classes)
    mean, std = mean.to(device), std.to(device)
    for xb, yb in batches:
        t = time.perf_counter()
        logits = model(normalize(xb.to(device), mean, std)).float()
        yb = yb.to(device)
        loss += F.cross_entropy(logits, yb, reduction="sum").item()
        top = logits.topk(k, dim=1).indices
        c1 += (top[:, 0] == yb).sum().item()
        c5 += (top == yb[:, None]).any(dim=1).sum().item()
        n += len(yb)
        timing["forward_s"] += time.perf_counter() - t
        timing["forward_images"] += len(yb)
    n = max(n, 1)
    return {"acc": c1 / n, "top5": c5 / n, "loss": loss / n}


def on_the_fly(x: torch.Tensor, y: torch.Tensor, name: str, severity: int, seed: int, table: str, batch_size: int,
               timing: dict[str, float]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of the selection `x` (uint8, at the network's input size) under a corruption."""
    from .data.corruptions import corrupt

    for i in range(0, len(y), batch_size):
        t = time.perf_counter()
        xb = corrupt(x[i:i + batch_size], name, severity, seed=seed, start=i, table=table)
        timing["corrupt_s"] += time.perf_counter() - t
        yield xb, y[i:i + batch_size]


def summarize(clean: dict[str, float], per: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(families, headline) from the clean metrics and the per-corruption results."""
    from .data.corruptions import BENCHMARK, FAMILIES

    def block(names: list[str]) -> dict[str, Any] | None:
        accs = [s["acc"] for n in names for s in per[n]["by_severity"].values()]
        if not accs:
            return None
        acc = sum(accs) / len(accs)
        drop = clean["acc"] - acc
        err = 1.0 - clean["acc"]
        return {"acc": acc, "drop": drop, "relative_drop": drop / err if err > 0 else None,
                "corruptions": names}

    groups = {fam: [n for n in names if n in per] for fam, names in FAMILIES.items()}
    families = {fam: b for fam, names in groups.items() if (b := block(names))}
    headline: dict[str, Any] = {"clean_acc": clean["acc"]}
    everything = block(list(per))
    if everything:
        headline.update(corrupted_acc=everything["acc"], drop=everything["drop"],
                        relative_drop=everything["relative_drop"])
    for fam in HEADLINE_FAMILIES:
        b = block([n for n in BENCHMARK if n in per]) if fam == "benchmark" else families.get(fam)
        headline[f"{fam}_acc"] = b["acc"] if b else None
        headline[f"{fam}_drop"] = b["drop"] if b else None
    return families, headline


def check(cfg: Config, data: Data) -> None:
    """The released files of eval.corruptions_root, checked before a run trains (UserError)."""
    if cfg.eval.corruptions_root:
        from .data import released as rel

        open_release(cfg, data, [n for n in cfg.eval.corruption_names if n in rel.RELEASED_NAMES])


def open_release(cfg: Config, data: Data, names: list[str]) -> Any:
    """eval.corruptions_root's released files for `names`, read with the view the run's clean test
    images get (`released.view_for`)."""
    from .data import released as rel
    from .data.folder import stored_size

    ev = cfg.eval
    view = None
    if data.eval_transform is not None:  # an image-folder run: not the stored images as they are
        view = rel.view_for(ev.corruptions_root, names, data.image_size, stored_size(data.image_size))
    return rel.open_released(ev.corruptions_root, names, ev.severities, data.classes,
                             per_class=ev.corruption_per_class, eval_transform=view, image_size=data.image_size)


def cost_line(names: list[str], severities: list[int], images: int, clean_per_s: float | None) -> str:
    passes = len(names) * len(severities) * images
    when = f", about {passes / clean_per_s / 60:.1f} min at the clean pass's {clean_per_s:,.0f} images/s" \
        if clean_per_s else ""
    return (f"robustness: {len(names)} corruptions x {len(severities)} severities on {images:,} test images "
            f"= {passes:,} forward passes{when}")


def reusable(previous: dict[str, Any] | None, settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The corruptions of an earlier robustness.json of the same network that were measured with
    the same settings but for the list of corruptions: those are not measured again."""
    if not previous or previous.get("version") != VERSION:
        return {}
    same = {k: v for k, v in previous.get("settings", {}).items() if k != "corruptions"} == \
        {k: v for k, v in settings.items() if k != "corruptions"}
    return {n: c for n, c in previous.get("corruptions", {}).items() if n in settings["corruptions"]} if same else {}


def evaluate(model: torch.nn.Module, data: Data, cfg: Config, device: torch.device,
             line: Callable[[str], None] = print, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """robustness.json's content for `model` on `data`'s test split under `cfg.eval`; the
    corruptions that `previous` (this network's earlier robustness.json) measured with the same
    settings are taken from it."""
    from .data.corruptions import APPROXIMATE, BENCHMARK, CORRUPTIONS, params

    ev = cfg.eval
    started = time.perf_counter()
    timing = {"corrupt_s": 0.0, "forward_s": 0.0, "forward_images": 0}
    pick = selection(data.test.y, ev.corruption_per_class)
    x, y = network_view(data, pick, ev.batch_size)
    settings = settings_of(cfg, x.shape[-1], len(y))
    names, sevs, bs = settings["corruptions"], settings["severities"], ev.batch_size
    released, released_names = None, set()
    if ev.corruptions_root:
        from .data import released as rel

        released_names = [n for n in names if n in rel.RELEASED_NAMES]
        released = open_release(cfg, data, released_names)
    kept = reusable(previous, settings)
    model.eval()
    clean = measure(model, ((x[i:i + bs], y[i:i + bs]) for i in range(0, len(y), bs)), data.mean, data.std,
                    device, data.num_classes, timing)
    per_s = timing["forward_images"] / timing["forward_s"] if timing["forward_s"] > 0 else None
    todo = [n for n in names if n not in kept]
    line(cost_line(todo, sevs, len(y), per_s) + (f"; {len(released_names)} of them from {ev.corruptions_root}"
                                                 if released else " (corrupted on the fly)")
         + (f"; {len(kept)} corruptions already measured, kept" if kept else ""))
    per: dict[str, dict[str, Any]] = {}
    for name in names:
        if name in kept:
            per[name] = kept[name]
            continue
        by_sev = {}
        for s in sevs:
            if name in released_names:
                batches = released.batches(name, s, bs)
            else:
                batches = on_the_fly(x, y, name, s, ev.corruption_seed, settings["table"], bs, timing)
            by_sev[str(s)] = measure(model, batches, data.mean, data.std, device, data.num_classes, timing)
        accs = [m["acc"] for m in by_sev.values()]
        per[name] = {"family": CORRUPTIONS[name], "source": "released" if name in released_names else "on_the_fly",
                     "approximate": None if name in released_names else APPROXIMATE.get(name),
                     "params": None if name in released_names else params(name, settings["table"]),
                     "by_severity": by_sev, "acc": sum(accs) / len(accs)}
        line(f"robustness: {name:<22} " + " ".join(f"{by_sev[str(s)]['acc']:.3f}" for s in sevs)
             + f"  (clean {clean['acc']:.3f})")
    families, headline = summarize(clean, per)
    timing["wall_s"] = time.perf_counter() - started
    return {
        "version": VERSION, "settings": settings,
        "eval_transform": describe_transform(data, x.shape[-1]),
        "released": released.description if released else None,
        "clean": clean, "corruptions": per, "families": families, "headline": headline,
        "approximate": {n: per[n]["approximate"] for n in per if per[n]["approximate"]},
        "missing_benchmark": [n for n in BENCHMARK if n not in per],
        "timing": {k: round(v, 3) if isinstance(v, float) else v for k, v in timing.items()},
    }


def network_view(data: Data, pick: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The selected test images as the network sees them (uint8, after the eval transform)."""
    x = data.test.batch(pick)
    if data.eval_transform is not None:
        x = torch.cat([data.eval_transform(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
    return x.contiguous(), data.test.y[pick]


def describe_transform(data: Data, size: int) -> str:
    stored = data.test.x.shape[-1]
    if data.eval_transform is None:
        return f"the stored {stored} px images"
    return f"the images cached at {stored} px, center-cropped / resized to {size} px (the run's eval transform)"


# ----------------------------------------------------------------------------- run directories

def eval_config(cfg: Config, corruptions: str | list[str] | None, overrides: tuple[str, ...] | list[str]) -> Config:
    """The run's config with `lrn eval`'s --corruptions and --set eval.KEY=VALUE applied; other
    keys would describe another network, so they are refused."""
    for assignment in overrides:
        key = assignment.partition("=")[0].strip()
        if not key.startswith("eval."):
            raise UserError(f"--set {key}: lrn eval changes only eval.* keys (how the trained network is "
                            "evaluated); to change the network, train it again with lrn train --set")
    sets = list(overrides)
    if corruptions is not None:
        sets.append(f"eval.corruptions={corruptions}")
    return load_config(cfg, sets)


def done(run_dir: Path, settings: dict[str, Any]) -> bool:
    found = runs.read_json(Path(run_dir) / ROBUSTNESS)
    return bool(found) and found.get("version") == VERSION and found.get("settings") == settings


def evaluate_run(run_dir: str | Path, corruptions: str | list[str] | None = None, overrides: tuple[str, ...] = (),
                 force: bool = False, line: Callable[[str], None] = print, data: Data | None = None,
                 cfg: Config | None = None) -> dict[str, Any] | None:
    """Evaluate a completed run under its eval.* settings (or those of `cfg`, the config `lrn
    train` was given: a sweep may add eval keys after the run trained), with `lrn eval`'s options
    applied, and write its robustness files; -> robustness.json's content, or None if it was
    already done with the same settings (unless `force`). The run directory is locked meanwhile.
    `data`: the run's data, where the caller has it loaded."""
    from .engine import pick_device
    from .trained import load_trained

    run_dir = Path(run_dir)
    if not (run_dir / runs.CONFIG).is_file() and (run_dir / "sweep.json").is_file():
        raise UserError(f"{run_dir}: a sweep directory; evaluate_run takes one run (lrn eval takes either)")
    status = runs.run_status(run_dir) if (run_dir / runs.CONFIG).is_file() else None
    if status == Status.RUNNING:
        raise UserError(f"{run_dir}: the run is still training; evaluate it when it has finished")
    if status is not None and status != Status.COMPLETED:
        raise UserError(f"{run_dir}: the run is {status}, not completed; finish it first with "
                        f"lrn train --resume {run_dir}")
    stored = load_trained_config(run_dir)
    if cfg is not None:
        stored = stored.model_copy(update={"eval": cfg.eval})
    if corruptions is None and stored.eval.corruptions == "none" and \
            not any(o.partition("=")[0].strip() == "eval.corruptions" for o in overrides):
        corruptions = "all"  # what `lrn eval` is for
    cfg = eval_config(stored, corruptions, overrides)  # option errors before any loading
    if not cfg.eval.corruption_names:
        raise UserError(f"{run_dir}: eval.corruptions is none: nothing to evaluate; give --corruptions all "
                        "(or a family, or names)")
    with runs.locked(run_dir, "this run directory"):
        if data is None:
            data = load_data(cfg.data)
        pick = selection(data.test.y, cfg.eval.corruption_per_class)
        size = data.image_size
        if not force and done(run_dir, settings_of(cfg, size, len(pick))):
            line(f"{run_dir}: robustness already evaluated with these settings")
            return None
        device = pick_device(cfg.train.device)
        t = load_trained(run_dir, device)
        result = evaluate(t.model, data, cfg, device, line, previous=runs.read_json(run_dir / ROBUSTNESS))
        write(run_dir, result, data, cfg, t.summary.get("epochs") or cfg.train.epochs)
    h = result["headline"]
    line(f"{run_dir}: robustness: clean {h['clean_acc']:.4f}, corrupted {h.get('corrupted_acc', math.nan):.4f}, "
         f"drop {100 * h.get('drop', math.nan):.2f} pp; {ROBUSTNESS} written")
    return result


def write(run_dir: Path, result: dict[str, Any], data: Data, cfg: Config, step: int) -> None:
    """robustness.json, the grid of corrupted images, the TensorBoard events, then summary.json's
    headline (last: a summary with `robustness` always has its file)."""
    runs.write_json(run_dir / ROBUSTNESS, result)
    grid = None
    try:
        from .robust_plots import corruption_grid, save_png

        names, sevs = result["settings"]["corruptions"], result["settings"]["severities"]
        pick = selection(data.test.y, cfg.eval.corruption_per_class)[:GRID_IMAGES]
        images, _ = network_view(data, pick, GRID_IMAGES)
        grid = corruption_grid(images, names, sevs, seed=cfg.eval.corruption_seed, start=0,
                               table=result["settings"]["table"])
        (run_dir / "plots").mkdir(exist_ok=True)
        save_png(grid, run_dir / GRID)
    except ImportError:
        pass
    write_events(run_dir, result, step, grid)
    summary = runs.read_json(run_dir / runs.SUMMARY) or {}
    summary["robustness"] = {**result["headline"], "source": sorted({c["source"] for c in result["corruptions"].values()}),
                             "table": result["settings"]["table"], "corruptions": len(result["corruptions"]),
                             "images": result["settings"]["images"]}
    runs.write_json(run_dir / runs.SUMMARY, summary)


def write_events(run_dir: Path, result: dict[str, Any], step: int, grid: Any = None) -> None:
    """TensorBoard: the headline and family figures at the run's last step; `corruption/<name>`
    accuracy with the severity as the step (0: clean), so a chart reads as accuracy vs severity."""
    from tensorboard.compat.proto import summary_pb2

    from .tb import write_events as _write

    def scalars(pairs: dict[str, float]) -> summary_pb2.Summary:
        return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=k, simple_value=float(v))
                                          for k, v in pairs.items() if v is not None])

    h = result["headline"]
    top = {f"robust/{k}": v for k, v in h.items() if k in ("clean_acc", "corrupted_acc", "drop", "relative_drop")}
    for fam, f in result["families"].items():
        top[f"robust/{fam}_acc"], top[f"robust/{fam}_drop"] = f["acc"], f["drop"]
    for fam in HEADLINE_FAMILIES:
        if h.get(f"{fam}_acc") is not None:
            top[f"robust/{fam}_acc"], top[f"robust/{fam}_drop"] = h[f"{fam}_acc"], h[f"{fam}_drop"]
    events = [(scalars(top), step)]
    for name, c in result["corruptions"].items():
        events.append((scalars({f"corruption/{name}": result["clean"]["acc"]}), 0))
        events += [(scalars({f"corruption/{name}": m["acc"]}), int(s)) for s, m in c["by_severity"].items()]
    if grid is not None:
        import io

        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(grid).save(buf, format="PNG")
        img = summary_pb2.Summary.Image(height=grid.shape[0], width=grid.shape[1], colorspace=3,
                                        encoded_image_string=buf.getvalue())
        events.append((summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag="robust/corruptions", image=img)]), step))
    _write(run_dir / ROBUSTNESS_EVENTS, events)


# ----------------------------------------------------------------------------- lrn eval

def evaluate_path(path: str | Path, corruptions: str | None = None, overrides: tuple[str, ...] = (),
                  force: bool = False, line: Callable[[str], None] = print) -> int:
    """`lrn eval PATH`: one run, or every completed run of a sweep (resumable: runs already
    evaluated with the same settings are skipped), then the sweep's report. -> exit code."""
    path = Path(path)
    if (path / "sweep.json").is_file():
        return _evaluate_sweep(path, corruptions, overrides, force, line)
    if not (path / runs.CONFIG).is_file():
        raise UserError(f"{path}: not a run directory (no config.yaml) nor a sweep directory (no sweep.json); "
                        "give a folder that lrn train or lrn ablate made")
    try:
        evaluate_run(path, corruptions, overrides, force, line)
    except KeyboardInterrupt:
        line(f"{path}: interrupted; nothing written (robustness.json is written whole at the end)")
        return runs.exit_code(Status.INTERRUPTED, "SIGINT")
    return 0


def _evaluate_sweep(sweep_dir: Path, corruptions: str | None, overrides: tuple[str, ...], force: bool,
                    line: Callable[[str], None]) -> int:
    from .report import report

    plan = runs.read_json(sweep_dir / "sweep.json") or {}
    dirs = [sweep_dir / (r.get("dir") or r["run_id"]) for r in plan.get("runs", [])]
    ready = [d for d in dirs if (d / runs.CONFIG).is_file() and runs.run_status(d) == Status.COMPLETED]
    if dirs and ready:  # check the options once, on the first run, before any work
        eval_config(load_trained_config(ready[0]), corruptions, overrides)
    skipped = len(dirs) - len(ready)
    line(f"{sweep_dir}: {len(ready)} completed runs to evaluate" + (f" ({skipped} not completed: left out)"
                                                                   if skipped else ""))
    with runs.locked(sweep_dir, "this sweep"):
        try:
            for i, d in enumerate(ready, 1):
                line(f"[{i}/{len(ready)}] {d.name}")
                evaluate_run(d, corruptions, overrides, force, line)
        except KeyboardInterrupt:
            line(f"{sweep_dir}: interrupted; runs evaluated so far are kept: run the same lrn eval again "
                 "to continue")
            return runs.exit_code(Status.INTERRUPTED, "SIGINT")
        report(sweep_dir)
    line(f"{sweep_dir}: report refreshed ({sweep_dir / 'results.md'})")
    return 0


def load_trained_config(run_dir: Path) -> Config:
    from .config import load_run_config

    return load_run_config(run_dir, runs.read_json(run_dir / runs.SUMMARY))
