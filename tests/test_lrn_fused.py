"""The fused LRN (C kernels and the PyTorch-ops backend) against the reference formula."""
import contextlib

import pytest
import torch

import naive_lrn as naive
from lrn_cli.lrn import LocalResponseNorm, canonical, reference
from lrn_cli.lrn.kernels import native
from lrn_cli.lrn.kernels.fused import fused

BACKENDS = ["native", "torch"]
needs_native = pytest.mark.skipif(not native.available(), reason="no C compiler: the native kernels are not built")


def backend_param(b):
    return pytest.param(b, marks=needs_native) if b == "native" else b


def rand(*shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * 3).to(dtype)


# canonical parameters that cover every window placement: odd, even (extra low / high), size 1
CANONS = [canonical(5, 0.4, 0.75, 1.7), canonical(4, 0.4, 0.8, 1.7), canonical(4, 0.4, 0.8, 1.7, convention="onnx"),
          canonical(1, 0.4, 0.5, 2.0), canonical(6, 0.3, 1.0, 1.0, convention="alexnet"),
          canonical(3, 0.9, 0.75, 1.0, "within", "caffe"), canonical(4, 0.9, 0.6, 1.3, "within", "cuda-convnet"),
          canonical(1, 0.9, 0.0, 1.0, "within", "caffe")]
IDS = [f"{c.region}-lo{c.lo}-hi{c.hi}-b{c.beta}" for c in CANONS]


@pytest.mark.parametrize("backend", [backend_param(b) for b in BACKENDS])
@pytest.mark.parametrize("canon", CANONS, ids=IDS)
def test_forward_and_backward_match_the_reference_in_float64(backend, canon):
    x = rand(3, 7, 6, 5).requires_grad_()
    g = rand(3, 7, 6, 5, seed=1)
    y, yr = fused(x, canon, backend), reference(x, canon)
    (gx,), (gr,) = torch.autograd.grad(y, x, g), torch.autograd.grad(yr, x, g)
    assert (y - yr).abs().max() <= 1e-12 and (gx - gr).abs().max() <= 1e-12


@pytest.mark.parametrize("backend", [backend_param(b) for b in BACKENDS])
@pytest.mark.parametrize("region", ["across", "within"])
def test_gradcheck_of_the_analytic_backward(backend, region):
    canon = canonical(3, 0.6, 0.75, 1.2 if region == "across" else 1.0, region,
                      "torch" if region == "across" else "caffe")
    x = rand(2, 5, 4, 3, seed=4).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: fused(t, canon, backend), (x,), eps=1e-6, atol=1e-8)
    even = canonical(4, 0.6, 0.6, 1.5, region, "cuda-convnet")
    assert torch.autograd.gradcheck(lambda t: fused(t, even, backend), (x,), eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("convention, region, loop, size", [
    ("torch", "across", lambda a, n: naive.torch_lrn(a, n, 0.4, 0.8, 1.7), 4),
    ("onnx", "across", lambda a, n: naive.onnx_lrn(a, n, 0.4, 0.8, 1.7), 4),
    ("alexnet", "across", lambda a, n: naive.alexnet_lrn(a, n, 0.4, 0.8, 1.7), 5),
    ("tensorflow", "across", lambda a, n: naive.tensorflow_lrn(a, (n - 1) // 2, 1.7, 0.4, 0.8), 5),
    ("caffe", "within", lambda a, n: naive.caffe_within_lrn(a, n, 0.4, 0.8), 3),
    ("cuda-convnet", "within", lambda a, n: naive.cuda_convnet_rnorm(a, n, 0.4, 0.8, 1.7), 4),
])
def test_default_fused_layer_matches_the_published_formulas(convention, region, loop, size):
    x = rand(2, 7, 5, 6, seed=5)
    k = 1.0 if convention == "caffe" else 1.7
    got = LocalResponseNorm(size, 0.4, 0.8, k, region, convention)(x)  # impl fused by default
    assert (got - torch.from_numpy(loop(x.numpy(), size))).abs().max() <= 1e-10


@pytest.mark.parametrize("backend", [backend_param(b) for b in BACKENDS])
@pytest.mark.parametrize("canon", [CANONS[i] for i in (0, 1, 5, 6)], ids=[IDS[i] for i in (0, 1, 5, 6)])
def test_float32_agrees_with_float64(backend, canon):  # beta 0.75 and general ones, both regions
    """float32 has unit roundoff u = 6e-8. y = x * d^-beta: the window sum of n squares, the
    affine step, exp/log (a few ulp each) and the product give a relative error below about
    (n + 10) * u * (1 + beta) ~ 2e-6 per element, whatever the magnitude of x; rtol 1e-5 leaves
    a margin of 5. The gradient is a difference of two terms, so its error is relative to the
    larger term: atol = 1e-5 * max |g * p| there."""
    x64 = rand(4, 16, 9, 7, seed=6)
    g64 = rand(4, 16, 9, 7, seed=7)
    x32 = x64.float().requires_grad_()
    y32 = fused(x32, canon, backend)
    (gx32,) = torch.autograd.grad(y32, x32, g64.float())
    x = x64.clone().requires_grad_()
    y64 = reference(x, canon)
    (gx64,) = torch.autograd.grad(y64, x, g64)
    torch.testing.assert_close(y32.double(), y64, rtol=1e-5, atol=0)
    scale = (g64 * y64.abs() / x64.abs().clamp_min(1e-12)).abs().max().item()
    torch.testing.assert_close(gx32.double(), gx64, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("region", ["across", "within"])
def test_half_types_on_cpu_are_computed_in_float32(dtype, region):
    m = LocalResponseNorm(3, 1e-2, 0.75, 1.0, region, "caffe")
    x = rand(2, 8, 6, 6, dtype=torch.float32).to(dtype).requires_grad_()
    y = m(x)
    assert y.dtype == dtype
    assert torch.equal(y, m(x.detach().float()).to(dtype))
    y.sum().backward()
    assert x.grad.dtype == dtype and torch.isfinite(x.grad.float()).all()
    if dtype == torch.float16:  # what this layer fixes: torch's LRN has no float16 kernel on CPU
        with pytest.raises(RuntimeError, match="Half"):
            torch.nn.LocalResponseNorm(3)(x.detach())


@pytest.mark.parametrize("backend", [backend_param(b) for b in BACKENDS])
@pytest.mark.parametrize("region", ["across", "within"])
def test_channels_last_in_channels_last_out(backend, region):
    canon = canonical(3, 0.5, 0.75, 1.0, region, "caffe")
    x = rand(2, 6, 5, 4).to(memory_format=torch.channels_last).requires_grad_()
    y = fused(x, canon, backend)
    assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
    y.backward(rand(2, 6, 5, 4, seed=2).to(memory_format=torch.channels_last))
    assert x.grad.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(y, reference(x.detach().contiguous(), canon), atol=1e-12)
    # and via the module, with reference too
    for impl in ("fused", "reference"):
        out = LocalResponseNorm(3, 0.5, 0.75, 1.0, region, "caffe", impl)(x.detach())
        assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("shape", [(2, 7, 9), (2, 6, 3, 2, 4), (3, 5, 1, 1), (1, 4, 1), (0, 4, 3, 3)])
@pytest.mark.parametrize("region", ["across", "within"])
def test_three_four_and_five_dims(shape, region):
    canon = canonical(3, 0.5, 0.75, 1.0, region, "caffe", dims=len(shape) - 2)
    x = rand(*shape).requires_grad_()
    y, yr = fused(x, canon), reference(x, canon)
    assert y.shape == x.shape and torch.allclose(y, yr, atol=1e-12)
    if x.numel():
        g = rand(*shape, seed=3)
        assert torch.allclose(torch.autograd.grad(y, x, g)[0], torch.autograd.grad(yr, x, g)[0], atol=1e-12)
    if region == "across":
        assert torch.allclose(y, torch.nn.LocalResponseNorm(3, 0.5, 0.75, 1.0)(x), atol=1e-12)


def test_channels_last_3d_across():
    canon = canonical(3, 0.5, 0.75, 1.0)
    x = rand(2, 6, 3, 2, 4).to(memory_format=torch.channels_last_3d)
    y = fused(x, canon)
    assert y.is_contiguous(memory_format=torch.channels_last_3d)
    assert torch.allclose(y, reference(x.contiguous(), canon), atol=1e-12)


@pytest.mark.parametrize("dtype, shape, region", [
    (torch.float32, (8, 24, 11, 13), "across"), (torch.bfloat16, (4, 300, 11, 13), "across"),
    # small planes go through the kernel's passes in groups; each thread's slice starts and ends
    # its groups elsewhere, which must not change a byte
    (torch.float32, (5, 37, 9, 7), "within"), (torch.bfloat16, (3, 41, 8, 8), "within")])
def test_results_do_not_depend_on_the_thread_count(dtype, shape, region):
    canon = canonical(5, 1e-3, 0.75, 2.0) if region == "across" else canonical(3, 0.9, 0.75, 1.0, "within", "caffe")
    x = rand(*shape, dtype=torch.float32).to(dtype).requires_grad_()
    before = torch.get_num_threads()
    outs = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            y = fused(x, canon)
            (gx,) = torch.autograd.grad(y, x, torch.ones_like(y))
            outs.append((y, gx))
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(outs[0][0], y) and torch.equal(outs[0][1], g) for y, g in outs)


@contextlib.contextmanager
def deterministic():
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


def forward_backward(layer, x, g):
    x = x.detach().clone().requires_grad_()
    y = layer(x)
    (gx,) = torch.autograd.grad(y, x, g)
    return y.detach(), gx


@pytest.mark.parametrize("backend", [backend_param(b) for b in BACKENDS])
@pytest.mark.parametrize("region", ["across", "within"])
def test_deterministic_mode_backward_runs_and_repeats_exactly(backend, region):
    """What the CPU can check: under torch.use_deterministic_algorithms(True) the fused backward
    runs and repeated runs give bitwise-equal gradients, for the C kernels and for the PyTorch-ops
    backend, which is the one CUDA tensors take. torch's own LRN is deterministic on the CPU too:
    its nondeterminism is in its CUDA backward, checked against on a GPU below."""
    canon = canonical(5, 1e-3, 0.75, 2.0) if region == "across" else canonical(3, 1e-3, 0.75, 1.0, "within", "caffe")
    x, g = rand(4, 16, 9, 9, dtype=torch.float32), rand(4, 16, 9, 9, seed=1, dtype=torch.float32)
    with deterministic():
        runs = [forward_backward(lambda t: fused(t, canon, backend), x, g) for _ in range(3)]
    assert all(torch.equal(y, runs[0][0]) and torch.equal(gx, runs[0][1]) for y, gx in runs)
    _, gr = forward_backward(lambda t: reference(t, canon), x.double(), g.double())
    torch.testing.assert_close(runs[0][1].double(), gr, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: torch's LRN backward is "
                                                          "nondeterministic only on CUDA")
def test_on_cuda_the_fused_backward_runs_in_deterministic_mode_where_torchs_raises():
    x = rand(4, 16, 9, 9, dtype=torch.float32).cuda()
    g = rand(4, 16, 9, 9, seed=1, dtype=torch.float32).cuda()
    ours = LocalResponseNorm(5, 1e-3, 0.75, 2.0)
    with deterministic():
        with pytest.raises(RuntimeError, match="deterministic"):  # avg_pool3d_backward_cuda
            forward_backward(torch.nn.LocalResponseNorm(5, 1e-3, 0.75, 2.0), x, g)
        runs = [forward_backward(ours, x, g) for _ in range(3)]
    assert all(torch.equal(y, runs[0][0]) and torch.equal(gx, runs[0][1]) for y, gx in runs)
    reference_layer = LocalResponseNorm(5, 1e-3, 0.75, 2.0, impl="reference")
    _, gr = forward_backward(reference_layer, x.cpu().double(), g.cpu().double())
    torch.testing.assert_close(runs[0][1].cpu().double(), gr, rtol=1e-4, atol=1e-4)


def test_autocast():
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), LocalResponseNorm(5, 1e-3, 0.75, 2.0))
    x = rand(2, 3, 9, 9, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), m(x), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_torch_compile(backend):
    m = LocalResponseNorm(5, 1e-3, 0.75, 2.0)
    x = rand(2, 8, 5, 5, dtype=torch.float32).requires_grad_()
    compiled = torch.compile(m, backend=backend, fullgraph=True)  # fullgraph: no graph break at the op
    y = compiled(x)
    (g,) = torch.autograd.grad(y.sum(), x)
    (gr,) = torch.autograd.grad(m(x).sum(), x)
    assert torch.allclose(y, m(x)) and torch.allclose(g, gr)


@pytest.mark.parametrize("region", ["across", "within"])
def test_the_eager_path_and_the_custom_op_give_the_same_bytes(region):
    """In eager mode the op runs as an autograd.Function (cheaper to dispatch); torch.compile,
    export and tracing see the custom op. Both must compute exactly the same thing."""
    from lrn_cli.lrn.kernels.fused import fused_forward

    canon = canonical(3, 0.5, 0.75, 1.0, region, "caffe")
    x, g = rand(3, 6, 9, 11, dtype=torch.float32).requires_grad_(), rand(3, 6, 9, 11, dtype=torch.float32, seed=2)
    y = fused(x, canon)
    assert y.grad_fn is not None and "lrn" not in type(y.grad_fn).__name__.lower()  # the Function, not the op
    yo = fused_forward(x, canon.region, canon.lo, canon.hi, canon.scale, canon.k, canon.beta, "auto")
    (gx,), (go,) = torch.autograd.grad(y, x, g), torch.autograd.grad(yo, x, g)
    assert torch.equal(y, yo) and torch.equal(gx, go)


@needs_native
@pytest.mark.parametrize("region, shape, dtype", [
    ("within", (3, 6, 9, 11), torch.float32), ("within", (4, 5, 13), torch.float64),
    ("across", (3, 7, 5, 4), torch.float32), ("across", (2, 9, 6, 6), torch.bfloat16)])
def test_the_common_case_path_gives_the_general_paths_bytes(region, shape, dtype):
    """An input the C kernel takes as it is goes to it by a shorter path (`_Native`); one it
    needs copied (channels_last within a channel) by the general one. Both must give the same
    bytes, a gradient in another layout included."""
    from lrn_cli.lrn.kernels.fused import _Eager

    canon = canonical(3, 0.5, 0.75, 1.0, region, "caffe")
    x = rand(*shape, dtype=torch.float32).to(dtype).requires_grad_()
    g = rand(*reversed(shape), dtype=torch.float32, seed=2).to(dtype).permute(*reversed(range(len(shape))))
    assert not g.is_contiguous()
    y, yg = fused(x, canon), _Eager.apply(x, canon, "auto")
    assert type(y.grad_fn).__name__ == "_NativeBackward" and type(yg.grad_fn).__name__ == "_EagerBackward"
    (gx,), (gg,) = torch.autograd.grad(y, x, g), torch.autograd.grad(yg, x, g)
    assert torch.equal(y, yg) and torch.equal(gx, gg)
    if len(shape) == 4:
        xl = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
        yl = fused(xl, canon)
        (gl,) = torch.autograd.grad(yl, xl, g)
        if region == "within":  # the same kernel on a contiguous copy
            assert type(yl.grad_fn).__name__ == "_EagerBackward"
            assert torch.equal(yl, y) and torch.equal(gl, gx)
        else:  # the packed kernel on x as it is: another order of the window's sum
            assert type(yl.grad_fn).__name__ == "_NativeBackward" and yl.is_contiguous(memory_format=torch.channels_last)
            (gle,) = torch.autograd.grad(_Eager.apply(xl, canon, "auto"), xl, g)
            assert torch.equal(gl, gle)
            assert torch.allclose(yl, y, rtol=2 ** -7 if dtype == torch.bfloat16 else 1e-6, atol=0)


def test_fused_keeps_only_its_input_for_backward():
    held = []

    def pack(t):
        held.append(t)
        return t

    x = rand(2, 8, 5, 5, dtype=torch.float32).requires_grad_()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fused(x, canonical(5, 1e-3, 0.75, 2.0))
    assert len(held) == 1 and held[0].data_ptr() == x.data_ptr()


def test_invalid_impl():
    with pytest.raises(ValueError, match="impl must be one of fused, reference"):
        LocalResponseNorm(3, impl="fast")


@needs_native
@pytest.mark.parametrize("shape, fmt", [
    ((2, 300, 27, 27), torch.contiguous_format),  # several pixel tiles, the last one partial
    ((3, 40, 37, 41), torch.contiguous_format),   # blocks of 16 and 8 lanes plus their tails
    ((2, 300, 5, 7), torch.channels_last),        # packed channel vectors
])
def test_tiles_blocks_and_tails_match_the_reference_in_float32(shape, fmt):
    """The C kernels split the pixels into tiles and blocks of vector lanes plus a scalar tail
    (sizes that depend on C and on the direction); every piece must compute the same formula.
    Tolerances as in test_float32_agrees_with_float64."""
    canon = canonical(5, 0.4, 0.75, 1.7)
    x64, g64 = rand(*shape, seed=8), rand(*shape, seed=9)
    x32 = x64.float().to(memory_format=fmt).requires_grad_()
    y32 = fused(x32, canon, "native")
    (gx32,) = torch.autograd.grad(y32, x32, g64.float().to(memory_format=fmt))
    x64.requires_grad_()
    y64 = reference(x64, canon)
    (gx64,) = torch.autograd.grad(y64, x64, g64)
    torch.testing.assert_close(y32.double(), y64.detach(), rtol=1e-5, atol=0)
    scale = (g64 * y64.detach().abs() / x64.detach().abs().clamp_min(1e-12)).abs().max().item()
    torch.testing.assert_close(gx32.double(), gx64, rtol=1e-5, atol=1e-5 * scale)


@needs_native
@pytest.mark.parametrize("shape", [
    (2, 700, 5, 5),    # many small planes, each ending in a partial block of lanes
    (2, 3, 16, 16),    # rows of exactly one block
    (1, 2, 130, 131),  # large planes, rows longer than a block and not a multiple of it
    (3, 2, 7, 1),      # one column: every horizontal neighbour masked
    (3, 5, 1, 2),      # planes narrower and shorter than the window
])
@pytest.mark.parametrize("canon", [CANONS[5], CANONS[6], canonical(6, 0.7, 0.75, 1.3, "within", "cuda-convnet")],
                         ids=["lo1-hi1", "lo1-hi2", "lo3-hi2"])
def test_within_channel_pads_masks_and_tails_match_the_reference(shape, canon):
    """The within-channel kernel runs along each plane as one flat buffer in blocks of lanes:
    vertical neighbours are shifts by a row into zero pads, horizontal ones are masked by column,
    and a plane's last block is partial; every plane shape and window must give the formula."""
    x, g = rand(*shape, seed=10).requires_grad_(), rand(*shape, seed=11)
    y, yr = fused(x, canon, "native"), reference(x, canon)
    (gx,), (gr,) = torch.autograd.grad(y, x, g), torch.autograd.grad(yr, x, g)
    assert (y - yr).abs().max() <= 1e-12 and (gx - gr).abs().max() <= 1e-12


@needs_native
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("region, shape, fmt", [
    ("across", (2, 300, 9, 11), torch.contiguous_format), ("across", (2, 24, 5, 7), torch.channels_last),
    ("within", (3, 8, 13, 11), torch.contiguous_format)])
def test_half_types_are_computed_in_float32_without_a_float32_copy(dtype, region, shape, fmt):
    """The kernels read and write the half type itself: the op keeps the half input for its
    backward (no float32 copy), and its results are the float32 computation rounded once: equal
    to the float32 kernel's result rounded, up to one unit in the last place where the two
    builds' float32 roundings differ (a half-precision computation would be off by many)."""
    if not native.supports(dtype):
        pytest.skip(f"this compiler has no {dtype} type for the kernels")
    canon = canonical(3, 0.5, 0.75, 1.0, region, "caffe")
    x = rand(*shape, dtype=torch.float32).to(dtype).to(memory_format=fmt).requires_grad_()
    held = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: held.append(t) or t, lambda t: t):
        y = fused(x, canon)
    assert [t.dtype for t in held] == [dtype] and held[0].data_ptr() == x.data_ptr()
    g = rand(*shape, seed=1, dtype=torch.float32).to(dtype).to(memory_format=fmt)
    (gx,) = torch.autograd.grad(y, x, g)
    xf = x.detach().float().requires_grad_()
    yf = fused(xf, canon)
    (gf,) = torch.autograd.grad(yf, xf, g.float())
    for got, want in ((y, yf), (gx, gf)):
        assert got.dtype == dtype
        ulps = (got.contiguous().view(torch.int16).int() - want.to(dtype).contiguous().view(torch.int16).int()).abs()
        assert ulps.max() <= 1 and (ulps > 0).float().mean() < 0.01



@needs_native
@pytest.mark.parametrize("region", ["across", "within"])
def test_the_layer_keeps_the_kernel_arguments_per_input_and_never_mixes_them_up(region):
    """LocalResponseNorm works out the C kernel's arguments once per (shape, strides, dtype): one
    layer fed inputs that differ in each of these, in turn and again, gives each the reference's
    output and gradient, and an input the short path does not take (channels_last within a
    channel, an empty batch) still goes the general way."""
    m = LocalResponseNorm(3, 0.5, 0.75, 1.0, region=region, convention="caffe")
    canon = m.canon(torch.empty(1, 1, 1, 1))
    inputs = [rand(2, 6, 5, 7), rand(3, 6, 5, 7), rand(2, 6, 7, 5), rand(2, 6, 5, 7, dtype=torch.float32),
              rand(2, 6, 5, 7).contiguous(memory_format=torch.channels_last), rand(2, 6, 5, 7)[:, :, :, 1:],
              rand(0, 6, 5, 7)]
    for x in inputs + inputs[::-1]:
        x = x.detach().requires_grad_()
        g = torch.ones_like(x)
        y, yr = m(x), reference(x, canon)
        (gx,), (gr,) = torch.autograd.grad(y, x, g), torch.autograd.grad(yr, x, g)
        tol = 1e-5 if x.dtype == torch.float32 else 1e-12
        assert y.shape == x.shape
        torch.testing.assert_close(y, yr, rtol=tol, atol=tol)
        torch.testing.assert_close(gx, gr, rtol=tol, atol=tol)
    assert len(m._native) == len(inputs)
    for n in range(70):  # ever new shapes: the table stays small
        m(rand(1, 6, 2, n + 1, dtype=torch.float32))
    assert len(m._native) <= 64
    # a copy (pickled to a worker, saved whole) starts without this process's arguments
    import copy
    import pickle

    for other in (pickle.loads(pickle.dumps(m)), copy.deepcopy(m)):
        assert other._native == {} and torch.equal(other(inputs[0]), m(inputs[0]))


@needs_native
@pytest.mark.parametrize("size", [9, 16, 17, 33])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_wide_within_channel_windows_match_the_reference(size, dtype):
    """Windows whose half-width reaches a whole vector (8 doubles, 16 floats) or more, on planes
    narrower and wider than the window: the kernel's padded buffers must hold every shifted read."""
    canon = canonical(size, 0.9, 0.75, 1.3, "within", "cuda-convnet")
    for shape in [(2, 3, 5, 3), (1, 2, 17, 16), (1, 3, 33, 40), (2, 1, 3, 70)]:
        x = rand(*shape, dtype=dtype).requires_grad_()
        g = rand(*shape, seed=1, dtype=dtype)
        y, yr = fused(x, canon, "native"), reference(x.double(), canon)
        (gx,), (gr,) = torch.autograd.grad(y, x, g), torch.autograd.grad(yr, x, g.double())
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        torch.testing.assert_close(y.double(), yr, rtol=tol, atol=tol * yr.abs().max().item())
        torch.testing.assert_close(gx.double(), gr.double(), rtol=tol, atol=tol * gr.abs().max().item())
