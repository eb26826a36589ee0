"""How each framework spells LRN, reduced to one canonical form that the kernels compute.

Canonical form (`Canon`), for an input `a` of shape (N, C, *spatial):

    across:  b[c] = a[c] * (k + scale * sum_{i=c-lo}^{c+hi} a[i]^2) ^ (-beta)
    within:  b[p] = a[p] * (k + scale * sum_{q in window(p)} a[q]^2) ^ (-beta)
             window(p) = p - lo .. p + hi along every spatial dimension

with zeros outside the tensor (the zero padding is counted: it adds nothing to the sum, and the
scale does not shrink at the borders). Every convention below is a choice of (lo, hi, scale, k).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

CONVENTIONS = ("torch", "alexnet", "caffe", "tensorflow", "onnx", "cudnn", "cuda-convnet")
REGIONS = ("across", "within")

# Which regions each convention has, and its own defaults (size, alpha, beta, k) when not given.
REGIONS_OF = {
    "torch": ("across",),
    "alexnet": ("across",),
    "caffe": ("across", "within"),
    "tensorflow": ("across",),
    "onnx": ("across",),
    "cudnn": ("across",),
    "cuda-convnet": ("across", "within"),
}
DEFAULTS: dict[str, dict[str, float]] = {
    "torch": {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 1.0},
    "alexnet": {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 2.0},
    "caffe": {"size": 5, "alpha": 1.0, "beta": 0.75, "k": 1.0},
    "tensorflow": {"size": 11, "alpha": 1.0, "beta": 0.5, "k": 1.0},
    "onnx": {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 1.0},
    "cudnn": {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 2.0},
    "cuda-convnet": {"size": 5, "alpha": 1e-4, "beta": 0.75, "k": 1.0},
}


@dataclass(frozen=True)
class Canon:
    """The canonical parameters every kernel takes (see the module docstring)."""

    region: str
    lo: int
    hi: int
    scale: float
    beta: float
    k: float

    @property
    def size(self) -> int:
        return self.lo + self.hi + 1


def check_params(size: Any, alpha: Any, beta: Any, k: Any, region: Any, convention: Any) -> None:
    """Raise ValueError naming the first invalid parameter and its allowed range (`LRNParams`
    calls it: a made `LRNParams` is a checked one)."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {', '.join(CONVENTIONS)} (got {convention!r})")
    if region not in REGIONS:
        raise ValueError(f"region must be one of {', '.join(REGIONS)} (got {region!r})")
    if region not in REGIONS_OF[convention]:
        raise ValueError(f"region: convention '{convention}' has no {region}-channel LRN; "
                         f"it has {' and '.join(REGIONS_OF[convention])}")
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
        raise ValueError(f"size must be an integer >= 1 (got {size!r})")
    for name, value, low, strict in (("alpha", alpha, 0, False), ("beta", beta, 0, False), ("k", k, 0, True)):
        ok = (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
              and (value > low if strict else value >= low))
        if not ok:
            raise ValueError(f"{name} must be a finite number {'>' if strict else '>='} {low} (got {value!r})")
    if convention in ("caffe", "tensorflow") and size % 2 == 0:
        why = "Caffe supports only odd local_size" if convention == "caffe" else \
            "TensorFlow's window is 2 * depth_radius + 1"
        raise ValueError(f"size must be odd for convention '{convention}' ({why}; got {size})")
    if convention == "cudnn" and not (1 <= size <= 16 and k >= 1e-5 and beta >= 0.01):
        raise ValueError("cuDNN's LRN needs 1 <= size <= 16, k >= 1e-5 and beta >= 0.01 "
                         f"(CUDNN_LRN_MIN_N/MAX_N/MIN_K/MIN_BETA; got size={size}, k={k}, beta={beta})")
    if convention == "caffe" and region == "within" and k != 1:
        raise ValueError("k: Caffe's WITHIN_CHANNEL LRN has no k (it is always 1); "
                         f"leave k at 1 or use convention 'cuda-convnet' (got {k!r})")


def window(size: int, region: str, convention: str) -> tuple[int, int]:
    """(lo, hi): the window of output index c runs over c - lo .. c + hi."""
    if region == "within" or convention not in ("alexnet", "tensorflow", "onnx", "cudnn"):
        # torch, caffe (odd sizes only), cuda-convnet cmrnorm and rnorm, Caffe's WITHIN_CHANNEL:
        # c - n//2 .. c + (n-1)//2, so an even window has its extra element below
        return size // 2, (size - 1) // 2
    if convention in ("onnx", "cudnn"):
        # c - floor((n-1)/2) .. c + ceil((n-1)/2): the extra channel above
        return (size - 1) // 2, size // 2
    # alexnet: the paper sums max(0, i - n/2) .. min(N - 1, i + n/2), n + 1 channels for even n;
    # tensorflow: depth_radius r on both sides, n = 2r + 1
    return size // 2, size // 2


def scale_factor(size: int, region: str, convention: str, dims: int = 2) -> float:
    """What alpha is multiplied by: 1/n across (torch, caffe, onnx, cudnn, cuda-convnet cmrnorm),
    1 (alexnet, tensorflow), 1/n^dims within a channel (Caffe's average pool, cuda-convnet rnorm)."""
    if region == "within":
        return 1.0 / size ** dims
    return 1.0 if convention in ("alexnet", "tensorflow") else 1.0 / size


def with_defaults(convention: str, **given: Any) -> dict[str, Any]:
    """Fill the parameters left as None with the convention's own defaults."""
    base = DEFAULTS.get(convention, DEFAULTS["torch"])
    return {name: base[name] if given.get(name) is None else given[name] for name in base}


@dataclass(frozen=True)
class LRNParams:
    """One LRN's parameters in a convention's own meaning, checked once, when it is made.

    size, alpha, beta and k left as None take the convention's defaults (`DEFAULTS`); an invalid
    value raises ValueError naming it (`check_params`). The config (`model.norm`) makes one per
    parameter set and the layer takes it as it is; `canon` derives what the kernels compute.
    """

    size: int = None  # type: ignore[assignment]  # None: the convention's default
    alpha: float = None  # type: ignore[assignment]
    beta: float = None  # type: ignore[assignment]
    k: float = None  # type: ignore[assignment]
    region: str = "across"
    convention: str = "torch"

    def __post_init__(self) -> None:
        given = with_defaults(self.convention, size=self.size, alpha=self.alpha, beta=self.beta, k=self.k)
        check_params(region=self.region, convention=self.convention, **given)
        for name, value in given.items():
            object.__setattr__(self, name, int(value) if name == "size" else float(value))

    def canon(self, dims: int = 2) -> Canon:
        """The canonical form (window and scale) for an input of `dims` spatial dimensions."""
        lo, hi = window(self.size, self.region, self.convention)
        return Canon(self.region, lo, hi, self.alpha * scale_factor(self.size, self.region, self.convention, dims),
                     self.beta, self.k)


def canonical(size: int, alpha: float, beta: float, k: float, region: str = "across",
              convention: str = "torch", dims: int = 2) -> Canon:
    """Map a convention's parameters to the canonical form; `dims` is the number of spatial dims."""
    return LRNParams(size, alpha, beta, k, region, convention).canon(dims)


# ----------------------------------------------------------------------------- conversion

# Each framework's own names for (size, alpha, beta, k), and how it names the region.
NATIVE_NAMES: dict[str, dict[str, str]] = {
    "torch": {"size": "size", "alpha": "alpha", "beta": "beta", "k": "k"},
    "alexnet": {"size": "n", "alpha": "alpha", "beta": "beta", "k": "k"},
    "caffe": {"size": "local_size", "alpha": "alpha", "beta": "beta", "k": "k"},
    "tensorflow": {"size": "depth_radius", "alpha": "alpha", "beta": "beta", "k": "bias"},
    "onnx": {"size": "size", "alpha": "alpha", "beta": "beta", "k": "bias"},
    "cudnn": {"size": "lrnN", "alpha": "lrnAlpha", "beta": "lrnBeta", "k": "lrnK"},
    "cuda-convnet": {"size": "size", "alpha": "scale", "beta": "pow", "k": "minDiv"},
}
REGION_NAMES = {"caffe": ("norm_region", {"across": "ACROSS_CHANNELS", "within": "WITHIN_CHANNEL"}),
                "cuda-convnet": ("type", {"across": "cmrnorm", "within": "rnorm"})}


class NoEquivalent(ValueError):
    """There is no layer in the target convention that computes the same function."""


def from_native(convention: str, params: dict[str, Any]) -> dict[str, Any]:
    """A framework's own parameters (e.g. TensorFlow's depth_radius, bias) -> this layer's
    (size, alpha, beta, k, region); missing ones take the framework's defaults."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {', '.join(CONVENTIONS)} (got {convention!r})")
    names = NATIVE_NAMES[convention]
    reverse = {v: k for k, v in names.items()}
    region = "across"
    out: dict[str, Any] = {}
    for key, value in params.items():
        if convention in REGION_NAMES and key == REGION_NAMES[convention][0]:
            by_name = {v: r for r, v in REGION_NAMES[convention][1].items()}
            if value not in by_name:
                raise ValueError(f"{key} must be one of {', '.join(by_name)} (got {value!r})")
            region = by_name[value]
        elif key in reverse:
            out[reverse[key]] = value
        else:
            allowed = list(names.values()) + ([REGION_NAMES[convention][0]] if convention in REGION_NAMES else [])
            raise ValueError(f"{convention} has no LRN parameter '{key}'; it has {', '.join(allowed)}")
    if convention == "tensorflow" and "size" in out:
        out["size"] = 2 * out["size"] + 1
    p = LRNParams(region=region, convention=convention, **out)
    return {"size": p.size, "alpha": p.alpha, "beta": p.beta, "k": p.k, "region": region}


def to_native(convention: str, size: int, alpha: float, beta: float, k: float, region: str) -> dict[str, Any]:
    """This layer's parameters -> the framework's own names (the inverse of `from_native`)."""
    names = NATIVE_NAMES[convention]
    out: dict[str, Any] = {names["size"]: (size - 1) // 2 if convention == "tensorflow" else size,
                           names["alpha"]: alpha, names["beta"]: beta}
    if not (convention == "caffe" and region == "within"):
        out[names["k"]] = k
    if convention in REGION_NAMES:
        key, values = REGION_NAMES[convention]
        out[key] = values[region]
    return out


def convert(source: str, target: str, size: int, alpha: float, beta: float, k: float,
            region: str = "across") -> dict[str, Any]:
    """The (size, alpha, beta, k, region) in convention `target` that computes exactly what the
    source layer computes, or NoEquivalent saying why there is none."""
    canon = LRNParams(size, alpha, beta, k, region, source).canon()
    if target not in CONVENTIONS:
        raise ValueError(f"convention must be one of {', '.join(CONVENTIONS)} (got {target!r})")
    if region not in REGIONS_OF[target]:
        raise NoEquivalent(f"'{target}' has only across-channel LRN, and a within-channel (spatial) window "
                           "has no across-channel equivalent")
    # the target's window for a given size is fixed by its convention: find the size that gives
    # the source's window, then the alpha that gives the source's scale
    sizes = [n for n in range(1, 2 * canon.size + 2) if window(n, region, target) == (canon.lo, canon.hi)]
    sizes.sort(key=lambda n: abs(n - canon.size))  # the window's own width first
    if not sizes:
        lean = {"torch": "below", "cuda-convnet": "below", "onnx": "above", "cudnn": "above"}
        has = (f"puts the extra channel of an even window {lean[target]}" if target in lean
               else "has symmetric windows only")
        side = "below" if canon.lo > canon.hi else "above"
        raise NoEquivalent(f"this {canon.size}-wide window has its extra channel {side} the centre, and "
                           f"'{target}' {has}")
    errors = []
    for n in sizes:  # e.g. alexnet's n = 4 and n = 5 are the same window; take the first allowed
        result = {"size": n, "alpha": canon.scale / scale_factor(n, region, target), "beta": canon.beta,
                  "k": canon.k, "region": region}
        try:
            LRNParams(convention=target, **result)
            return result
        except ValueError as e:
            errors.append(str(e))
    raise NoEquivalent(f"no '{target}' layer computes this: {errors[0]}")
