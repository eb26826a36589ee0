"""`lrn export RUN_DIR --onnx FILE`: a trained run as an ONNX model.

The network of a run (`trained.load_trained`) is copied, each of its LRN layers is swapped for
an export-friendly module, and the copy is exported with a dynamic batch axis:

- an LRN that some `onnx`-convention LRN computes exactly (`conventions.convert(convention,
  "onnx", ...)`, the function behind `lrn convert`) with an odd window becomes one native ONNX
  `LRN` node: `y = x / (bias + alpha / size * square_sum) ^ beta`, the square sum over channels
  c - floor((size - 1) / 2) .. c + ceil((size - 1) / 2). Its torch forward is that onnx-convention
  LRN, so the copy computes what the node computes.
- any other LRN (within a channel; an even window with its extra channel below, which the
  onnx convention cannot place; an even onnx window, which the ONNX standard allows but ONNX
  Runtime's LRN kernel refuses) is exported as the canonical formula in standard ops, the
  window sum as an AveragePool (`DecomposedLRN`; tests check it against the reference formula
  for every convention, odd and even windows).

`input="uint8"` (the default) makes the graph take uint8 images (0-255) and normalize them
itself, `(x - mean) / std` with the run's mean and std, as training did; `input="normalized"`
takes float32 images already normalized so, and records the mean and std (0-255 units) in the
model's metadata for whoever feeds it. Either way the metadata records the input kind, the mean
and std, the image size, channel order and layout, the class names, the run's config hash and
each LRN layer with how it was exported.

Exporter: the TorchScript-based `torch.onnx.export(..., dynamo=False)`, because it is the
simpler of the two here: the native node is an autograd.Function whose `symbolic` emits `LRN`
(one small class: no onnxscript, no process-wide custom-op registration), the mechanism is
older than the oldest torch the project supports (2.4) where the dynamo exporter's custom
translation tables are not, and it exports these plain Sequential networks in about a second
(tested on torch 2.14.1). torch marks it deprecated; if it goes, the same swapped modules export
through the dynamo exporter with a `torch.library` op for the native LRN and an onnxscript
translation `op.LRN(...)` (tried on torch 2.14.1: the same Conv ... LRN graph).

The model is built in memory, checked (`onnx.checker`, and with onnxruntime against the PyTorch
model on random images when onnxruntime is installed) and written atomically: on any error
nothing is written.
"""
from __future__ import annotations

import copy
import io
import json
import math
import warnings
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import __version__, runs
from .errors import UserError
from .lrn.conventions import NoEquivalent, canonical, convert, to_native
from .lrn.functional import reference
from .lrn.module import LocalResponseNorm
from .trained import Trained, load_trained

INPUTS = ("uint8", "normalized")
OPSET = 17
INPUT_NAME, OUTPUT_NAME = "images", "logits"
CHECK_IMAGES = 8  # random images onnxruntime and torch are compared on
INSTALL = 'pip install "lrn-runner[onnx]"'


@dataclass
class LayerPlan:
    """How one LRN layer goes into the graph."""

    layer: int  # index in the network (= in the layer list)
    params: dict[str, Any]  # convention, region, size, alpha, beta, k: the layer as trained
    native: dict[str, Any] | None  # the ONNX LRN attributes (size, alpha, beta, bias), or None
    why: str  # why it is decomposed (empty for a native node)

    def describe(self) -> str:
        p = self.params
        own = to_native(p["convention"], p["size"], p["alpha"], p["beta"], p["k"], p["region"])
        layer = f"layer {self.layer} ({p['convention']} {fmt(own)})"
        if self.native:
            return f"{layer}: native ONNX LRN {fmt(self.native)}"
        return f"{layer}: standard ops (AveragePool, Mul, Add, Pow), {self.why}"

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, **self.params, "export": "native" if self.native else "standard_ops",
                "onnx_lrn": self.native, "reason": self.why or None}


@dataclass
class ExportResult:
    path: Path
    input: str
    layers: list[LayerPlan]
    metadata: dict[str, str]
    node_types: Counter = field(default_factory=Counter)
    max_abs_diff: float | None = None  # onnxruntime vs torch on random images; None: not checked
    checked_with: str = "not asked for"

    def lines(self) -> list[str]:
        """What `lrn export` prints."""
        m = self.metadata
        size, ch = m["image_size"], m["channels"]
        out = [(f"{self.path}: ONNX opset {OPSET}, input '{INPUT_NAME}' (N, {ch}, {size}, {size}) "
                f"{m['channel_order']}, output '{OUTPUT_NAME}' (N, {len(json.loads(m['classes']))})")]
        stats = f"mean {fmt_list(m['mean'])}, std {fmt_list(m['std'])} (0-255 units)"
        if self.input == "uint8":
            out.append(f"input: uint8 pixels 0-255; the graph normalizes them itself, (x - mean) / std with {stats}")
        else:
            out.append(f"input: float32, ALREADY NORMALIZED: feed (pixel - mean) / std, pixels 0-255, {stats}; "
                       "the graph does not normalize (the mean and std are in its metadata)")
        if m.get("preprocessing"):
            out.append(f"images: {m['preprocessing']}")
        out += [f"  {plan.describe()}" for plan in self.layers] or ["no LRN layers"]
        if m.get("run_status", "completed") != "completed":
            out.append(f"note: the run is {m['run_status']} after {m.get('epochs', '?')} of {m['epochs_planned']} "
                       "epochs; this is its last checkpoint, not the finished model")
        if self.max_abs_diff is None:
            out.append(f"not checked with onnxruntime ({self.checked_with})")
        else:
            out.append(f"checked with {self.checked_with} on {CHECK_IMAGES} random images: "
                       f"max |logit difference| {self.max_abs_diff:.2g} against PyTorch")
        return out


# ----------------------------------------------------------------------------- the LRN layers

def plan_lrn(layer: int, m: LocalResponseNorm) -> LayerPlan:
    """Whether an LRN layer maps onto one native ONNX LRN node, with which attributes, or why not."""
    params = {"convention": m.convention, "region": m.region, "size": m.size, "alpha": m.alpha,
              "beta": m.beta, "k": m.k}
    try:
        onnx_params = convert(m.convention, "onnx", m.size, m.alpha, m.beta, m.k, m.region)
    except NoEquivalent as e:
        return LayerPlan(layer, params, None, f"no ONNX LRN computes it: {e}")
    if onnx_params["size"] % 2 == 0:
        return LayerPlan(layer, params, None, f"its ONNX LRN would have the even size {onnx_params['size']}, "
                         "which the standard allows but ONNX Runtime's LRN refuses")
    native = {"size": int(onnx_params["size"]), "alpha": float(onnx_params["alpha"]),
              "beta": float(onnx_params["beta"]), "bias": float(onnx_params["k"])}
    return LayerPlan(layer, params, native, "")


class _OnnxLRN(torch.autograd.Function):
    """The onnx-convention LRN; exported as one ONNX `LRN` node with the same attributes."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, size: int, alpha: float, beta: float, bias: float) -> torch.Tensor:
        return reference(x, canonical(size, alpha, beta, bias, "across", "onnx"))

    @staticmethod
    def symbolic(g: Any, x: Any, size: int, alpha: float, beta: float, bias: float) -> Any:
        return g.op("LRN", x, size_i=size, alpha_f=alpha, beta_f=beta, bias_f=bias)


class NativeLRN(nn.Module):
    def __init__(self, size: int, alpha: float, beta: float, bias: float) -> None:
        super().__init__()
        self.size, self.alpha, self.beta, self.bias = size, alpha, beta, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _OnnxLRN.apply(x, self.size, self.alpha, self.beta, self.bias)


class DecomposedLRN(nn.Module):
    """The canonical formula (`functional.reference`) in operations that export as a handful of
    standard ONNX ops: the window sum of squares as an average pool that counts the zero padding
    (times the window's element count), for a window of channels a 3-d pool over (C, H, W) with a
    (size, 1, 1) kernel. An even window is pooled with the padding of its longer side and the
    one extra output sliced off on the other. Per layer: Mul, AveragePool (Unsqueeze, Squeeze
    across channels; Slice for even windows), Mul, Add, Pow, Mul."""

    def __init__(self, m: LocalResponseNorm) -> None:
        super().__init__()
        self.canon = canonical(m.size, m.alpha, m.beta, m.k, m.region, m.convention, dims=2)
        c = self.canon
        self.pad = max(c.lo, c.hi)
        self.offset = self.pad - c.lo  # output i of the pool is the window of i + offset
        self.factor = c.scale * (c.size ** 2 if c.region == "within" else c.size)  # scale * (sum / mean)

    def window_mean(self, sq: torch.Tensor) -> torch.Tensor:
        n, p = self.canon.size, self.pad
        if self.canon.region == "within":
            return self.trim(F.avg_pool2d(sq, n, stride=1, padding=p, count_include_pad=True), (2, 3))
        mean = F.avg_pool3d(sq.unsqueeze(1), (n, 1, 1), stride=1, padding=(p, 0, 0), count_include_pad=True)
        return self.trim(mean, (2,)).squeeze(1)

    def trim(self, t: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        """An even window's pool has one output too many along each pooled dim: drop the first
        (window extra above the centre) or the last (extra below); no sizes, so no Shape ops."""
        if self.canon.size % 2:
            return t
        index = [slice(None)] * t.dim()
        for d in dims:
            index[d] = slice(1, None) if self.offset else slice(None, -1)
        return t[tuple(index)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (self.canon.k + self.factor * self.window_mean(x * x)).pow(-self.canon.beta)


class Normalize(nn.Module):
    """uint8 images (0-255) -> what the network was trained on: (x - mean) / std, as
    `data.augment.normalize` computes it (float32, subtract, divide)."""

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.to(torch.float32) - self.mean) / self.std


def exportable(trained: Trained, input: str) -> tuple[nn.Module, list[LayerPlan]]:
    """A copy of the trained network with every LRN swapped for an exportable module (and the
    normalization in front for uint8 input), and the plan of each LRN layer."""
    net = copy.deepcopy(trained.model).cpu().eval()
    plans = []
    for name, m in list(net.named_children()):
        if isinstance(m, LocalResponseNorm):
            plan = plan_lrn(int(name), m)
            plans.append(plan)
            setattr(net, name, NativeLRN(**plan.native) if plan.native else DecomposedLRN(m))
    if input == "uint8":  # named, so that the graph's node names say which part is which
        net = nn.Sequential(OrderedDict([("normalize", Normalize(trained.mean, trained.std)), ("net", net)]))
    return net.eval(), plans


# ----------------------------------------------------------------------------- export

def export_onnx(run_dir: str | Path, onnx_path: str | Path, input: str = "uint8", check: bool = True) -> ExportResult:
    """Export the trained network of `run_dir` to `onnx_path` (see the module docstring)."""
    try:
        import onnx
    except ImportError:
        raise UserError(f"lrn export needs the onnx package; install it with: {INSTALL}") from None
    if input not in INPUTS:
        raise UserError(f"--input must be one of {', '.join(INPUTS)} (got {input!r})")
    path = Path(onnx_path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder; give the file to write, e.g. {path / 'model.onnx'}")
    if not path.parent.is_dir():
        raise UserError(f"{path}: the folder {path.parent} does not exist; create it first or write elsewhere")
    trained = load_trained(run_dir)
    net, plans = exportable(trained, input)
    size, ch = trained.image_size, trained.channels
    dtype = torch.uint8 if input == "uint8" else torch.float32
    example = torch.zeros(2, ch, size, size, dtype=dtype)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # the exporter's own deprecation notice and tracer warnings say nothing about this model
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (example,), buffer, dynamo=False, opset_version=OPSET,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                          do_constant_folding=True)
    model = onnx.load_from_string(buffer.getvalue())
    meta = metadata(trained, input, plans)
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    model.doc_string = (f"{trained.cfg.name} ({trained.run_dir.name}), exported by lrn {__version__}: "
                        f"{describe_input(input, meta)}")
    model.producer_name, model.producer_version = "lrn (lrn-runner)", __version__
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    result = ExportResult(path, input, plans, meta, Counter(n.op_type for n in model.graph.node))
    if check:
        result.max_abs_diff, result.checked_with = check_against_torch(data, trained, input)
    runs.atomic_write(path, lambda f: f.write(data), mode="wb")
    return result


def check_against_torch(data: bytes, trained: Trained, input: str) -> tuple[float | None, str]:
    """Run the exported model in onnxruntime and the trained network in torch on the same random
    images: the largest absolute difference of their logits (None where onnxruntime is missing)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None, f"onnxruntime is not installed: {INSTALL}"
    g = torch.Generator().manual_seed(0)
    size, ch = trained.image_size, trained.channels
    images = torch.randint(0, 256, (CHECK_IMAGES, ch, size, size), dtype=torch.uint8, generator=g)
    normalized = Normalize(trained.mean, trained.std)(images)
    with torch.no_grad():
        expected = trained.model(normalized.to(next(trained.model.parameters()).device)).float().cpu()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    feed = images if input == "uint8" else normalized
    got = torch.from_numpy(session.run(None, {INPUT_NAME: feed.numpy()})[0])
    diff = float((got - expected).abs().max())
    if not math.isfinite(diff) or diff > 1e-3 * max(1.0, float(expected.abs().max())):
        raise AssertionError(f"the exported model computes other logits than the PyTorch model "
                             f"(max difference {diff:g}): a bug in lrn export")
    return diff, f"onnxruntime {ort.__version__}"


def metadata(trained: Trained, input: str, plans: list[LayerPlan]) -> dict[str, str]:
    """The model's metadata_props (all strings; lists and mappings as JSON)."""
    info = trained.summary.get("data") or {}
    size = trained.image_size
    meta = {
        "input": input,
        "input_dtype": "uint8" if input == "uint8" else "float32",
        "input_normalized_in_graph": "true" if input == "uint8" else "false",
        "mean": json.dumps(trained.mean), "std": json.dumps(trained.std), "mean_std_scale": "0-255",
        "image_size": str(size), "channels": str(trained.channels), "channel_order": "RGB", "layout": "NCHW",
        "classes": json.dumps(trained.classes),
        "config_hash": trained.config_hash, "run": trained.run_dir.name, "config_name": trained.cfg.name,
        "lrn_layers": json.dumps([p.to_dict() for p in plans]),
        "lrn_version": __version__,
    }
    meta["input_format"] = describe_input(input, meta)
    if info.get("stored_size"):  # image folders: evaluated on the center crop of a resized copy
        meta["preprocessing"] = (f"resize the shorter side to {info['stored_size']} px, then crop the "
                                 f"center {size} x {size}")
    else:
        meta["preprocessing"] = f"{size} x {size} images as they are"
    for key in ("status", "epochs", "test_acc"):
        if key in trained.summary:
            meta["run_status" if key == "status" else key] = str(trained.summary[key])
    meta["epochs_planned"] = str(trained.cfg.train.epochs)
    return meta


def describe_input(input: str, meta: dict[str, str]) -> str:
    stats = f"mean {meta['mean']} and std {meta['std']} per channel, in 0-255 units"
    shape = f"(N, {meta['channels']}, {meta['image_size']}, {meta['image_size']}) {meta['channel_order']}"
    if input == "uint8":
        return f"uint8 {shape} pixels 0-255; the graph normalizes them, (x - mean) / std with {stats}"
    return (f"float32 {shape} already normalized as (pixel - mean) / std with pixels 0-255 and {stats}; "
            "the graph does not normalize")


def fmt(d: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" if isinstance(v, float) else f"{k}: {v}" for k, v in d.items()) + "}"


def fmt_list(text: str) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in json.loads(text)) + "]"
