"""Process-wide settings that make CPU training faster; `lrn train` and `lrn bench` apply them.

glibc's malloc hands out every block above 32 MB (less by default) as fresh pages from mmap and
returns them on free, so each large tensor of each step faults its pages in again and the
kernel zeroes them: a good part of a conv net's step on a 2-core machine. Serving all blocks
from the heap and keeping freed memory (as jemalloc and tcmalloc do) removes that cost.
LRN_MALLOC=0 leaves malloc alone. The LRN kernels do not depend on it: their large outputs come
from a pool of their own (lrn_cli/native_pool.h).
"""
from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
_done: bool | None = None


def keep_freed_memory() -> bool:
    """Tell glibc not to mmap large blocks and not to give freed memory back; True if applied."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if os.environ.get("LRN_MALLOC", "1") == "0" or platform.system() != "Linux" or \
            platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        _done = bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
    except (OSError, AttributeError):
        _done = False
    return _done


def applied() -> bool:
    """Whether `keep_freed_memory` is in effect in this process."""
    return bool(_done)


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity, which SLURM, taskset and a container's
    cpuset narrow, rather than every core of the machine (`os.cpu_count()`)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1
