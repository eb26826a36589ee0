"""`lrn export`: trained runs as ONNX, checked with onnxruntime against the PyTorch model."""
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from click.testing import CliRunner

from lrn_cli import runs
from lrn_cli.cli import main
from lrn_cli.config import load_config
from lrn_cli.data import load_data
from lrn_cli.data.augment import normalize
from lrn_cli.engine import train
from lrn_cli.export import DecomposedLRN, NativeLRN, export_onnx, plan_lrn
from lrn_cli.lrn import LocalResponseNorm
from lrn_cli.lrn.conventions import CONVENTIONS, REGIONS_OF
from lrn_cli.trained import load_trained

from conftest import REPO

onnx = pytest.importorskip("onnx", reason='the onnx extra is not installed: pip install -e ".[onnx]"')
ort = pytest.importorskip("onnxruntime", reason='the onnx extra is not installed: pip install -e ".[onnx]"')

SYNTH = str(REPO / "configs" / "synthetic.yaml")
FAST = ["train.epochs=1", "train.threads=1"]


def synthetic_run(out, name, norms):
    """A one-epoch run of the synthetic config whose two norm slots are `norms`."""
    cfg = load_config(SYNTH, FAST).to_dict()
    layers = cfg["model"]["layers"]
    slots = [i for i, item in enumerate(layers) if item == "norm" or (isinstance(item, dict) and "norm" in item)]
    for i, norm in zip(slots, norms):
        layers[i] = {"norm": norm}
    return train(cfg, out=out, name=name, quiet=True).run_dir


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("export_runs")
    across = synthetic_run(out, "across", [
        {"convention": "torch", "size": 3, "alpha": 0.05, "beta": 0.6, "k": 2.0},
        {"convention": "alexnet", "size": 4, "alpha": 0.01, "beta": 0.75, "k": 1.5},  # = onnx size 5
    ])
    within = synthetic_run(out, "within", [
        {"region": "within", "convention": "caffe", "size": 3, "alpha": 0.5, "beta": 0.75},
        {"region": "within", "convention": "caffe", "size": 5, "alpha": 0.5, "beta": 0.75},
    ])
    return {"across": across, "within": within}


def real_test_images(run_dir):
    """The run's own test images (uint8) and the normalized batch its PyTorch model sees."""
    trained = load_trained(run_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the re-encoded CIFAR copy's checksum warning
        data = load_data(trained.cfg.data)
    x = data.eval_transform(data.test.x) if data.eval_transform else data.test.x  # an image folder's center crop
    return trained, x, normalize(x, data.mean, data.std)


def ort_logits(path, images):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": images.numpy()})[0]


def check_matches_torch(run_dir, tmp_path):
    """Export in both input modes; onnxruntime's logits on the real test images match PyTorch's."""
    trained, x, xn = real_test_images(run_dir)
    with torch.no_grad():
        expected = trained.model(xn).numpy()
    diffs = {}
    for mode, feed in (("uint8", x), ("normalized", xn)):
        path = tmp_path / f"{run_dir.name}-{mode}.onnx"
        result = export_onnx(run_dir, path, input=mode)
        got = ort_logits(path, feed)
        diffs[mode] = float(np.abs(got - expected).max())
        assert diffs[mode] < 1e-4, (mode, diffs[mode])
        assert (got.argmax(1) == expected.argmax(1)).all()
        assert result.max_abs_diff is not None and result.max_abs_diff < 1e-4  # the command's own check
        model = onnx.load(str(path))
        assert model.graph.input[0].type.tensor_type.elem_type == (
            onnx.TensorProto.UINT8 if mode == "uint8" else onnx.TensorProto.FLOAT)
    print(f"{run_dir.name}: max |ORT - torch| over {len(x)} test images: {diffs}")
    return model  # the normalized one


def lrn_nodes(model):
    return [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            for n in model.graph.node if n.op_type == "LRN"]


def test_across_channel_lrn_becomes_native_lrn_nodes(runs_dir, tmp_path):
    model = check_matches_torch(runs_dir["across"], tmp_path)
    nodes = lrn_nodes(model)
    assert len(nodes) == 2
    assert nodes[0]["size"] == 3 and nodes[0]["alpha"] == pytest.approx(0.05, rel=1e-6)
    assert nodes[0]["beta"] == pytest.approx(0.6) and nodes[0]["bias"] == pytest.approx(2.0)
    # alexnet n=4 sums c-2 .. c+2 with alpha unscaled: onnx size 5, alpha 5 * 0.01
    assert nodes[1]["size"] == 5 and nodes[1]["alpha"] == pytest.approx(0.05, rel=1e-6)
    assert nodes[1]["beta"] == pytest.approx(0.75) and nodes[1]["bias"] == pytest.approx(1.5)
    layers = json.loads({p.key: p.value for p in model.metadata_props}["lrn_layers"])
    assert [(d["layer"], d["export"], d["convention"]) for d in layers] == [(2, "native", "torch"),
                                                                           (6, "native", "alexnet")]
    assert layers[1]["onnx_lrn"]["size"] == 5


def test_within_channel_lrn_becomes_standard_ops(runs_dir, tmp_path):
    model = check_matches_torch(runs_dir["within"], tmp_path)
    types = {n.op_type for n in model.graph.node}
    assert "LRN" not in types and {"AveragePool", "Pow"} <= types
    layers = json.loads({p.key: p.value for p in model.metadata_props}["lrn_layers"])
    assert [d["export"] for d in layers] == ["standard_ops", "standard_ops"]
    assert "within-channel" in layers[0]["reason"]


def test_metadata_and_the_printed_summary_say_the_input_scale(runs_dir, tmp_path):
    run_dir = runs_dir["across"]
    summary = runs.read_json(run_dir / runs.SUMMARY)
    res = CliRunner().invoke(main, ["export", str(run_dir), "--onnx", str(tmp_path / "u.onnx")])
    assert res.exit_code == 0, res.output
    assert "uint8 pixels 0-255; the graph normalizes them itself" in res.output
    assert "layer 2 (torch {size: 3, alpha: 0.05, beta: 0.6, k: 2}): native ONNX LRN" in res.output
    assert "checked with onnxruntime" in res.output
    res = CliRunner().invoke(main, ["export", str(run_dir), "--onnx", str(tmp_path / "n.onnx"),
                                    "--input", "normalized"])
    assert res.exit_code == 0 and "ALREADY NORMALIZED" in res.output and "the graph does not normalize" in res.output
    for name, kind in (("u", "uint8"), ("n", "normalized")):
        meta = {p.key: p.value for p in onnx.load(str(tmp_path / f"{name}.onnx")).metadata_props}
        assert meta["input"] == kind and meta["mean_std_scale"] == "0-255"
        assert json.loads(meta["mean"]) == summary["data"]["mean"] and json.loads(meta["std"]) == summary["data"]["std"]
        assert len(json.loads(meta["mean"])) == 3 and all(0 < v < 255 for v in json.loads(meta["mean"]))
        assert meta["image_size"] == "16" and meta["channel_order"] == "RGB" and meta["layout"] == "NCHW"
        assert json.loads(meta["classes"]) == summary["data"]["classes"] == [f"pattern{i}" for i in range(4)]
        assert meta["config_hash"] == summary["config_hash"]
        assert len(json.loads(meta["lrn_layers"])) == 2


def test_the_batch_axis_is_dynamic(runs_dir, tmp_path):
    path = tmp_path / "m.onnx"
    export_onnx(runs_dir["within"], path)
    trained, x, xn = real_test_images(runs_dir["within"])
    for n in (1, 7):
        with torch.no_grad():
            expected = trained.model(xn[:n]).numpy()
        assert np.abs(ort_logits(path, x[:n]) - expected).max() < 1e-4


def test_a_run_without_recorded_mean_and_std_recomputes_them(runs_dir, tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    for name in (runs.CONFIG, runs.CHECKPOINT):
        (old / name).write_bytes((runs_dir["across"] / name).read_bytes())
    summary = runs.read_json(runs_dir["across"] / runs.SUMMARY)
    for key in ("mean", "std", "image_size"):
        summary["data"].pop(key)
    runs.write_json(old / runs.SUMMARY, summary)
    meta = export_onnx(old, tmp_path / "old.onnx").metadata
    new = runs.read_json(runs_dir["across"] / runs.SUMMARY)["data"]
    assert json.loads(meta["mean"]) == new["mean"] and json.loads(meta["std"]) == new["std"]
    assert meta["image_size"] == "16"


def test_decomposed_and_native_modules_compute_the_reference_formula():
    torch.manual_seed(0)
    x = torch.randn(2, 7, 6, 5, dtype=torch.float64) * 3
    native = 0
    for convention in CONVENTIONS:
        for region in REGIONS_OF[convention]:
            for size in range(1, 7):
                k = 1.0 if (convention, region) == ("caffe", "within") else 2.0
                try:
                    m = LocalResponseNorm(size, 0.5, 0.75, k, region, convention, impl="reference")
                except ValueError:  # caffe and tensorflow: odd sizes only
                    continue
                want = m(x)
                assert torch.allclose(DecomposedLRN(m)(x), want, rtol=0, atol=1e-12), (convention, region, size)
                plan = plan_lrn(0, m)
                if plan.native:
                    assert region == "across" and plan.native["size"] % 2 == 1
                    native += 1
                    assert torch.allclose(NativeLRN(**plan.native)(x), want, rtol=0, atol=1e-12)
    assert native > 10


@pytest.mark.parametrize("spec", [{"region": "across", "convention": "torch", "size": 4},  # extra channel below
                                  {"region": "across", "convention": "onnx", "size": 4},  # ORT refuses even LRN
                                  {"region": "within", "convention": "cuda-convnet", "size": 4}])
def test_even_windows_export_as_standard_ops_that_onnxruntime_runs(spec, tmp_path):
    import io

    m = LocalResponseNorm(alpha=0.5, beta=0.75, k=2.0, **spec)
    plan = plan_lrn(0, m)
    assert plan.native is None and plan.why
    x = torch.randn(3, 6, 5, 5) * 3
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(DecomposedLRN(m), (x,), buffer, dynamo=False, opset_version=17, input_names=["images"])
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": x.numpy()})[0]
    assert np.abs(got - m(x).numpy()).max() < 1e-5


def test_cifar10_full_from_real_test_images(real_cifar, tmp_path):
    """Caffe's cifar10_full (within-channel LRN) on a slice of the real CIFAR-10, and the same net
    with an across-channel LRN: onnxruntime on the real test images matches PyTorch."""
    common = [f"data.root={real_cifar}", "data.per_class=30", "data.test_per_class=20", *FAST]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        caffe = train(str(REPO / "configs" / "cifar10_full.yaml"), common, out=tmp_path, name="caffe", quiet=True)
        across = train(str(REPO / "configs" / "cifar10_full.yaml"),
                       common + ["model.norm={type: lrn, convention: torch, size: 5, alpha: 1.0e-3, beta: 0.75}"],
                       out=tmp_path, name="across", quiet=True)
    model = check_matches_torch(caffe.run_dir, tmp_path)
    print("cifar10_full (caffe within):", sorted({n.op_type for n in model.graph.node}))
    assert not lrn_nodes(model)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["image_size"] == "32" and json.loads(meta["classes"])[:2] == ["airplane", "automobile"]
    model = check_matches_torch(across.run_dir, tmp_path)
    print("cifar10_full (torch across):", sorted({n.op_type for n in model.graph.node}))
    assert [n["size"] for n in lrn_nodes(model)] == [5, 5]


def test_image_folder_run_records_its_crop_and_imagenet_normalization(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("val", 4)):
        for c in range(2):
            (tmp_path / "ds" / split / f"c{c}").mkdir(parents=True)
            for j in range(n):
                pixels = rng.integers(0, 256, (30 + j, 40, 3), dtype=np.uint8)
                pixels[..., c] //= 2  # something to learn
                Image.fromarray(pixels).save(tmp_path / "ds" / split / f"c{c}" / f"{j}.png")
    cfg = load_config(SYNTH, FAST).to_dict()
    cfg["data"] = {"dataset": "imagefolder", "root": str(tmp_path / "ds"), "image_size": 32}
    run_dir = train(cfg, out=tmp_path / "runs", name="folder", quiet=True).run_dir
    model = check_matches_torch(run_dir, tmp_path)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["image_size"] == "32" and json.loads(meta["classes"]) == ["c0", "c1"]
    assert json.loads(meta["mean"]) == pytest.approx([0.485 * 255, 0.456 * 255, 0.406 * 255])
    assert meta["preprocessing"] == "resize the shorter side to 37 px, then crop the center 32 x 32"


# ----------------------------------------------------------------------------- errors

def one_line_error(args, *needles):
    res = CliRunner().invoke(main, ["export", *args])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in res.output
    return lines[0]


def test_user_errors_exit_2_with_one_line_and_write_nothing(runs_dir, tmp_path):
    out = tmp_path / "m.onnx"
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error([str(empty), "--onnx", str(out)], "config.yaml", "run directory")
    one_line_error([str(tmp_path / "nowhere"), "--onnx", str(out)], "nowhere", "no such run directory")
    no_ckpt = tmp_path / "no_ckpt"
    no_ckpt.mkdir()
    (no_ckpt / runs.CONFIG).write_text((runs_dir["across"] / runs.CONFIG).read_text())
    one_line_error([str(no_ckpt), "--onnx", str(out)], "checkpoint.pt")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for name in (runs.CONFIG, runs.SUMMARY):
        (corrupt / name).write_bytes((runs_dir["across"] / name).read_bytes())
    ckpt = (runs_dir["across"] / runs.CHECKPOINT).read_bytes()
    (corrupt / runs.CHECKPOINT).write_bytes(ckpt[: len(ckpt) // 2])  # cut short
    one_line_error([str(corrupt), "--onnx", str(out)], "checkpoint.pt", "not a readable checkpoint")
    (corrupt / runs.CHECKPOINT).write_bytes(b"")
    one_line_error([str(corrupt), "--onnx", str(out)], "checkpoint.pt")
    one_line_error([str(runs_dir["across"]), "--onnx", str(tmp_path / "missing" / "m.onnx")],
                   "the folder", "missing", "does not exist")
    one_line_error([str(runs_dir["across"]), "--onnx", str(tmp_path)], "is a folder")
    assert not out.exists() and not (tmp_path / "missing").exists()
    assert not [p for p in tmp_path.rglob("*") if p.suffix in (".onnx", ".tmp")]


class NotAllowed:
    """Anything but tensors and plain containers in a checkpoint: weights_only refuses it."""


def test_a_checkpoint_with_code_in_it_is_refused(runs_dir, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / runs.CONFIG).write_text((runs_dir["across"] / runs.CONFIG).read_text())
    state = torch.load(runs_dir["across"] / runs.CHECKPOINT, weights_only=True)
    torch.save({**state, "extra": NotAllowed()}, bad / runs.CHECKPOINT)
    one_line_error([str(bad), "--onnx", str(tmp_path / "m.onnx")], "checkpoint.pt", "not a readable checkpoint")
    assert not (tmp_path / "m.onnx").exists()


def test_weights_that_do_not_fit_the_config_are_an_error(runs_dir, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / runs.CONFIG).write_text(load_config(runs_dir["across"] / runs.CONFIG, ["model.width=2.0"]).to_yaml())
    (bad / runs.CHECKPOINT).write_bytes((runs_dir["across"] / runs.CHECKPOINT).read_bytes())
    one_line_error([str(bad), "--onnx", str(tmp_path / "m.onnx")], "another config", "config.yaml")


def test_missing_onnx_names_the_install_command(runs_dir, tmp_path):
    fake = tmp_path / "fake" / "onnx"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('no onnx here')\n")
    res = subprocess.run([sys.executable, "-m", "lrn_cli", "export", str(runs_dir["across"]), "--onnx",
                          str(tmp_path / "m.onnx")], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(tmp_path / "fake")})
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        'error: lrn export needs the onnx package; install it with: pip install "lrn-runner[onnx]"']
    assert not (tmp_path / "m.onnx").exists()
