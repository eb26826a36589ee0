"""The LRN layer: every convention against a naive loop of its published formula, and torch."""
import ast
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

import lrn_cli.lrn
import naive_lrn as naive
from lrn_cli.lrn import LocalResponseNorm, LRNParams, canonical, local_response_norm


def rand(*shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    # a wide spread of magnitudes so that the window sum matters
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * 3).to(dtype)


def ours(x, **kw):
    return LocalResponseNorm(**kw)(x)


SIZES = [1, 2, 3, 4, 5, 8]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("shape", [(2, 7, 5), (2, 7, 4, 3), (2, 6, 3, 2, 2)])
def test_torch_convention_matches_torch(size, shape):
    x = rand(*shape)
    kw = dict(size=size, alpha=0.3, beta=0.75, k=1.5)
    expected = torch.nn.LocalResponseNorm(**kw)(x)
    assert torch.allclose(ours(x, **kw), expected, rtol=0, atol=1e-12)
    assert torch.allclose(local_response_norm(x, **kw), expected, rtol=0, atol=1e-12)


def test_default_is_torch_default():
    x = rand(2, 9, 4, 4)
    assert torch.allclose(LocalResponseNorm(5)(x), torch.nn.LocalResponseNorm(5)(x), rtol=0, atol=1e-12)


# (convention, region, naive function, how our (size, alpha, beta, k) map to its own arguments)
CASES = [
    ("torch", "across", lambda a, n, al, be, k: naive.torch_lrn(a, n, al, be, k), SIZES),
    ("alexnet", "across", lambda a, n, al, be, k: naive.alexnet_lrn(a, n, al, be, k), SIZES),
    ("caffe", "across", lambda a, n, al, be, k: naive.caffe_across_lrn(a, n, al, be, k), [1, 3, 5, 7]),
    ("caffe", "within", lambda a, n, al, be, k: naive.caffe_within_lrn(a, n, al, be), [1, 3, 5]),
    ("tensorflow", "across", lambda a, n, al, be, k: naive.tensorflow_lrn(a, (n - 1) // 2, k, al, be), [1, 3, 5, 7]),
    ("onnx", "across", lambda a, n, al, be, k: naive.onnx_lrn(a, n, al, be, k), SIZES),
    ("cudnn", "across", lambda a, n, al, be, k: naive.cudnn_lrn(a, n, al, be, k), SIZES),
    ("cuda-convnet", "across", lambda a, n, al, be, k: naive.cuda_convnet_cmrnorm(a, n, al, be, k), SIZES),
    ("cuda-convnet", "within", lambda a, n, al, be, k: naive.cuda_convnet_rnorm(a, n, al, be, k), [1, 2, 3, 4, 5]),
]


@pytest.mark.parametrize("convention, region, loop, sizes", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_every_convention_matches_its_published_formula(convention, region, loop, sizes):
    x = rand(2, 7, 5, 6, seed=1)
    for size in sizes:
        k = 1.0 if (convention, region) == ("caffe", "within") else 1.7
        got = ours(x, size=size, alpha=0.4, beta=0.8, k=k, region=region, convention=convention)
        want = torch.from_numpy(loop(x.numpy(), size, 0.4, 0.8, k))
        err = (got - want).abs().max().item()
        assert err <= 1e-10, (convention, region, size, err)


def test_even_windows_differ_where_the_conventions_say():
    x = rand(1, 6, 2, 2, seed=2)
    kw = dict(size=4, alpha=1.0, beta=0.75, k=1.0)
    t, o = ours(x, convention="torch", **kw), ours(x, convention="onnx", **kw)
    assert not torch.allclose(t, o)  # extra channel below vs above
    # flipping the channel order turns one placement into the other
    assert torch.allclose(ours(x.flip(1), convention="onnx", **kw).flip(1), t, atol=1e-12)


def test_within_channel_counts_the_zero_padding():
    # a single non-zero pixel in a corner: its window holds 4 of 9 pixels, but the divisor stays 9
    x = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    x[0, 0, 0, 0] = 2.0
    y = ours(x, size=3, alpha=0.9, beta=0.5, k=1.0, region="within", convention="caffe")
    assert y[0, 0, 0, 0].item() == pytest.approx(2.0 * (1 + 0.9 * 4.0 / 9) ** -0.5, abs=1e-15)


@pytest.mark.parametrize("kwargs, needle", [
    (dict(size=0), "size must be an integer >= 1"),
    (dict(size=2.5), "size must be an integer"),
    (dict(size=True), "size must be an integer"),
    (dict(size=3, alpha=-1e-4), "alpha must be a finite number >= 0"),
    (dict(size=3, beta=-0.1), "beta must be a finite number >= 0"),
    (dict(size=3, k=0.0), "k must be a finite number > 0"),
    (dict(size=3, k=float("nan")), "k must be a finite number"),
    (dict(size=3, region="spatial"), "region must be one of across, within"),
    (dict(size=3, convention="keras"), "convention must be one of"),
    (dict(size=3, region="within", convention="torch"), "'torch' has no within-channel"),
    (dict(size=3, region="within", convention="tensorflow"), "'tensorflow' has no within-channel"),
    (dict(size=4, convention="caffe"), "size must be odd"),
    (dict(size=4, convention="tensorflow"), "size must be odd"),
    (dict(size=17, convention="cudnn"), "1 <= size <= 16"),
    (dict(size=3, region="within", convention="caffe", k=2.0), "WITHIN_CHANNEL LRN has no k"),
])
def test_invalid_parameters_are_rejected_at_construction(kwargs, needle):
    with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        LocalResponseNorm(**kwargs)


def test_inputs_of_fewer_than_three_dims_are_rejected():
    with pytest.raises(ValueError, match="3 or more dimensions"):
        LocalResponseNorm(3)(torch.ones(2, 4))


def test_repr_names_the_parameters():
    r = repr(LocalResponseNorm(3, region="within", convention="caffe"))
    assert "size=3" in r and "region=within" in r and "convention=caffe" in r


def test_naive_loops_are_independent_of_each_other():
    # a sanity check on the test oracles: odd sizes agree where the conventions agree
    x = rand(1, 5, 2, 2, seed=3).numpy()
    a = naive.torch_lrn(x, 3, 0.5, 0.75, 1.0)
    assert np.allclose(a, naive.onnx_lrn(x, 3, 0.5, 0.75, 1.0))
    assert np.allclose(a, naive.caffe_across_lrn(x, 3, 0.5, 0.75, 1.0))
    assert np.allclose(a, naive.tensorflow_lrn(x, 1, 1.0, 0.5 / 3, 0.75))


def test_lrn_params_are_checked_once_and_taken_by_the_layer_as_they_are():
    p = LRNParams(convention="alexnet")  # None: the convention's defaults
    assert (p.size, p.alpha, p.beta, p.k, p.region) == (5, 1e-4, 0.75, 2.0, "across")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.alpha = 1.0  # a made LRNParams stays a checked one
    with pytest.raises(ValueError, match="size must be odd"):
        LRNParams(4, convention="caffe")
    assert p.canon(dims=2) == canonical(5, 1e-4, 0.75, 2.0, convention="alexnet")
    layer = LocalResponseNorm(p, impl="reference")
    x = rand(2, 7, 5, 6, seed=4)
    assert layer.params is p and (layer.size, layer.alpha, layer.k, layer.convention) == (5, 1e-4, 2.0, "alexnet")
    assert torch.equal(layer(x), LocalResponseNorm(5, 1e-4, 0.75, 2.0, convention="alexnet", impl="reference")(x))
    with pytest.raises(TypeError, match="not both"):
        LocalResponseNorm(p, alpha=1e-3)


def _imports_within(package: Path, name: str) -> dict[str, set[str]]:
    """module -> the modules of `package` (named `name`) that it imports, at any depth of its code."""
    modules = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package).with_suffix("").parts
        modules[".".join((name, *parts)).removesuffix(".__init__")] = path
    graph = {}
    for module, path in modules.items():
        here = module if path.name == "__init__.py" else module.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = ".".join(here.split(".")[: len(here.split(".")) - node.level + 1]) if node.level else ""
                target = ".".join(x for x in (base, node.module) if x)
                found |= {target} | {f"{target}.{alias.name}" for alias in node.names}
            elif isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
        graph[module] = found & set(modules) - {module}
    return graph


def test_the_lrn_package_has_no_import_cycle():
    """functional.py and kernels/fused.py used to import each other (one of the two imports
    hidden in a function); the ops both use live in ops.py."""
    graph = _imports_within(Path(lrn_cli.lrn.__file__).parent, "lrn_cli.lrn")
    assert all("lrn_cli.lrn.ops" in graph[f"lrn_cli.lrn.{m}"] for m in ("functional", "kernels.fused"))
    done, path = set(), []

    def visit(module):
        assert module not in path, f"import cycle: {' -> '.join(path[path.index(module):] + [module])}"
        if module not in done:
            path.append(module)
            for dep in sorted(graph[module]):
                visit(dep)
            path.pop()
            done.add(module)

    for module in sorted(graph):
        visit(module)
