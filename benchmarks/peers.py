"""The fused LRN against the other engines' LRN on this CPU: torch, onnxruntime and OpenVINO.

    pip install -e ".[bench]"      # onnx, onnxruntime, openvino
    python benchmarks/peers.py [--threads 2] [--repeats 9] [--json FILE]

Across channels, the AlexNet paper's LRN (size 5, alpha 1e-4 on the plain sum of squares, beta
0.75, k 2), float32, at the shapes of issue 13: (128,32,16,16), (64,96,55,55), (64,256,27,27).
Each engine is given the same layer in its own convention (torch, ONNX and OpenVINO divide alpha
by the size) and its output is checked against ours before anything is timed. Then, per shape,
the engines are called in turn, repeats times, and the median of each is reported:

* forward: `lrn` (the layer as a user calls it: a fresh output tensor each call), `lrn kernel`
  (the C kernel into a preallocated output, the engines' own way of running), torch
  (`nn.LocalResponseNorm`), onnxruntime and OpenVINO (oneDNN's JIT LRN; the f32 precision hint,
  since it defaults to bfloat16 on CPUs that have it), each on --threads threads;
* forward+backward: `lrn` and torch (the other two have no backward);
* the physical context: bytes an LRN must move per call (read x, write y; backward: read x and
  the gradient, write dx), the achieved fraction of this machine's copy bandwidth (a tensor copy
  of the same size, timed in the same run), and the floating-point operations per element.

The process keeps freed memory as `lrn train` does (lrn_cli.perf), so no engine pays for page
faults on its outputs. Engines that are not installed are skipped with their install command.
Goal (issue 13): lrn's forward at least as fast as OpenVINO's at all three shapes and its
forward+backward at least 10x torch's; exits 1 when one is missed.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lrn_cli.lrn import LocalResponseNorm, canonical  # noqa: E402
from lrn_cli.lrn.kernels import native  # noqa: E402
from lrn_cli.perf import keep_freed_memory  # noqa: E402
from lrn_cli.runs import environment  # noqa: E402

SHAPES = [(128, 32, 16, 16), (64, 96, 55, 55), (64, 256, 27, 27)]
SIZE, ALPHA, BETA, K = 5, 1e-4, 0.75, 2.0  # the paper's convention: alpha times the plain sum
# per element, forward: size squares and adds, k + scale * s (2), d^-0.75 as two square roots and a
# division (3), the product (1); the backward adds the forward's and the transposed window's sums
FLOPS_FORWARD = 2 * SIZE + 6
FLOPS_BACKWARD = 2 * SIZE + 6 + 6 + SIZE + 3


def _median_ms(times: list[float]) -> float:
    return 1e3 * statistics.median(times)


def calls(layer: torch.nn.Module) -> tuple[Callable, Callable]:
    """A layer's forward (no grad) and forward+backward, as the benchmark times them."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return layer(x)

    def both(x: torch.Tensor, g: torch.Tensor) -> None:
        xx = x.detach().requires_grad_()
        layer(xx).backward(g)

    return forward, both


def ours() -> tuple[Callable, Callable]:
    return calls(LocalResponseNorm(SIZE, ALPHA, BETA, K, convention="alexnet"))


def our_kernel(x: torch.Tensor) -> Callable[[], torch.Tensor]:
    """The C kernel itself into one preallocated output (what the inference engines do)."""
    c = canonical(SIZE, ALPHA, BETA, K, convention="alexnet")
    out = torch.empty_like(x)
    n, ch = x.shape[:2]
    dims = (n, ch, x[0, 0].numel())

    def run() -> torch.Tensor:
        native.call("planar", x, None, out, dims, c.lo, c.hi, c.scale, c.k, c.beta)
        return out

    return run


def torch_layer() -> tuple[Callable, Callable]:
    return calls(torch.nn.LocalResponseNorm(SIZE, ALPHA * SIZE, BETA, K))  # torch divides alpha by size


def onnxruntime_engine(x: torch.Tensor, threads: int) -> Callable[[], Any]:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    shape = list(x.shape)
    node = helper.make_node("LRN", ["x"], ["y"], size=SIZE, alpha=ALPHA * SIZE, beta=BETA, bias=K)
    graph = helper.make_graph([node], "lrn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    # its pool would otherwise spin after each run and take the cores from the next engine's call
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = {"x": x.numpy()}
    return lambda: session.run(None, feed)[0]


def openvino_engine(x: torch.Tensor, threads: int) -> Callable[[], Any]:
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops

    data = ops.parameter(list(x.shape), np.float32, name="x")
    lrn = ops.lrn(data, ops.constant(np.array([1], dtype=np.int64)), ALPHA * SIZE, BETA, K, SIZE)
    model = ov.Model([lrn], [data], "lrn")
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                      "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    request.set_input_tensor(ov.Tensor(x.numpy()))

    def run() -> Any:
        request.infer()
        return request.get_output_tensor().data

    return run


ENGINES = {"onnxruntime": (onnxruntime_engine, "pip install onnx onnxruntime"),
           "openvino": (openvino_engine, "pip install openvino")}


def bench_shape(shape: tuple[int, ...], threads: int, repeats: int) -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g)
    grad = torch.randn(*shape, generator=g)
    our_fwd, our_both = ours()
    torch_fwd, torch_both = torch_layer()
    want = our_fwd(x)
    forward: dict[str, Callable[[], Any]] = {"lrn": lambda: our_fwd(x)}
    if native.available():
        forward["lrn kernel"] = our_kernel(x)
    forward["torch"] = lambda: torch_fwd(x)
    skipped: dict[str, str] = {}
    for name, (make, install) in ENGINES.items():
        try:
            forward[name] = make(x, threads)
        except ImportError:
            skipped[name] = f"not installed: {install}"
    errors = {}
    for name, fn in forward.items():  # every engine computes the same layer, or it is not timed
        got = torch.as_tensor(fn())
        errors[name] = ((got - want).abs().max() / want.abs().max()).item()
        if errors[name] > 1e-5:
            raise SystemExit(f"{name} disagrees with lrn at {shape}: max relative difference {errors[name]:.2e}")
    both = {"lrn": lambda: our_both(x, grad), "torch": lambda: torch_both(x, grad)}
    copy_out = torch.empty_like(x)
    times: dict[str, list[float]] = {f"forward {n}": [] for n in forward}
    times.update({f"fwd+bwd {n}": [] for n in both})
    times["copy"] = []
    calls = {**{f"forward {n}": f for n, f in forward.items()}, **{f"fwd+bwd {n}": f for n, f in both.items()},
             "copy": lambda: copy_out.copy_(x)}
    for fn in calls.values():  # warm up
        fn()
    for _ in range(repeats):  # the engines in turn, each repeat
        for name, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    ms = {name: _median_ms(t) for name, t in times.items()}
    nbytes = x.numel() * x.element_size()
    copy_bw = 2 * nbytes / (ms["copy"] / 1e3)
    row: dict[str, Any] = {"shape": list(shape), "threads": threads, "repeats": repeats, "ms": ms,
                           "max_rel_diff": errors, "skipped": skipped,
                           "bytes_forward": 2 * nbytes, "bytes_fwd_bwd": 5 * nbytes,
                           "copy_gbytes_per_s": copy_bw / 1e9,
                           "flops_per_element": {"forward": FLOPS_FORWARD, "fwd+bwd": FLOPS_BACKWARD}}
    row["of_copy"] = {name: (2 * nbytes if name.startswith("forward") else 5 * nbytes) / (t / 1e3) / copy_bw
                      for name, t in ms.items() if name != "copy"}
    if "forward openvino" in ms:
        row["forward_vs_openvino"] = ms["forward openvino"] / ms["forward lrn"]
    row["fwd_bwd_vs_torch"] = ms["fwd+bwd torch"] / ms["fwd+bwd lrn"]
    return row


def format_rows(rows: list[dict[str, Any]]) -> str:
    names = [n for n in rows[0]["ms"] if n != "copy"]
    lines = [f"{'shape':16} " + " ".join(f"{n:>18}" for n in names) + f" {'copy':>8}"]
    for r in rows:
        cells = " ".join(f"{r['ms'][n]:15.2f} ms" for n in names)
        lines.append(f"{'x'.join(map(str, r['shape'])):16} {cells} {r['ms']['copy']:5.2f} ms")
    lines.append("")
    for r in rows:
        vs = f"{r['forward_vs_openvino']:.2f}x OpenVINO's speed" if "forward_vs_openvino" in r else "OpenVINO skipped"
        lines.append(f"{'x'.join(map(str, r['shape']))}: forward {vs}; fwd+bwd {r['fwd_bwd_vs_torch']:.1f}x torch's; "
                     f"lrn forward at {100 * r['of_copy']['forward lrn']:.0f}% of copy bandwidth "
                     f"({r['copy_gbytes_per_s']:.1f} GB/s), fwd+bwd at {100 * r['of_copy']['fwd+bwd lrn']:.0f}%")
    for name, why in rows[0]["skipped"].items():
        lines.append(f"{name} skipped: {why}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--shapes", default=None, help="e.g. 8x32x16x16,4x96x27x27 (default: the issue's three)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")] if args.shapes else SHAPES
    rows = [bench_shape(s, args.threads, args.repeats) for s in shapes]
    print(format_rows(rows))
    goals = {"forward >= OpenVINO at every shape": all(r.get("forward_vs_openvino", 0) >= 1 for r in rows),
             "fwd+bwd >= 10x torch at every shape": all(r["fwd_bwd_vs_torch"] >= 10 for r in rows)}
    for goal, met in goals.items():
        print(f"goal: {goal}: {'met' if met else 'MISSED'}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"env": environment(args.threads, "cpu"), "rows": rows, "goals": goals},
                                        indent=1) + "\n")
    return 0 if all(goals.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
