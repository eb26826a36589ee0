"""Build (once per machine) and call the fused C kernels of `lrn_cpu.c` through ctypes.

The library is compiled at first use with the system C compiler into a cache folder
(`$LRN_CACHE_DIR`, else `$XDG_CACHE_HOME/lrn`, else `~/.cache/lrn`), keyed by the source, the
flags, the compiler and the CPU, so a change in any of them rebuilds it. Where there is no
compiler, `available()` is False and the layer uses the fused PyTorch path instead.
`LRN_NATIVE=0` turns the C kernels off.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("lrn_cpu.c")
# -ffast-math lets the compiler vectorize exp/log (glibc's libmvec); it is given when compiling
# only, not when linking, so that loading the library leaves the process's FP flags alone.
CFLAGS = ["-O3", "-march=native", "-ffast-math", "-fPIC", "-std=gnu99", "-Wall"]
LDFLAGS = ["-shared", "-pthread", "-lmvec", "-lm"]
LAYOUT = {"planar": 0, "packed": 1, "within": 2}
DTYPE = {torch.float32: 0, torch.float64: 1}

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_tried = False


class NativeWarning(UserWarning):
    pass


def cache_dir() -> Path:
    if os.environ.get("LRN_CACHE_DIR"):
        return Path(os.environ["LRN_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lrn"


def _cpu_id() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        lines = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags", "Features"))]
        return "\n".join(sorted(set(lines)))
    except OSError:
        return platform.processor() or platform.machine()


def _compiler() -> str | None:
    for cc in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cc and shutil.which(cc):
            return cc
    return None


def build(cc: str) -> Path:
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), *CFLAGS, *LDFLAGS, version, _cpu_id(),
                                    platform.machine()]).encode()).hexdigest()[:16]
    folder = cache_dir()
    lib = folder / f"lrn_cpu-{key}.so"
    if lib.exists():
        return lib
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        obj, so = Path(tmp) / "lrn_cpu.o", Path(tmp) / "lrn_cpu.so"
        subprocess.run([cc, *CFLAGS, "-c", str(SOURCE), "-o", str(obj)], check=True, capture_output=True, text=True)
        subprocess.run([cc, str(obj), "-o", str(so), *LDFLAGS], check=True, capture_output=True, text=True)
        os.replace(so, lib)  # atomic: a concurrent build of the same key lands the same file
    return lib


def load() -> ctypes.CDLL | None:
    """The compiled library, building it the first time; None where that is not possible."""
    global _lib, _tried
    if _tried:
        return _lib
    with _lock:
        if _tried:
            return _lib
        _tried = True
        if os.environ.get("LRN_NATIVE", "1") == "0":
            return None
        cc = _compiler()
        if cc is None:
            warnings.warn("no C compiler found: LRN uses its fused PyTorch path, which is slower "
                          "(install gcc or clang for the fast CPU kernels)", NativeWarning, stacklevel=3)
            return None
        try:
            lib = ctypes.CDLL(str(build(cc)))
        except (OSError, subprocess.CalledProcessError) as e:
            detail = getattr(e, "stderr", "") or str(e)
            warnings.warn(f"could not build the LRN CPU kernels ({detail.strip()[:300]}); using the fused "
                          "PyTorch path", NativeWarning, stacklevel=3)
            return None
        fn = lib.lrn_cpu
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                       ctypes.c_long, ctypes.c_long, ctypes.c_long, ctypes.c_long, ctypes.c_long,
                       ctypes.c_int, ctypes.c_int, ctypes.c_double, ctypes.c_double, ctypes.c_double,
                       ctypes.c_int]
        _lib = lib
        return _lib


def available() -> bool:
    return load() is not None


def call(layout: str, x: torch.Tensor, g: torch.Tensor | None, out: torch.Tensor, dims: tuple[int, ...],
         lo: int, hi: int, scale: float, k: float, beta: float) -> None:
    """Run one kernel: `dims` is (outer, C, inner) for across layouts, (planes, H, W) for within."""
    lib = load()
    outer, a, b = dims
    C, inner, H, W = (a, b, 0, 0) if layout != "within" else (0, 0, a, b)
    rc = lib.lrn_cpu(LAYOUT[layout], DTYPE[x.dtype], x.data_ptr(), g.data_ptr() if g is not None else None,
                     out.data_ptr(), outer, C, inner, H, W, lo, hi, scale, k, beta, torch.get_num_threads())
    if rc != 0:
        raise RuntimeError(f"lrn_cpu failed with code {rc}")
