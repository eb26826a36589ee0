"""Is the LRN acting? The distribution of each LRN layer's factor over the activations it sees.

An LRN multiplies each activation a by f = (k + scale * sum_{window} a^2) ^ (-beta)
(`lrn.functional.factor`). Where every f is k^(-beta), the layer is a constant rescaling and
normalizes nothing: with unit-scale inputs, Caffe's alpha 5e-5 over 3 x 3 pixels is such a layer.
`measure(model)` hooks every LRN layer while a split is evaluated and gives per layer, over
the nonzero activations: the median and the 5th and 95th percentiles of f, and
`frac_changed_1pct`, the fraction whose f differs from k^(-beta) by more than 1%.

The counts are exact, kept as a histogram of the strength s = -ln(f / k^(-beta)) >= 0 on
log-spaced bins (0.001 decade wide, from 1e-12 to 1e3), so the percentiles are exact to within a
bin: f to about 0.23% of s, i.e. to 1e-7 where f is within 1e-4 of k^(-beta). Histograms add
up over batches and over the processes of a distributed run, in any order.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import nn

from .lrn.ops import window_sum_of_squares
from .lrn.module import LocalResponseNorm

INERT = 0.01  # a layer acts when more than 1% of its activations are scaled by more than 1%
CHANGED = 0.01
CHANGED_S = -math.log(1 - CHANGED)  # f < (1 - 1%) k^(-beta), in terms of s
LOG_LO, LOG_HI, PER_DECADE = -12, 3, 1000
EDGES = torch.logspace(LOG_LO, LOG_HI, (LOG_HI - LOG_LO) * PER_DECADE + 1, dtype=torch.float64)


@dataclass
class LayerHistogram:
    """Counts of the strength s over one layer's nonzero activations: `below` those under the
    first edge (s = 0 within float64: f = k^(-beta)), `counts[i]` those in [EDGES[i], EDGES[i+1]),
    the last bin open above."""

    base: float  # k^(-beta)
    counts: torch.Tensor = field(default_factory=lambda: torch.zeros(len(EDGES), dtype=torch.float64))
    below: float = 0.0
    changed: float = 0.0  # activations whose f differs from base by more than CHANGED
    images: int = 0  # the images counted (on this process)

    def add(self, x: torch.Tensor, canon: Any) -> None:
        """Count the factors of one batch: s = -ln(f / k^(-beta)) = beta * ln(1 + scale/k * S),
        S the window sum of squares, is `functional.factor` in log form, exact in float32 where f
        itself would round to k^(-beta) (tests check the two agree)."""
        self.images += len(x)
        a = x.detach().float()
        s = window_sum_of_squares(a, canon).mul_(canon.scale / canon.k).log1p_().mul_(canon.beta)[a != 0]
        self.changed += float((s > CHANGED_S).sum())
        small = s < EDGES[0]
        self.below += float(small.sum())
        idx = ((s[~small].log10() - LOG_LO) * PER_DECADE).floor_().clamp_(0, len(EDGES) - 1).long()
        self.counts += torch.bincount(idx.cpu(), minlength=len(EDGES)).double()

    @property
    def n(self) -> float:
        return self.below + float(self.counts.sum())

    def quantile_of_f(self, q: float) -> float:
        """The q-quantile of f: f falls as s grows, so it is the (1 - q)-quantile of s, taken at
        the middle (in log space) of the bin where the cumulative count crosses it."""
        rank = (1 - q) * self.n
        if rank <= self.below:
            return self.base
        cum = self.below + torch.cumsum(self.counts, 0)
        i = int(torch.searchsorted(cum, torch.tensor(rank, dtype=torch.float64)).clamp(max=len(EDGES) - 1))
        s = math.sqrt(float(EDGES[i]) * float(EDGES[min(i + 1, len(EDGES) - 1)]))
        return self.base * math.exp(-s)

    def summary(self) -> dict[str, float]:
        if not self.n:
            return {"median": float("nan"), "p05": float("nan"), "p95": float("nan"), "frac_changed_1pct": 0.0,
                    "activations": 0}
        return {"median": self.quantile_of_f(0.5), "p05": self.quantile_of_f(0.05), "p95": self.quantile_of_f(0.95),
                "frac_changed_1pct": self.changed / self.n, "activations": int(self.n)}

    def as_numbers(self) -> list[float]:
        """Everything that adds up, flat, for an all-reduce over processes."""
        return [self.below, self.changed, *self.counts.tolist()]

    def load_numbers(self, numbers: list[float]) -> None:
        self.below, self.changed = numbers[0], numbers[1]
        self.counts = torch.tensor(numbers[2:], dtype=torch.float64)


def lrn_layers(model: nn.Module) -> dict[str, LocalResponseNorm]:
    """The model's LRN layers by module name (as in its state dict), in order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LocalResponseNorm)}


@contextmanager
def measure(model: nn.Module, images: int | None = None) -> Iterator[dict[str, LayerHistogram]]:
    """While active, every forward of the model's LRN layers adds to their histograms, for the
    first `images` images of each layer (all if None)."""
    hists: dict[str, LayerHistogram] = {}
    handles = []
    for name, layer in lrn_layers(model).items():
        hist = hists[name] = LayerHistogram(base=layer.k ** -layer.beta)

        def hook(module: LocalResponseNorm, inputs: tuple[torch.Tensor, ...], hist: LayerHistogram = hist) -> None:
            x = inputs[0]
            if images is not None:
                x = x[:max(images - hist.images, 0)]
            if len(x):
                hist.add(x, module.canon(x))

        handles.append(layer.register_forward_pre_hook(hook))
    try:
        yield hists
    finally:
        for h in handles:
            h.remove()


def summarize(hists: dict[str, LayerHistogram]) -> dict[str, dict[str, float]]:
    """summary.json's `lrn_activity`: per layer median, p05, p95, frac_changed_1pct."""
    return {name: h.summary() for name, h in hists.items()}


def inert(activity: dict[str, dict[str, float]]) -> bool:
    """A config is inert when it has LRN layers and none of them changes more than 1% of its
    activations by more than 1%."""
    return bool(activity) and all(a["frac_changed_1pct"] < INERT for a in activity.values())


def describe(activity: dict[str, dict[str, float]]) -> str:
    """One line for the end of `lrn train`: how strongly each LRN layer scaled its activations."""
    verdict = ("INERT (no LRN layer changes more than 1% of its activations by more than 1%: it only "
               "rescales)" if inert(activity) else "acting")
    parts = [f"layer '{name}': median factor {a['median']:.6g} (5-95%: {a['p05']:.6g} to {a['p95']:.6g}), "
             f"{100 * a['frac_changed_1pct']:.1f}% changed by >1%" for name, a in activity.items()]
    return f"LRN {verdict}; " + "; ".join(parts)


def tb_histogram(writer: Any, tag: str, hist: LayerHistogram, step: int) -> None:
    """The distribution of f as a TensorBoard histogram, from the exact counts with bins merged
    to 0.1 decade of s (TensorBoard draws about 30 bins anyway)."""
    if not hist.n:
        return
    merge = PER_DECADE // 10
    counts = torch.cat([hist.counts, hist.counts.new_zeros((-len(hist.counts)) % merge)]).view(-1, merge).sum(1)
    upper = hist.base * torch.exp(-EDGES[::merge][:len(counts)])  # the largest f of each merged bin
    keep = counts > 0
    limits = torch.cat([upper[keep].flip(0), torch.tensor([hist.base], dtype=torch.float64)])
    bucket = torch.cat([counts[keep].flip(0), torch.tensor([hist.below], dtype=torch.float64)])
    writer.add_histogram_raw(tag, min=float(limits[0]), max=hist.base, num=int(hist.n),
                             sum=float((limits * bucket).sum()), sum_squares=float((limits ** 2 * bucket).sum()),
                             bucket_limits=limits.tolist(), bucket_counts=bucket.tolist(), global_step=step)
