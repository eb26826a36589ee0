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


def check_params(size: Any, alpha: Any, beta: Any, k: Any, region: Any, convention: Any,
                 prefix: str = "", error: type[Exception] = ValueError) -> None:
    """Raise `error` naming the first invalid parameter and its allowed range."""
    if convention not in CONVENTIONS:
        raise error(f"{prefix}convention must be one of {', '.join(CONVENTIONS)} (got {convention!r})")
    if region not in REGIONS:
        raise error(f"{prefix}region must be one of {', '.join(REGIONS)} (got {region!r})")
    if region not in REGIONS_OF[convention]:
        raise error(f"{prefix}region: convention '{convention}' has no {region}-channel LRN; "
                    f"it has {' and '.join(REGIONS_OF[convention])}")
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
        raise error(f"{prefix}size must be an integer >= 1 (got {size!r})")
    for name, value, low, strict in (("alpha", alpha, 0, False), ("beta", beta, 0, False), ("k", k, 0, True)):
        ok = (isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
              and (value > low if strict else value >= low))
        if not ok:
            raise error(f"{prefix}{name} must be a finite number {'>' if strict else '>='} {low} (got {value!r})")
    if convention in ("caffe", "tensorflow") and size % 2 == 0:
        why = "Caffe supports only odd local_size" if convention == "caffe" else \
            "TensorFlow's window is 2 * depth_radius + 1"
        raise error(f"{prefix}size must be odd for convention '{convention}' ({why}; got {size})")
    if convention == "cudnn" and not (1 <= size <= 16 and k >= 1e-5 and beta >= 0.01):
        raise error(f"{prefix}cuDNN's LRN needs 1 <= size <= 16, k >= 1e-5 and beta >= 0.01 "
                    f"(CUDNN_LRN_MIN_N/MAX_N/MIN_K/MIN_BETA; got size={size}, k={k}, beta={beta})")
    if convention == "caffe" and region == "within" and k != 1:
        raise error(f"{prefix}k: Caffe's WITHIN_CHANNEL LRN has no k (it is always 1); "
                    f"leave k at 1 or use convention 'cuda-convnet' (got {k!r})")


def canonical(size: int, alpha: float, beta: float, k: float, region: str = "across",
              convention: str = "torch", dims: int = 2) -> Canon:
    """Map a convention's parameters to the canonical form; `dims` is the number of spatial dims."""
    check_params(size, alpha, beta, k, region, convention)
    size = int(size)
    if region == "within":
        # Caffe WITHIN_CHANNEL: avg-pool of x^2 over n x n (padding counted) -> alpha / n^2;
        # cuda-convnet rnorm: scale / size^2. Even windows put the extra pixel on the low side.
        return Canon("within", size // 2, (size - 1) // 2, alpha / size ** dims, beta, k)
    if convention == "alexnet":
        # the paper's sum runs over max(0, i - n/2) .. min(N - 1, i + n/2): n + 1 channels for even n
        return Canon("across", size // 2, size // 2, alpha, beta, k)
    if convention == "tensorflow":
        return Canon("across", size // 2, size // 2, alpha, beta, k)
    if convention in ("onnx", "cudnn"):
        # extra channel on the high side: c - floor((n-1)/2) .. c + ceil((n-1)/2)
        return Canon("across", (size - 1) // 2, size // 2, alpha / size, beta, k)
    # torch, caffe (odd only), cuda-convnet cmrnorm: c - n//2 .. c + (n-1)//2, alpha / n
    return Canon("across", size // 2, (size - 1) // 2, alpha / size, beta, k)


def with_defaults(convention: str, **given: Any) -> dict[str, Any]:
    """Fill the parameters left as None with the convention's own defaults."""
    base = DEFAULTS.get(convention, DEFAULTS["torch"])
    return {name: base[name] if given.get(name) is None else given[name] for name in base}
