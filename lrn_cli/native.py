"""Build (once per machine) and load the project's C kernels through ctypes.

`library(name)` compiles `SOURCES[name]` at first use with the system C compiler into a cache
folder (`$LRN_CACHE_DIR`, else `$XDG_CACHE_HOME/lrn`, else `~/.cache/lrn`), keyed by the source
(and the headers beside it and beside this file), the flags, the compiler and the CPU, so a change in any of them
rebuilds it. No torch headers are involved, so a build takes a few seconds, and nothing is built
at install time. Where there is no compiler it returns None (with one warning) and callers use
their PyTorch path. `LRN_NATIVE=0` turns the C kernels off.

The sources in `OPENMP` are built with OpenMP and linked against the OpenMP runtime torch itself
loaded (the `libgomp` in torch's `lib/` folder on Linux wheels), so their parallel regions run on
torch's thread pool: the same threads, no second pool spinning against torch's. Where that
build fails (no OpenMP in the compiler, no runtime to link), or with `LRN_OPENMP=0`, they are
built without it and start their own threads.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

SOURCES = {"lrn_cpu": Path(__file__).parent / "lrn" / "kernels" / "lrn_cpu.c",
           "augment_cpu": Path(__file__).parent / "data" / "augment_cpu.c",
           "maxpool_cpu": Path(__file__).parent / "ops" / "maxpool_cpu.c"}
# -ffast-math lets the compiler vectorize exp/log (glibc's libmvec); it is given when compiling
# only, not when linking, so that loading the library leaves the process's FP flags alone.
CFLAGS = ["-O3", "-march=native", "-ffast-math", "-fPIC", "-std=gnu99", "-Wall"]
LDFLAGS = ["-shared", "-pthread", "-lmvec", "-lm"]
OPENMP = {"lrn_cpu", "maxpool_cpu"}
EXTRA_CFLAGS = {"maxpool_cpu": ["-fno-finite-math-only"]}  # max pooling must see NaN

_lock = threading.Lock()  # held while a library is built: other threads wait for it
_libs: dict[str, ctypes.CDLL | None] = {}  # an entry appears only once its library is loaded (or given up)


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


@functools.cache
def _compiler() -> str | None:
    """The C compiler, looked up once per process (so there is one warning when there is none)."""
    for cc in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cc and shutil.which(cc):
            return cc
    warnings.warn("no C compiler found: LRN and the image-folder crops use their PyTorch paths, "
                  "which are slower (install gcc or clang for the fast CPU kernels)", NativeWarning, stacklevel=5)
    return None


@functools.cache
def _toolchain(cc: str) -> str:
    """What besides the source decides the binary: flags, compiler version, CPU (once per process)."""
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    return "\0".join([*CFLAGS, *LDFLAGS, version, _cpu_id(), platform.machine()])


@functools.cache
def torch_openmp() -> Path | None:
    """The OpenMP runtime torch loaded into this process (None where it is not one we can link)."""
    import torch

    return next(iter(sorted((Path(torch.__file__).parent / "lib").glob("libgomp*.so*"))), None)


def _variants(name: str) -> list[tuple[str, list[str], list[str]]]:
    """(tag, extra compile flags, extra link flags) to try in order."""
    runtime = torch_openmp() if name in OPENMP and os.environ.get("LRN_OPENMP", "1") != "0" else None
    extra = EXTRA_CFLAGS.get(name, [])
    plain = (" ".join(["plain", *extra]), extra, [])
    if runtime is None:
        return [plain]
    # the runtime by path; its soname (libgomp.so.1) matches the copy torch has loaded already
    return [(f"openmp:{runtime} {' '.join(extra)}", ["-fopenmp", *extra], [str(runtime), f"-Wl,-rpath,{runtime.parent}"]),
            plain]


def build(cc: str, name: str) -> Path:
    source = SOURCES[name]
    headers = sorted({*source.parent.glob("*.h"), *Path(__file__).parent.glob("*.h")})
    text = "\0".join([source.read_text(), *(h.read_text() for h in headers)])
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    failure: subprocess.CalledProcessError | None = None
    for tag, cflags, ldflags in _variants(name):
        key = hashlib.sha256("\0".join([text, _toolchain(cc), tag]).encode()).hexdigest()[:16]
        lib = folder / f"{name}-{key}.so"
        if lib.exists():
            return lib
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            obj, so = Path(tmp) / f"{name}.o", Path(tmp) / f"{name}.so"
            try:
                subprocess.run([cc, *CFLAGS, *cflags, f"-I{Path(__file__).parent}", "-c", str(source), "-o", str(obj)],
                               check=True, capture_output=True, text=True)
                subprocess.run([cc, str(obj), "-o", str(so), *LDFLAGS, *ldflags], check=True, capture_output=True,
                               text=True)
            except subprocess.CalledProcessError as e:
                failure = failure or e
                continue
            os.replace(so, lib)  # atomic: a concurrent build of the same key lands the same file
        return lib
    assert failure is not None
    raise failure


def library(name: str) -> ctypes.CDLL | None:
    """The compiled library `name`, building it the first time; None where that is not possible.
    A thread that asks while another builds it waits for that build and gets its library."""
    if name in _libs:
        return _libs[name]
    with _lock:
        if name not in _libs:
            _libs[name] = _load(name)
        return _libs[name]


def _load(name: str) -> ctypes.CDLL | None:
    if os.environ.get("LRN_NATIVE", "1") == "0":
        return None
    cc = _compiler()
    if cc is None:
        return None
    try:
        return ctypes.CDLL(str(build(cc, name)))
    except (OSError, subprocess.CalledProcessError) as e:
        detail = getattr(e, "stderr", "") or str(e)
        warnings.warn(f"could not build the C kernels of {SOURCES[name].name} ({detail.strip()[:300]}); "
                      "using the PyTorch path", NativeWarning, stacklevel=4)
        return None
