"""Pictures of robustness to common corruptions: the grid of corrupted images that each run's
evaluation saves (`corruption_grid`, `save_png`), and the sweep report's plots (robust_report.py):
per config a heatmap of accuracy by corruption x severity, accuracy against severity per family,
and the drop from clean accuracy per family.

matplotlib draws through its Agg canvas objects (no pyplot, no global state); the grid's images
are pasted into the rendered labels pixel for pixel, so nothing is resampled but by the integer
nearest-neighbour upscaling. Accuracies arrive as fractions and are drawn in %.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from . import runs

GRID_MIN_CELL = 80  # images smaller than this are upscaled by an integer factor to at least it
GRID_MAX_CELL = 160  # larger ones are resampled (nearest) down to GRID_BIG_CELL
GRID_BIG_CELL = 128
_GAP, _BLOCK_GAP, _FAMILY_GAP = 2, 14, 8  # pixels between cells, between images, between families


def _figure(width_in: float, height_in: float, dpi: int = 100) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _rgb(fig: Any) -> Any:
    """The rendered figure as an HxWx3 uint8 array."""
    import numpy as np

    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def save_png(array: Any, path: str | Path) -> None:
    """An HxWx3 (or HxW) uint8 array as a PNG at `path`, written atomically (its folder made)."""
    import numpy as np
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(np.ascontiguousarray(np.asarray(array, dtype=np.uint8)))
    runs.atomic_write(path, lambda f: image.save(f, format="PNG"), mode="wb")


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    runs.atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=fig.dpi), mode="wb")


# ----------------------------------------------------------------------------- the grid of corruptions

def _hwc(images: Any) -> Any:
    """uint8 NCHW (a tensor or an array; 1 or 3 channels) -> NumPy NHW3."""
    import numpy as np

    if hasattr(images, "detach"):
        images = images.detach().cpu().numpy()
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"corruption_grid: images are uint8 NCHW with 1 or 3 channels, not shape {x.shape}")
    x = x.transpose(0, 2, 3, 1)
    return np.repeat(x, 3, axis=3) if x.shape[3] == 1 else x


def _resize(x: Any, cell: int) -> Any:
    """NHW3 -> N x cell x cell x 3, nearest neighbour (an integer factor when enlarging)."""
    import numpy as np

    h, w = x.shape[1:3]
    rows, cols = (np.arange(cell) * h) // cell, (np.arange(cell) * w) // cell
    return x[:, rows][:, :, cols]


def grid_cell(side: int) -> int:
    """The side in pixels of one image in the grid, for images of `side` pixels."""
    if side < GRID_MIN_CELL:
        return side * math.ceil(GRID_MIN_CELL / side)
    return side if side <= GRID_MAX_CELL else GRID_BIG_CELL


def corruption_grid(images: Any, names: list[str], severities: list[int], seed: int = 0, start: int = 0,
                    table: str | None = None) -> Any:
    """A picture of `images` (a few test images, uint8 NCHW) under every corruption of `names` at
    every severity -> an HxWx3 uint8 array: one row per corruption (labelled with its family;
    approximate ones starred), and for each image a block of columns, clean then each severity.
    The corrupted images are `data.corruptions.corrupt(images, name, severity, seed, start)`,
    exactly as the evaluation makes them (image i is image start + i to the random draws), with
    the parameter `table` of the evaluation (None: the one for the images' size)."""
    import numpy as np
    import torch

    from .data.corruptions import APPROXIMATE, CORRUPTIONS, corrupt

    clean = _hwc(images)
    n, side = clean.shape[0], max(clean.shape[1:3])
    cell = grid_cell(side)
    tiles = {None: _resize(clean, cell)}
    batch = torch.from_numpy(np.ascontiguousarray(clean.transpose(0, 3, 1, 2)))  # what corrupt takes: 3 channels
    for name in names:
        for s in severities:
            out = corrupt(batch, name, s, seed=seed, start=start, table=table)
            tiles[(name, s)] = _resize(_hwc(out), cell)
    return _grid(tiles, n, cell, names, list(severities), {m: CORRUPTIONS.get(m, "") for m in names},
                 {m for m in names if m in APPROXIMATE}, seed, start)


def _grid(tiles: dict[Any, Any], n: int, cell: int, names: list[str], severities: list[int],
          family: dict[str, str], approximate: set[str], seed: int, start: int) -> Any:
    """Lay the tiles out (tiles[None]: the clean images, tiles[(name, s)]: corrupted, each
    n x cell x cell x 3) and label them."""
    import numpy as np

    cols = 1 + len(severities)
    block_w = cols * cell + (cols - 1) * _GAP
    left, top, bottom = 170, 64, 24 if approximate else 8
    width = left + n * block_w + (n - 1) * _BLOCK_GAP + 8
    ys, y = [], top  # each row's top
    for i, name in enumerate(names):
        if i and family[name] != family[names[i - 1]]:
            y += _FAMILY_GAP
        ys.append(y)
        y += cell + _GAP
    height = y - _GAP + bottom

    dpi = 100
    fig = _figure(width / dpi, height / dpi, dpi)
    fig.patch.set_facecolor("white")

    def text(x: float, y: float, s: str, **kw: Any) -> None:  # in pixels from the top left
        fig.text(x / width, 1 - y / height, s, **kw)

    text(8, 8, f"Common corruptions of {n} test image{'s' if n > 1 else ''} (rows: corruption, family; "
               f"columns: clean, then severity; corruption seed {seed}, first image #{start})",
         fontsize=11, va="top", ha="left", weight="bold")
    for k in range(n):
        x0 = left + k * (block_w + _BLOCK_GAP)
        text(x0 + block_w / 2, 30, f"image #{start + k}", fontsize=9, va="center", ha="center")
        for j, head in enumerate(["clean", *[str(s) for s in severities]]):
            text(x0 + j * (cell + _GAP) + cell / 2, 50, head, fontsize=9, va="center", ha="center")
    for name, y in zip(names, ys):
        star = "*" if name in approximate else ""
        text(left - 8, y + cell / 2 - 7, name + star, fontsize=9, va="center", ha="right")
        text(left - 8, y + cell / 2 + 8, family[name], fontsize=8, va="center", ha="right", color="0.4")
    if approximate:
        text(8, height - 12, "* approximate: not the reference algorithm exactly (robustness.json says why)",
             fontsize=8, va="center", ha="left", color="0.3")
    out = _rgb(fig)
    if out.shape[:2] != (height, width):  # the canvas rounds inches x dpi; pad or crop to the layout
        canvas = np.full((height, width, 3), 255, dtype=np.uint8)
        h, w = min(height, out.shape[0]), min(width, out.shape[1])
        canvas[:h, :w] = out[:h, :w]
        out = canvas
    for k in range(n):
        x0 = left + k * (block_w + _BLOCK_GAP)
        for name, y in zip(names, ys):
            for j, key in enumerate([None, *[(name, s) for s in severities]]):
                x = x0 + j * (cell + _GAP)
                out[y:y + cell, x:x + cell] = tiles[key][k]
    return out


# ----------------------------------------------------------------------------- the sweep report's plots

def heatmap(path: Path, title: str, names: list[str], families: dict[str, str], severities: list[int],
            acc: Any, clean: float | None, approximate: set[str], on_the_fly: set[str]) -> None:
    """Mean accuracy (fractions, rows = `names`, columns = severities; NaN: not evaluated) as an
    annotated heatmap in %, families separated by lines and named on the right."""
    import numpy as np

    acc = 100 * np.asarray(acc, dtype=float)
    rows = len(names)
    fig = _figure(2.6 + 0.75 * len(severities), 1.6 + 0.34 * rows)
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_invalid(acc), cmap="viridis", vmin=0, vmax=100, aspect="auto")
    for i in range(rows):
        for j in range(len(severities)):
            v = acc[i, j]
            ax.text(j, i, "—" if math.isnan(v) else f"{v:.1f}", ha="center", va="center", fontsize=7,
                    color="black" if not math.isnan(v) and v > 60 else "white")
    labels = [n + ("*" if n in approximate else "") + (" †" if n in on_the_fly else "") for n in names]
    ax.set_yticks(range(rows), labels, fontsize=8)
    ax.set_xticks(range(len(severities)), [str(s) for s in severities])
    ax.set_xlabel("severity")
    start = 0
    for i in range(1, rows + 1):
        if i == rows or families[names[i]] != families[names[start]]:
            if i < rows:
                ax.axhline(i - 0.5, color="white", lw=2.5)
            ax.text(len(severities) - 0.4, (start + i - 1) / 2, families[names[start]], rotation=90,
                    ha="left", va="center", fontsize=8, clip_on=False)
            start = i
    cb = fig.colorbar(im, ax=ax, pad=0.16, fraction=0.05)
    cb.set_label("top-1 accuracy (%)")
    notes = []
    if approximate & set(names):
        notes.append("* approximate")
    if on_the_fly & set(names):
        notes.append("† generated on the fly")
    clean_s = "" if clean is None else f"; clean {100 * clean:.1f}%"
    ax.set_title(f"{title}\nmean top-1 (%) over seeds{clean_s}" + (f"\n{', '.join(notes)}" if notes else ""),
                 fontsize=9)
    _save(fig, path)


def severity_curves(path: Path, title: str, families: list[str], severities: list[int],
                    lines: dict[str, dict[str, list[dict[str, Any]]]], baseline: str | None) -> None:
    """One subplot per family: accuracy (%) against severity (0 = clean), one line per config
    (`lines[config][family]`: report.stats of each severity, clean first) with its 95% CI band."""
    cols = min(3, len(families))
    nrows = math.ceil(len(families) / cols)
    fig = _figure(4.2 * cols, 3.3 * nrows + 0.6)
    xs = [0, *severities]
    for k, fam in enumerate(families):
        ax = fig.add_subplot(nrows, cols, k + 1)
        for i, (config, by_family) in enumerate(lines.items()):
            pts = [(x, s) for x, s in zip(xs, by_family.get(fam) or []) if s["mean"] is not None]
            if not pts:
                continue
            color = f"C{i % 10}"
            name = config + (" (baseline)" if config == baseline else "")
            ax.plot([x for x, _ in pts], [100 * s["mean"] for _, s in pts], marker="o", ms=3, color=color,
                    label=f"{name} (n={max(s['n'] for _, s in pts)})", ls="--" if config == baseline else "-")
            band = [(x, s) for x, s in pts if s["lo"] is not None]
            if band:
                ax.fill_between([x for x, _ in band], [100 * s["lo"] for _, s in band],
                                [100 * s["hi"] for _, s in band], color=color, alpha=0.18, lw=0)
        ax.set_title(fam, fontsize=10)
        ax.set_xticks(xs, ["clean", *[str(s) for s in severities]])
        ax.set_xlabel("severity")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.grid(alpha=0.3)
        if k == 0:
            ax.legend(fontsize=7)
    fig.suptitle(f"{title}: accuracy against severity per family (mean over seeds, 95% CI band)", fontsize=10)
    _save(fig, path)


def drop_bars(path: Path, title: str, categories: list[str], bars: dict[str, list[dict[str, Any]]],
              seeds: dict[str, list[list[float]]], baseline: str | None) -> None:
    """The drop from clean accuracy (percentage points) per category (all corruptions, then each
    family): one bar per config with its 95% CI, dots for its seeds."""
    import numpy as np

    configs = list(bars)
    width = 0.8 / max(1, len(configs))
    fig = _figure(max(6.4, 1.0 + len(categories) * (0.35 + 0.22 * len(configs))), 4.8)
    ax = fig.add_subplot()
    x = np.arange(len(categories))
    for i, config in enumerate(configs):
        pos = x - 0.4 + width * (i + 0.5)
        st = bars[config]
        ys = [100 * s["mean"] if s["mean"] is not None else np.nan for s in st]
        err = [[100 * (s["mean"] - s["lo"]) if s["lo"] is not None else 0 for s in st],
               [100 * (s["hi"] - s["mean"]) if s["hi"] is not None else 0 for s in st]]
        name = config + (" (baseline)" if config == baseline else "")
        ax.bar(pos, ys, width, yerr=err, capsize=3, color=f"C{i % 10}", label=name,
               hatch="//" if config == baseline else None, edgecolor="white" if config != baseline else "0.3")
        for p, vals in zip(pos, seeds[config]):
            ax.plot([p] * len(vals), [100 * v for v in vals], "k.", ms=3)
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set_xticks(x, categories)
    ax.set_ylabel("drop from clean top-1 (percentage points)")
    ax.set_title(f"{title}\nsensitivity: the drop, clean minus corrupted top-1 (lower: less sensitive)\n"
                 "mean over seeds, 95% CI, dots = seeds", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, path)
