"""Building and loading the C kernels (`lrn_cli.native`), and how their failures reach Python."""
import ctypes
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from lrn_cli import native
from lrn_cli.data import augment
from lrn_cli.lrn.kernels import native as lrn_native

# Shapes whose scratch buffers no machine can hold: 2^63 bytes and more, beyond what malloc
# accepts (PTRDIFF_MAX). The kernels allocate before they touch any data, so these fail cleanly
# whatever the tiny tensors passed in.
HUGE = 2 ** 61
needs_64bit_long = pytest.mark.skipif(ctypes.sizeof(ctypes.c_long) < 8, reason="the shapes need a 64-bit C long")


def test_a_thread_that_asks_during_the_build_waits_for_it(monkeypatch):
    """The library was recorded as missing (None) before its build, so a thread that asked in
    the meantime silently took the slow PyTorch path."""
    if native._compiler() is None:
        pytest.skip("no C compiler")
    monkeypatch.delenv("LRN_NATIVE", raising=False)
    monkeypatch.setattr(native, "_libs", {})  # as in a fresh process
    building, finish = threading.Event(), threading.Event()
    real_build = native.build

    def slow_build(cc, name):
        building.set()
        assert finish.wait(30)
        return real_build(cc, name)

    monkeypatch.setattr(native, "build", slow_build)
    got = {}
    first = threading.Thread(target=lambda: got.setdefault("first", native.library("lrn_cpu")))
    second = threading.Thread(target=lambda: got.setdefault("second", native.library("lrn_cpu")))
    first.start()
    assert building.wait(30)
    second.start()  # asks while the first one builds
    second.join(0.5)
    assert second.is_alive() and "second" not in got  # it waits instead of answering None
    finish.set()
    first.join(30)
    second.join(30)
    assert got["first"] is not None and got["second"] is got["first"]


@needs_64bit_long
@pytest.mark.parametrize("layout, dims, backward", [
    ("planar", (1, HUGE, 1), True),       # the backward's buffer of tile x C
    ("packed", (1, HUGE, 1), False),      # the padded channel vector
    ("within", (1, 2 ** 31, 2 ** 30), False),  # the padded planes
])
def test_an_allocation_failure_in_the_lrn_kernel_is_a_memory_error(layout, dims, backward):
    if not lrn_native.available():
        pytest.skip("no C compiler: the native kernels are not built")
    x, out = torch.zeros(8), torch.empty(8)
    g = torch.zeros(8) if backward else None
    with pytest.raises(MemoryError, match="lrn_cpu: out of memory"):
        lrn_native.call(layout, x, g, out, dims, 1, 1, 1e-4, 1.0, 0.75)


@needs_64bit_long
def test_an_allocation_failure_in_the_crop_kernel_is_a_memory_error():
    lib = augment._native()
    if lib is None:
        pytest.skip("no C compiler: the crop kernel is not built")
    src, out = torch.zeros(8, dtype=torch.uint8), torch.empty(8, dtype=torch.uint8)
    index, flips = torch.zeros(1, dtype=torch.int64), torch.zeros(1, dtype=torch.uint8)
    boxes = torch.tensor([[0, 0, 1, 1]], dtype=torch.int64)
    # one image of HUGE x 1 pixels: its row buffer (H x C x S floats) cannot be allocated
    rc = lib.random_resized_crop(src.data_ptr(), 1, index.data_ptr(), 1, HUGE, 1, 1, boxes.data_ptr(),
                                 flips.data_ptr(), out.data_ptr(), 1, None, None, 1)
    with pytest.raises(MemoryError, match="resize_crops: out of memory"):
        augment.check_crop(rc)
    with pytest.raises(ValueError, match="a box lies outside its image"):
        augment.check_crop(-1)


def test_the_kernels_run_on_the_openmp_runtime_torch_loaded():
    """Built with OpenMP and linked against torch's own libgomp, the kernels share torch's
    thread pool: one OpenMP runtime in the process, not a second pool of threads."""
    if not lrn_native.available():
        pytest.skip("no C compiler: the native kernels are not built")
    if native.torch_openmp() is None:
        pytest.skip("this torch build ships no libgomp to link against")
    assert lrn_native.on_torch_threads()
    maps = open("/proc/self/maps").read().splitlines()
    runtimes = {line.split()[-1] for line in maps if "libgomp" in line.rsplit("/", 1)[-1]}
    assert runtimes == {str(native.torch_openmp())}


def test_the_build_without_openmp_gives_the_same_bytes(tmp_path):
    """LRN_OPENMP=0 (or a compiler without OpenMP) builds the kernels on their own pthreads;
    the work is split the same way, so the results are the same bytes."""
    if not lrn_native.available():
        pytest.skip("no C compiler: the native kernels are not built")
    code = """
import sys, torch
from lrn_cli.lrn import canonical
from lrn_cli.lrn.kernels import native
from lrn_cli.lrn.kernels.fused import fused
torch.set_num_threads(2)
g = torch.Generator().manual_seed(0)
x = torch.randn(3, 64, 13, 11, generator=g).requires_grad_()
outs = []
for canon in (canonical(5, 0.4, 0.75, 1.7), canonical(3, 0.9, 0.75, 1.0, "within", "caffe")):
    y = fused(x, canon, "native")
    outs += [y.detach(), torch.autograd.grad(y, x, torch.ones_like(y))[0]]
torch.save({"openmp": native.on_torch_threads(), "outs": outs}, sys.argv[1])
"""
    results = {}
    for flag in ("1", "0"):
        out = tmp_path / f"openmp{flag}.pt"
        env = {**os.environ, "LRN_OPENMP": flag}
        subprocess.run([sys.executable, "-c", code, str(out)], check=True, env=env)
        results[flag] = torch.load(out)
    assert results["0"]["openmp"] is False
    assert all(torch.equal(a, b) for a, b in zip(results["0"]["outs"], results["1"]["outs"]))


def test_an_avx2_build_computes_the_same_formula(tmp_path):
    """The kernels take AVX-512 paths where the compiler targets it (this machine) and AVX2 or
    the compiler's own code elsewhere. Built for an AVX2 CPU (-march=haswell), the general
    exponent (libmvec's 8-lane exp/log) and beta 0.75 must match the reference in float32."""
    if not lrn_native.available():
        pytest.skip("no C compiler: the native kernels are not built")
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists() or "avx2" not in cpuinfo.read_text().split():
        pytest.skip("not an x86 CPU with AVX2 (or no /proc/cpuinfo)")
    code = """
import sys, torch
import lrn_cli.native as build
build.CFLAGS = [f if f != "-march=native" else "-march=haswell" for f in build.CFLAGS]
from lrn_cli.lrn import canonical, reference
from lrn_cli.lrn.kernels.fused import fused
g = torch.Generator().manual_seed(0)
x = (3 * torch.randn(3, 21, 9, 13, generator=g, dtype=torch.float64)).requires_grad_()
worst = 0.0
for beta in (0.6, 0.75):
    for region in ("across", "within"):
        canon = canonical(5, 0.4, beta, 1.7, region, "cuda-convnet")
        x32 = x.detach().float().requires_grad_()
        y = fused(x32, canon, "native")
        gx, = torch.autograd.grad(y, x32, torch.ones_like(y))
        yr = reference(x, canon)
        gr, = torch.autograd.grad(yr, x, torch.ones_like(yr))
        worst = max(worst, ((y.double() - yr).abs().max() / yr.abs().max()).item(),
                    ((gx.double() - gr).abs().max() / gr.abs().max()).item())
print(worst)
"""
    env = {**os.environ, "LRN_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True, text=True)
    assert float(out.stdout.strip().splitlines()[-1]) < 1e-5
    assert any("lrn_cpu" in p.name for p in tmp_path.iterdir())  # it built its own library
