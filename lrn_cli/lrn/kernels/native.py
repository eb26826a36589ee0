"""The LRN C kernels (`lrn_cpu.c`) through ctypes: see `lrn_cli.native` for how they are built."""
from __future__ import annotations

import ctypes

import torch

from ... import native

LAYOUT = {"planar": 0, "packed": 1, "within": 2}
DTYPE = {torch.float32: 0, torch.float64: 1, torch.bfloat16: 2, torch.float16: 3}
NO_MEMORY = -2  # lrn_cpu.c's LRN_NO_MEMORY: a scratch buffer could not be allocated


def load() -> ctypes.CDLL | None:
    lib = native.library("lrn_cpu")
    if lib is not None and lib.lrn_cpu.argtypes is None:
        lib.lrn_cpu.restype = ctypes.c_int
        lib.lrn_cpu_has_dtype.restype = lib.lrn_cpu_openmp.restype = ctypes.c_int
        lib.lrn_cpu_has_dtype.argtypes = [ctypes.c_int]
        lib.lrn_cpu.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                ctypes.c_long, ctypes.c_long, ctypes.c_long, ctypes.c_long, ctypes.c_long,
                                ctypes.c_int, ctypes.c_int, ctypes.c_double, ctypes.c_double, ctypes.c_double,
                                ctypes.c_int]
        lib.dtypes = frozenset(d for d, i in DTYPE.items() if lib.lrn_cpu_has_dtype(i))
    return lib


def available() -> bool:
    return load() is not None


def supports(dtype: torch.dtype) -> bool:
    """Whether the built kernels take this dtype as it is (float16 needs a compiler with _Float16)."""
    lib = load()
    return lib is not None and dtype in lib.dtypes


def on_torch_threads() -> bool:
    """Whether the kernels run on torch's OpenMP pool (else on threads of their own)."""
    lib = load()
    return lib is not None and bool(lib.lrn_cpu_openmp())


def call(layout: str, x: torch.Tensor, g: torch.Tensor | None, out: torch.Tensor, dims: tuple[int, ...],
         lo: int, hi: int, scale: float, k: float, beta: float) -> None:
    """Run one kernel: `dims` is (outer, C, inner) for across layouts, (planes, H, W) for within."""
    run(args(layout, x.dtype, dims, lo, hi, scale, k, beta), x, g, out)


def args(layout: str, dtype: torch.dtype, dims: tuple[int, ...], lo: int, hi: int, scale: float, k: float,
         beta: float) -> tuple:
    """`run`'s arguments for a kernel call as `call` takes it."""
    outer, a, b = dims
    C, inner, H, W = (a, b, 0, 0) if layout != "within" else (0, 0, a, b)
    return (LAYOUT[layout], DTYPE[dtype], outer, C, inner, H, W, lo, hi, scale, k, beta)


def run(args: tuple, x: torch.Tensor, g: torch.Tensor | None, out: torch.Tensor) -> None:
    """lrn_cpu on x (forward if g is None, else the backward with gradient g) into out; args are
    (layout, dtype, outer, C, inner, H, W, lo, hi, scale, k, beta), in `lrn_cpu`'s codes."""
    rc = load().lrn_cpu(args[0], args[1], x.data_ptr(), None if g is None else g.data_ptr(), out.data_ptr(),
                        *args[2:], torch.get_num_threads())
    if rc == NO_MEMORY:
        raise MemoryError(f"lrn_cpu: out of memory for the scratch buffers of an input of shape {tuple(x.shape)}")
    if rc != 0:
        raise RuntimeError(f"lrn_cpu failed with code {rc}")
