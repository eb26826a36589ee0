"""The LRN C kernels (`lrn_cpu.c`) through ctypes: see `lrn_cli.native` for how they are built."""
from __future__ import annotations

import ctypes
import os

import torch

from ... import native
from ...errors import UserError

LAYOUT = {"planar": 0, "packed": 1, "within": 2}
DTYPE = {torch.float32: 0, torch.float64: 1, torch.bfloat16: 2, torch.float16: 3}
NO_MEMORY = -2  # lrn_cpu.c's LRN_NO_MEMORY: a scratch buffer could not be allocated
# outputs of at least this many bytes take their memory from the kernels' pool (native_pool.h):
# about 3 us more than torch.empty_like, under 0.3% of a call of that size, and the sizes where
# glibc's malloc maps fresh pages (faulted in and zeroed on every call) at least until it adapts
POOL_MIN_BYTES = 8 << 20
POOL_MB = "LRN_POOL_MB"  # the most MB of freed outputs the pool keeps (default 1024; 0: no pool)
DLPACK = {torch.float32: (2, 32), torch.float64: (2, 64), torch.float16: (2, 16), torch.bfloat16: (4, 16)}
_capsule = ctypes.pythonapi.PyCapsule_New
_capsule.restype, _capsule.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]


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
        lib.lrn_pool_tensor.restype = ctypes.c_void_p
        lib.lrn_pool_tensor.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                                        ctypes.c_size_t]
        lib.lrn_pool_set_limit.argtypes = [ctypes.c_size_t]
        lib.lrn_pool_drop.argtypes = [ctypes.c_void_p]
        lib.lrn_pool_held.restype = ctypes.c_size_t
        lib.pool_limit = pool_limit_mb() << 20
        lib.lrn_pool_set_limit(lib.pool_limit)
    return lib


def pool_limit_mb() -> int:
    """$LRN_POOL_MB, the most MB of freed large outputs the kernels keep for the next call."""
    text = os.environ.get(POOL_MB, "1024")
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise UserError(f"{POOL_MB}={text!r}: give a whole number of MB (0 turns the pool off; default 1024)")
    return value


def empty_like(x: torch.Tensor) -> torch.Tensor:
    """torch.empty_like(x) for a dense CPU tensor x of the kernels' dtypes; a large one's memory
    comes from the kernels' pool, pages already mapped, and goes back to it when torch frees it."""
    lib = load()
    nbytes = x.numel() * x.element_size()
    if nbytes < POOL_MIN_BYTES or not lib.pool_limit or x.dim() > 8:
        return torch.empty_like(x)
    n = x.dim()
    dims = (ctypes.c_int64 * (2 * n))(*x.shape, *x.stride())
    managed = lib.lrn_pool_tensor(n, dims, ctypes.addressof(dims) + 8 * n, *DLPACK[x.dtype], nbytes)
    if not managed:
        return torch.empty_like(x)
    try:
        return torch.from_dlpack(_capsule(managed, b"dltensor", None))
    except BaseException:
        lib.lrn_pool_drop(managed)
        raise


def pool_held() -> int:
    """Bytes of freed outputs the pool keeps now."""
    lib = load()
    return int(lib.lrn_pool_held()) if lib is not None else 0


def release_pool() -> None:
    """Give the pool's kept memory back to the system (the pool keeps blocks again afterwards)."""
    lib = load()
    if lib is not None:
        lib.lrn_pool_set_limit(0)
        lib.lrn_pool_set_limit(lib.pool_limit)


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
