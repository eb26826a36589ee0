"""The LRN layer (nn.Module)."""
from __future__ import annotations

import torch
from torch import nn

from .conventions import Canon, LRNParams
from .functional import IMPLS, apply
from .kernels.fused import _graph_mode, native_args, native_fast

_UNSEEN = object()


class LocalResponseNorm(nn.Module):
    """Local Response Normalization (Krizhevsky, Sutskever and Hinton, 2012, section 3.3).

        b = a * (k + scale * sum_{window} a^2) ^ (-beta)

    Across channels the window is `size` neighbouring channels; within a channel (Caffe's
    WITHIN_CHANNEL, cuda-convnet's rnorm) it is a size x size patch of pixels. Zeros outside the
    tensor count as part of the window. The conventions (see `conventions.py`):

    ============  =========================  ===================================================
    convention    scale                      window for output channel c (size n)
    ============  =========================  ===================================================
    torch         alpha / n                  c - n//2 .. c + (n-1)//2  (torch.nn.LocalResponseNorm)
    alexnet       alpha                      c - n//2 .. c + n//2      (paper; n+1 channels if even)
    caffe         alpha / n  (within: /n^2)  centred, odd n only; within-channel has k = 1
    tensorflow    alpha                      centred, n = 2 * depth_radius + 1
    onnx, cudnn   alpha / n                  c - (n-1)//2 .. c + n//2  (extra channel above)
    cuda-convnet  alpha / n  (within: /n^2)  as torch; k is cmrnorm's minDiv
    ============  =========================  ===================================================

    Parameters left as None take the convention's defaults (torch: n=5, alpha=1e-4, beta=0.75,
    k=1; alexnet: n=5, alpha=1e-4, beta=0.75, k=2). With the defaults it computes what
    `torch.nn.LocalResponseNorm(size, alpha, beta, k)` computes. They are checked here, or
    given already checked as one `LRNParams` in place of `size` (as the model builder does:
    `LocalResponseNorm(params, impl=...)`); `self.params` holds them.

    impl: 'fused' (default: one op with an analytic backward that keeps only the input; C
    kernels on the CPU) or 'reference' (the formula in plain autograd, for checking).
    """

    def __init__(self, size: int | LRNParams | None = None, alpha: float | None = None,
                 beta: float | None = None, k: float | None = None, region: str = "across",
                 convention: str = "torch", impl: str = "fused") -> None:
        super().__init__()
        if isinstance(size, LRNParams):
            if (alpha, beta, k, region, convention) != (None, None, None, "across", "torch"):
                raise TypeError("LocalResponseNorm takes an LRNParams or the parameters, not both")
            self.params = size  # checked when it was made
        else:
            self.params = LRNParams(size, alpha, beta, k, region, convention)
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {', '.join(IMPLS)} (got {impl!r})")
        self.impl = impl
        self._canon: dict[int, Canon] = {}
        # the C kernel's arguments (or None: not that path) per input (shape, strides, dtype) on the
        # CPU: a network calls its layers with the same few shapes, and working them out again
        # costs tens of microseconds a call inside a train step, where the caches hold tensors,
        # not the interpreter's data
        self._native: dict[tuple, tuple | None] = {}

    size = property(lambda self: self.params.size)
    alpha = property(lambda self: self.params.alpha)
    beta = property(lambda self: self.params.beta)
    k = property(lambda self: self.params.k)
    region = property(lambda self: self.params.region)
    convention = property(lambda self: self.params.convention)

    def canon(self, x: torch.Tensor) -> Canon:
        """The canonical parameters for an input like `x`, mapped once per input rank."""
        dims = max(x.dim() - 2, 1)
        if dims not in self._canon:
            self._canon[dims] = self.params.canon(dims)
        return self._canon[dims]

    def __getstate__(self):  # the kernel arguments belong to this process (its built library)
        return {**self.__dict__, "_native": {}}

    def __setstate__(self, state):
        super().__setstate__({**state, "_native": {}})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.impl == "fused" and x.is_cpu and not _graph_mode():
            key = (x.shape, x.stride(), x.dtype)
            args = self._native.get(key, _UNSEEN)
            if args is _UNSEEN:
                if len(self._native) >= 64:  # inputs of ever new shapes: keep it small
                    self._native.clear()
                args = self._native[key] = native_args(x, self.canon(x))
            if args is not None:
                return native_fast(x, args)
        return apply(x, self.canon(x), self.impl)

    def extra_repr(self) -> str:
        return (f"size={self.size}, alpha={self.alpha:g}, beta={self.beta:g}, k={self.k:g}, "
                f"region={self.region}, convention={self.convention}, impl={self.impl}")
