"""`lrn bench`: how fast, and how much memory, LRN costs, measured side by side.

Four tables:

* layers: for each shape, dtype and region, torch's own layer (`nn.LocalResponseNorm`; within a
  channel, the avg_pool2d formulation a PyTorch user would write), this project's reference
  formula and its fused implementation: forward and forward+backward time (median of repeats,
  the implementations interleaved), speed-up over torch, memory held for the backward beyond the
  input, and achieved bytes/s against a copy measured on the same machine;
* interleaved: the fused forward+backward timed alone (after itself), right after a
  convolution, and alternating with torch's layer, as in a network, where other ops' threads
  are still awake when it starts (a kernel that competes with them for the cores slows down),
  and after a cache flush; beside it a control, torch's own ops moving the same bytes, alone and
  after torch's layer, which separates what the caches cost from what the threads cost;
* max pooling: torch's against `lrn_cli.ops.MaxPool2d` at the classic networks' pool shapes;
* train step: a whole SGD step of the cifar10_full preset and of an AlexNet-style net at 128 px
  with torch's LRN, with ours, and with the LRN layers replaced by identity, interleaved; the
  overhead of LRN is the median over repeats of the step time over the identity step's timed
  beside it (paired, so that the machine's drift cancels); and the network's evaluation
  throughput (forward only, eval batch) against its training throughput.

`LRN_MALLOC=0 lrn bench` measures what a user's own training loop gets (no malloc tuning).
"""
from __future__ import annotations

import os
import statistics
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .lrn import LocalResponseNorm
from .perf import keep_freed_memory

ACROSS = dict(size=5, alpha=1e-4, beta=0.75, k=2.0)  # AlexNet's values, torch's convention
WITHIN = dict(size=3, alpha=5e-5, beta=0.75)  # Caffe's cifar10_full
SHAPES = [(128, 32, 16, 16), (64, 96, 55, 55), (64, 256, 27, 27)]
WITHIN_SHAPES = SHAPES
INTERLEAVED = [("across", (128, 32, 16, 16)), ("across", (64, 96, 55, 55)), ("across", (64, 256, 27, 27)),
               ("within", (128, 32, 16, 16)), ("within", (128, 32, 8, 8))]
EVAL_BATCH = 500  # the default eval.batch_size
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}


class AvgPoolWithin(nn.Module):
    """Caffe's WITHIN_CHANNEL LRN as one writes it in PyTorch: x * (1 + alpha * avg(x^2))^-beta."""

    def __init__(self, size: int, alpha: float, beta: float) -> None:
        super().__init__()
        self.size, self.alpha, self.beta = size, alpha, beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = F.avg_pool2d(x * x, self.size, 1, self.size // 2, count_include_pad=True)
        return x * (1 + self.alpha * avg).pow(-self.beta)


def layers_for(region: str) -> dict[str, nn.Module]:
    if region == "across":
        return {"torch": nn.LocalResponseNorm(**ACROSS),
                "reference": LocalResponseNorm(**ACROSS, impl="reference"),
                "fused": LocalResponseNorm(**ACROSS)}
    own = dict(WITHIN, k=1.0, region="within", convention="caffe")
    return {"torch": AvgPoolWithin(**WITHIN), "reference": LocalResponseNorm(**own, impl="reference"),
            "fused": LocalResponseNorm(**own)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn: Callable[[], Any], device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def held_for_backward(layer: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the tensors autograd keeps for the backward, not counting the input's storage."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    x = x.detach().requires_grad_()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer(x)
    seen.pop(x.untyped_storage().data_ptr(), None)
    return sum(seen.values())


def copy_bandwidth(x: torch.Tensor, repeats: int) -> float:
    """Bytes/s of a plain copy of x (read + write) on its device."""
    y = torch.empty_like(x)
    y.copy_(x)
    t = statistics.median(_time(lambda: y.copy_(x), x.device) for _ in range(repeats))
    return 2 * x.numel() * x.element_size() / t


def bench_layers(shape: tuple[int, ...], dtype: torch.dtype, region: str, device: torch.device,
                 repeats: int) -> list[dict[str, Any]]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g).to(device=device, dtype=dtype)
    grad = torch.randn(*shape, generator=g).to(device=device, dtype=dtype)
    layers = layers_for(region)
    fwd: dict[str, list[float]] = {n: [] for n in layers}
    both: dict[str, list[float]] = {n: [] for n in layers}
    failed: dict[str, str] = {}

    def step(layer: nn.Module) -> None:
        xx = x.detach().requires_grad_()
        layer(xx).backward(grad)

    for name, layer in layers.items():  # warm up, and find what does not run at all
        try:
            with torch.no_grad():
                layer(x)
            step(layer)
        except RuntimeError as e:
            failed[name] = str(e).splitlines()[0][:80]
    for _ in range(repeats):
        for name, layer in layers.items():
            if name in failed:
                continue
            with torch.no_grad():
                fwd[name].append(_time(lambda: layer(x), device))
            both[name].append(_time(lambda: step(layer), device))
    bw = copy_bandwidth(x, repeats)
    nbytes = x.numel() * x.element_size()
    rows = []
    base = statistics.median(both["torch"]) if "torch" not in failed else None
    for name, layer in layers.items():
        row: dict[str, Any] = {"region": region, "shape": list(shape), "dtype": str(dtype).replace("torch.", ""),
                               "impl": name}
        if name in failed:
            row["error"] = failed[name]
        else:
            f, fb = statistics.median(fwd[name]), statistics.median(both[name])
            row.update(forward_ms=1e3 * f, fwd_bwd_ms=1e3 * fb, speedup=(base / fb) if base else None,
                       held_mb=held_for_backward(layer, x) / 2**20,
                       gbytes_per_s=5 * nbytes / fb / 1e9, copy_gbytes_per_s=bw / 1e9,
                       of_copy=5 * nbytes / fb / bw)
        rows.append(row)
    return rows


def _cache_flusher(device: torch.device) -> Callable[[], None]:
    """A function that evicts the CPU caches: it reads and writes twice the last-level cache (64 MB
    at least, 1 GB at most). A write alone does not do it here: large fills stream past the caches
    and leave the lines they held in place (measured: a kernel is as fast after a 960 MB fill as
    after itself, 1.8x slower after the same bytes read and written)."""
    try:
        l3 = os.sysconf("SC_LEVEL3_CACHE_SIZE")
    except (ValueError, OSError, AttributeError):
        l3 = 0
    buf = torch.zeros(min(2**30, max(64 * 2**20, 2 * max(l3, 0))) // 4)
    return (lambda: buf.add_(1.0)) if device.type == "cpu" else (lambda: None)


def bench_interleaved(shape: tuple[int, ...], region: str, device: torch.device, repeats: int) -> dict[str, Any]:
    """The fused forward+backward alone (after itself), right after a convolution, alternating with
    torch's layer, and after the caches were flushed; each repeat does all of them, so the first
    fused call follows the previous repeat's.

    Alone, a small shape's tensors stay in the cores' caches from the call before; after torch's
    layer, whose temporaries pass through the same caches, they do not, and any op slows down.
    The control says how much: torch's own memory-bound ops moving the same bytes as the fused
    forward+backward (a clone of x and x + g: 12 MB read, 8 MB written at 128 x 32 x 16 x 16),
    timed alone and right after torch's layer in the same way. A kernel that competes with
    torch's threads slows down more than the control; `after_torch_vs_control` is the kernel's
    slowdown over the control's."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g).to(device)
    grad = torch.randn(*shape, generator=g).to(device)
    layers = layers_for(region)
    fused, theirs = layers["fused"], layers["torch"]
    conv = nn.Conv2d(shape[1], shape[1], 3, padding=1, groups=shape[1]).to(device)  # depthwise: cheap

    def step(layer: nn.Module) -> None:
        xx = x.detach().requires_grad_()
        layer(xx).backward(grad)

    def control() -> None:
        x.clone(), torch.add(x, grad)

    flush = _cache_flusher(device)
    times: dict[str, list[float]] = {k: [] for k in ("alone", "after_conv", "torch", "after_torch", "after_flush",
                                                     "control_alone", "control_after_torch")}
    for _ in range(2):
        step(fused), step(theirs), control()
    for _ in range(repeats):
        flush()
        times["after_flush"].append(_time(lambda: step(fused), device))
        step(fused)  # the flush left the caches full of dirty lines: not alone yet
        times["alone"].append(_time(lambda: step(fused), device))
        with torch.no_grad():
            conv(x)
        times["after_conv"].append(_time(lambda: step(fused), device))
        times["torch"].append(_time(lambda: step(theirs), device))
        times["after_torch"].append(_time(lambda: step(fused), device))
        control()
        times["control_alone"].append(_time(control, device))
        step(theirs)
        times["control_after_torch"].append(_time(control, device))
    ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    control_ratio = ms["control_after_torch"] / ms["control_alone"]
    return {"region": region, "shape": list(shape), **{f"{k}_ms": v for k, v in ms.items()},
            "after_conv_vs_alone": ms["after_conv"] / ms["alone"], "after_torch_vs_alone": ms["after_torch"] / ms["alone"],
            "after_flush_vs_alone": ms["after_flush"] / ms["alone"],
            "after_torch_vs_after_flush": ms["after_torch"] / ms["after_flush"],
            "control_after_torch_vs_alone": control_ratio,
            "after_torch_vs_control": ms["after_torch"] / ms["alone"] / control_ratio,
            "speedup_alternating": ms["torch"] / ms["after_torch"]}


POOL_SHAPES = [(128, 32, 32, 32), (EVAL_BATCH, 32, 32, 32), (32, 64, 63, 63)]  # cifar10_full's pool 1; AlexNet's at 128 px


def bench_maxpool(device: torch.device, repeats: int, shapes=POOL_SHAPES) -> list[dict[str, Any]]:
    """3 x 3 stride 2 ceil_mode max pooling, torch's nn.MaxPool2d against lrn_cli.ops.MaxPool2d:
    forward (no grad, as in evaluation) and forward+backward."""
    from .ops import MaxPool2d

    rows = []
    for shape in shapes:
        x = torch.randn(*shape, device=device)
        pools = {"torch": nn.MaxPool2d(3, 2, ceil_mode=True), "lrn": MaxPool2d(3, 2, ceil_mode=True)}
        g = torch.randn(pools["torch"](x).shape, device=device)

        def both(pool: nn.Module) -> None:
            xx = x.detach().requires_grad_()
            pool(xx).backward(g)

        fwd: dict[str, list[float]] = {n: [] for n in pools}
        fb: dict[str, list[float]] = {n: [] for n in pools}
        for pool in pools.values():
            both(pool)
        for _ in range(repeats):
            for name, pool in pools.items():
                with torch.no_grad():
                    fwd[name].append(_time(lambda: pool(x), device))
                fb[name].append(_time(lambda: both(pool), device))
        row: dict[str, Any] = {"shape": list(shape)}
        for name in pools:
            row[f"{name}_forward_ms"] = 1e3 * statistics.median(fwd[name])
            row[f"{name}_fwd_bwd_ms"] = 1e3 * statistics.median(fb[name])
        row["speedup_forward"] = row["torch_forward_ms"] / row["lrn_forward_ms"]
        row["speedup_fwd_bwd"] = row["torch_fwd_bwd_ms"] / row["lrn_fwd_bwd_ms"]
        rows.append(row)
    return rows


def _swap_lrn(model: nn.Module, make: Callable[[LocalResponseNorm], nn.Module]) -> nn.Module:
    for i, m in enumerate(model):
        if isinstance(m, LocalResponseNorm):
            model[i] = make(m)
    return model


def _torch_layer(m: LocalResponseNorm) -> nn.Module:
    if m.region == "within":
        return AvgPoolWithin(m.size, m.alpha, m.beta)
    # a torch-convention layer with the same window and scale (alexnet's alpha has no /n)
    alpha = m.alpha * (m.size if m.convention in ("alexnet", "tensorflow") else 1)
    return nn.LocalResponseNorm(m.size, alpha, m.beta, m.k)


STEP_NETS = [("cifar10_full", {"preset": "cifar10_full", "norm": {"region": "within", "convention": "caffe",
                                                                 "size": 3, "alpha": 5e-5, "beta": 0.75}}, 32, 128),
             ("alexnet_128px", {"preset": "alexnet", "norm": {"convention": "alexnet"}}, 128, 32)]


def bench_train_steps(device: torch.device, repeats: int,
                      nets: list[tuple[str, dict, int, int]] = STEP_NETS) -> list[dict[str, Any]]:
    """(name, model config, image size, batch) per net."""
    from .config import load_config
    from .models import build_model

    rows = []
    for name, model_cfg, size, batch in nets:
        cfg = load_config({"model": model_cfg}).model
        variants = {}
        for variant in ("ours", "torch", "identity"):
            torch.manual_seed(0)
            model = build_model(cfg, 3, size, 10)
            if variant == "torch":
                _swap_lrn(model, _torch_layer)
            elif variant == "identity":
                _swap_lrn(model, lambda m: nn.Identity())
            model = model.to(device)
            variants[variant] = (model, torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9))
        x = torch.randn(batch, 3, size, size, device=device)
        y = torch.randint(0, 10, (batch,), device=device)

        def step(model: nn.Module, opt: torch.optim.Optimizer) -> None:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        xe = torch.randn(EVAL_BATCH, 3, size, size, device=device)

        def evaluate(model: nn.Module) -> None:
            model.eval()
            with torch.no_grad():
                model(xe)
            model.train()

        times: dict[str, list[float]] = {v: [] for v in variants}
        evals: dict[str, list[float]] = {v: [] for v in variants}
        for model, opt in variants.values():
            step(model, opt)
            evaluate(model)
        for _ in range(repeats):
            for v, (model, opt) in variants.items():
                times[v].append(_time(lambda: step(model, opt), device))
                evals[v].append(_time(lambda: evaluate(model), device))
        ident = statistics.median(times["identity"])
        for v in ("torch", "ours", "identity"):
            t, te = statistics.median(times[v]), statistics.median(evals[v])
            # paired: each repeat's step over the identity step timed right after it, so that the
            # machine's drift over the run (5-10% here) cancels; the median of those ratios
            paired = statistics.median(a / b for a, b in zip(times[v], times["identity"]))
            rows.append({"net": name, "batch": batch, "image_size": size, "lrn": v, "step_ms": 1e3 * t,
                         "overhead": paired - 1, "overhead_of_medians": t / ident - 1,
                         "train_images_per_s": batch / t,
                         "eval_batch": EVAL_BATCH, "eval_images_per_s": EVAL_BATCH / te,
                         "eval_vs_train": (EVAL_BATCH / te) / (batch / t)})
    return rows


def run(device: str = "cpu", dtypes: tuple[str, ...] = ("float32",), repeats: int = 10, step_repeats: int = 21,
        quick: bool = False) -> dict[str, Any]:
    keep_freed_memory()  # as lrn train does: no page faults on every large tensor, for every layer
    dev = torch.device(device)
    shapes = [(8, 32, 16, 16), (4, 96, 27, 27)] if quick else SHAPES
    within = [(8, 32, 16, 16)] if quick else WITHIN_SHAPES
    layer_rows = []
    for dtype in dtypes:
        for shape in shapes:
            layer_rows += bench_layers(shape, DTYPES[dtype], "across", dev, repeats)
        for shape in within:
            layer_rows += bench_layers(shape, DTYPES[dtype], "within", dev, repeats)
    interleaved = [bench_interleaved(shape, region, dev, repeats)
                   for region, shape in ([("within", (8, 32, 8, 8))] if quick else INTERLEAVED)]
    pools = bench_maxpool(dev, repeats, [(8, 32, 32, 32)] if quick else POOL_SHAPES)
    steps = [] if quick else bench_train_steps(dev, step_repeats)
    from .runs import environment

    return {"env": environment(torch.get_num_threads(), device), "repeats": repeats, "layers": layer_rows,
            "interleaved": interleaved, "max_pool": pools, "train_steps": steps}


def format_tables(result: dict[str, Any]) -> str:
    lines = ["LRN layers (median of %d; fwd+bwd speed-up over torch; memory held for backward beyond "
             "the input; achieved bytes/s of fwd+bwd against a copy)" % result["repeats"],
             f"{'region':7} {'shape':18} {'dtype':9} {'impl':9} {'fwd ms':>9} {'fwd+bwd ms':>11} "
             f"{'speed-up':>8} {'held MB':>8} {'GB/s':>6} {'of copy':>7}"]
    for r in result["layers"]:
        head = f"{r['region']:7} {'x'.join(map(str, r['shape'])):18} {r['dtype']:9} {r['impl']:9}"
        if "error" in r:
            lines.append(f"{head} fails: {r['error']}")
            continue
        speed = f"{r['speedup']:.1f}x" if r["speedup"] else "-"
        lines.append(f"{head} {r['forward_ms']:9.2f} {r['fwd_bwd_ms']:11.2f} {speed:>8} {r['held_mb']:8.1f} "
                     f"{r['gbytes_per_s']:6.1f} {100 * r['of_copy']:6.0f}%")
    if result.get("interleaved"):
        lines += ["", "Interleaved (fused fwd+bwd float32 alone, right after a convolution, alternating with "
                  "torch's layer, and after a cache flush; x: over alone; control: torch's clone and add of the "
                  "same bytes, after torch's layer over alone; vs control: the fused slowdown over the control's; "
                  "speed-up over torch's when alternating)",
                  f"{'region':7} {'shape':18} {'alone ms':>9} {'after conv':>15} {'after torch':>15} "
                  f"{'after flush':>15} {'control':>8} {'vs control':>10} {'torch ms':>9} {'speed-up':>8}"]
        for r in result["interleaved"]:
            lines.append(f"{r['region']:7} {'x'.join(map(str, r['shape'])):18} {r['alone_ms']:9.2f} "
                         f"{r['after_conv_ms']:7.2f} ({r['after_conv_vs_alone']:.2f}x) {r['after_torch_ms']:7.2f} "
                         f"({r['after_torch_vs_alone']:.2f}x) {r['after_flush_ms']:7.2f} ({r['after_flush_vs_alone']:.2f}x) "
                         f"{r['control_after_torch_vs_alone']:7.2f}x {r['after_torch_vs_control']:9.2f}x "
                         f"{r['torch_ms']:9.2f} {r['speedup_alternating']:7.1f}x")
    if result.get("max_pool"):
        lines += ["", "Max pooling 3 x 3, stride 2, ceil_mode (torch's nn.MaxPool2d against lrn_cli.ops.MaxPool2d)",
                  f"{'shape':18} {'torch fwd':>10} {'lrn fwd':>8} {'speed-up':>8} {'torch f+b':>10} {'lrn f+b':>8} "
                  f"{'speed-up':>8}"]
        for r in result["max_pool"]:
            lines.append(f"{'x'.join(map(str, r['shape'])):18} {r['torch_forward_ms']:10.2f} {r['lrn_forward_ms']:8.2f} "
                         f"{r['speedup_forward']:7.1f}x {r['torch_fwd_bwd_ms']:10.2f} {r['lrn_fwd_bwd_ms']:8.2f} "
                         f"{r['speedup_fwd_bwd']:7.1f}x")
    if result["train_steps"]:
        lines += ["", "Train step (SGD step; overhead = median of step time / step with LRN replaced by identity - 1, paired; "
                  f"evaluation: forward at batch {EVAL_BATCH}, images/s over training's)",
                  f"{'net':14} {'batch':>5} {'LRN':9} {'step ms':>9} {'overhead':>9} {'train img/s':>12} "
                  f"{'eval img/s':>11} {'eval/train':>10}"]
        for r in result["train_steps"]:
            lines.append(f"{r['net']:14} {r['batch']:5} {r['lrn']:9} {r['step_ms']:9.1f} {100 * r['overhead']:8.1f}% "
                         f"{r['train_images_per_s']:12.0f} {r['eval_images_per_s']:11.0f} {r['eval_vs_train']:9.2f}x")
    return "\n".join(lines)
