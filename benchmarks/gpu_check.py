"""One prepared script for a GPU session: check the Triton LRN kernels, then time them.

1. correctness of the Triton kernels (LRN_TRITON=1) and of the fused PyTorch path against the
   reference formula in float64 and float32, odd and even windows, forward and backward;
2. determinism: the same backward twice gives the same bits, also under
   torch.use_deterministic_algorithms(True) (where torch's own LRN raises on CUDA);
3. `lrn bench --device cuda` with the Triton kernels: the table of issue 3 on the GPU, and the
   kernel's bytes/s as a fraction of the device's copy bandwidth.

    LRN_TRITON=1 python benchmarks/gpu_check.py [--json FILE]

Exits non-zero if a check fails, so the timings are only trusted when the checks pass.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("LRN_TRITON", "1")

import torch  # noqa: E402

from lrn_cli import bench  # noqa: E402
from lrn_cli.lrn import canonical, reference  # noqa: E402
from lrn_cli.lrn.kernels import gpu  # noqa: E402
from lrn_cli.lrn.kernels.fused import fused  # noqa: E402


def check_correctness() -> list[str]:
    failures = []
    for conv, size in [("torch", 5), ("torch", 4), ("onnx", 4), ("alexnet", 5), ("torch", 1)]:
        c = canonical(size, 0.4, 0.75, 1.7, "across", conv)
        for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
            x = (torch.randn(4, 33, 13, 11, dtype=torch.float64) * 3).to("cuda", dtype).requires_grad_()
            g = torch.randn(4, 33, 13, 11, dtype=dtype, device="cuda")
            yr = reference(x.double(), c)
            (gr,) = torch.autograd.grad(yr, x, g.double())
            for backend in ("auto", "torch"):
                xx = x.detach().requires_grad_()
                y = fused(xx, c, backend)
                (gx,) = torch.autograd.grad(y, xx, g)
                err = max((y.double() - yr).abs().max().item(), (gx.double() - gr).abs().max().item())
                if err > tol:
                    failures.append(f"{conv} size {size} {dtype} {backend}: max error {err:.3g} > {tol}")
    return failures


def check_determinism() -> list[str]:
    c = canonical(5, 1e-4, 0.75, 2.0)
    x = torch.randn(64, 96, 55, 55, device="cuda", requires_grad=True)
    g = torch.randn_like(x)
    grads = [torch.autograd.grad(fused(x, c), x, g)[0] for _ in range(3)]
    failures = [] if all(torch.equal(grads[0], h) for h in grads) else ["backward differs between calls"]
    torch.use_deterministic_algorithms(True)
    try:
        torch.autograd.grad(fused(x, c), x, g)
    except RuntimeError as e:
        failures.append(f"fails in deterministic mode: {e}")
    finally:
        torch.use_deterministic_algorithms(False)
    return failures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no GPU here")
    print(torch.cuda.get_device_name(), "triton on:", gpu.available(), flush=True)
    failures = check_correctness() + check_determinism()
    for f in failures:
        print("FAIL", f, flush=True)
    result = bench.run("cuda", ("float32", "bfloat16"), repeats=20)
    print(bench.format_tables(result), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "failures": failures, **result}, f, indent=2)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
