"""The Triton kernels, run by Triton's interpreter on the CPU (no GPU needed)."""
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO

triton = pytest.importorskip("triton", reason="triton is not installed (it comes with CUDA builds of torch)")

SCRIPT = textwrap.dedent("""
    import torch
    from lrn_cli.lrn import canonical, reference
    from lrn_cli.lrn.kernels import gpu
    worst = {}
    for conv, size in [("torch", 5), ("torch", 4), ("onnx", 4), ("alexnet", 3), ("torch", 1)]:
        for dtype in (torch.float64, torch.float32):
            c = canonical(size, 0.4, 0.75, 1.7, "across", conv)
            x = (torch.randn(2, 7, 5, 3, dtype=torch.float64) * 3).to(dtype).requires_grad_()
            g = torch.randn(2, 7, 5, 3, dtype=dtype)
            yr = reference(x.double(), c)
            (gr,) = torch.autograd.grad(yr, x, g.double())
            y = gpu.forward(x.detach(), c.lo, c.hi, c.scale, c.k, c.beta)
            dx = gpu.backward(g, x.detach(), c.lo, c.hi, c.scale, c.k, c.beta)
            assert y.dtype == dtype and dx.dtype == dtype
            key = str(dtype)
            worst[key] = max(worst.get(key, 0), (y.double() - yr).abs().max().item(),
                             (dx.double() - gr).abs().max().item())
    print(worst["torch.float64"], worst["torch.float32"])
""")


def test_triton_kernels_match_the_reference_in_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    res = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, cwd=REPO,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    f64, f32 = map(float, res.stdout.split())
    assert f64 <= 1e-12 and f32 <= 1e-5  # float32: the same budget as the CPU kernels
