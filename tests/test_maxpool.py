"""lrn_cli.ops.MaxPool2d: torch's max pooling, bit for bit, from the C kernel."""
import pytest
import torch
import torch.nn.functional as F

from lrn_cli.ops import MaxPool2d
from lrn_cli.ops import maxpool

needs_native = pytest.mark.skipif(maxpool._lib() is None, reason="no C compiler: the pooling kernel is not built")

CONFIGS = [(3, 2, 0, True), (3, 2, 0, False), (2, 2, 0, False), (3, 1, 1, False), (5, 3, 2, True),
           ((3, 2), (2, 1), (1, 0), True), (1, 1, 0, False)]
SHAPES = [(2, 3, 13, 11), (1, 2, 32, 32), (2, 2, 7, 5), (1, 1, 5, 5), (3, 4, 27, 27)]


def same(x, pool, g_seed=1):
    """Output and input gradient of ours and of nn.MaxPool2d on x: equal, NaN where NaN."""
    theirs = torch.nn.MaxPool2d(pool.kernel_size, pool.stride, pool.padding, ceil_mode=pool.ceil_mode)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = pool(a), theirs(b)
    torch.testing.assert_close(ya, yb, rtol=0, atol=0, equal_nan=True)
    g = torch.randn(ya.shape, generator=torch.Generator().manual_seed(g_seed), dtype=x.dtype)
    ya.backward(g)
    yb.backward(g)
    assert torch.equal(a.grad, b.grad)


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("config", CONFIGS, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_output_and_gradient_are_torchs(shape, config, dtype):
    k, s, p, ceil = config
    if min(shape[2:]) + 2 * max(p if isinstance(p, tuple) else (p,)) < max(k if isinstance(k, tuple) else (k,)):
        pytest.skip("window larger than the padded plane")
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0), dtype=dtype)
    same(x, MaxPool2d(k, s, p, ceil_mode=ceil))


@needs_native
def test_ties_go_to_the_first_maximum_and_nan_wins_as_in_torch():
    """Small integers tie everywhere (and ReLU zeros tie in real nets); NaN propagates, the
    gradient goes to the element torch picks (the last NaN of a window), and -inf never beats
    a finite value."""
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 3, (2, 3, 17, 16), generator=g).float()
    same(x, MaxPool2d(3, 2, ceil_mode=True))
    x.view(-1)[torch.randperm(x.numel(), generator=g)[:40]] = float("nan")
    x.view(-1)[torch.randperm(x.numel(), generator=g)[:40]] = float("-inf")
    for pool in (MaxPool2d(3, 2, ceil_mode=True), MaxPool2d(3, 1, 1), MaxPool2d(2)):
        same(x, pool)
    assert MaxPool2d(3, 2)(torch.full((1, 1, 5, 5), float("-inf"))).isneginf().all()


@needs_native
def test_results_do_not_depend_on_the_thread_count():
    x = torch.randn(4, 8, 33, 31).requires_grad_()
    before, outs = torch.get_num_threads(), []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            y = MaxPool2d(3, 2, ceil_mode=True)(x)
            outs.append((y, torch.autograd.grad(y, x, torch.ones_like(y))[0]))
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(outs[0][0], y) and torch.equal(outs[0][1], g) for y, g in outs)


@needs_native
def test_training_keeps_int32_indices_and_evaluation_nothing():
    x = torch.randn(2, 3, 16, 16).requires_grad_()
    held = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: held.append(t) or t, lambda t: t):
        y = MaxPool2d(3, 2, ceil_mode=True)(x)
    assert [t.dtype for t in held] == [torch.int32] and held[0].shape == y.shape
    with torch.no_grad():
        assert torch.equal(MaxPool2d(3, 2, ceil_mode=True)(x), y)


@pytest.mark.parametrize("case", ["channels_last", "dilation", "indices", "bfloat16", "3d"])
def test_what_the_kernel_does_not_take_goes_to_torch(case):
    x = torch.randn(2, 3, 12, 12)
    kwargs, theirs_x = {}, x
    if case == "channels_last":
        x = theirs_x = x.contiguous(memory_format=torch.channels_last)
    elif case == "dilation":
        kwargs = {"dilation": 2}
    elif case == "indices":
        kwargs = {"return_indices": True}
    elif case == "bfloat16":
        x = theirs_x = x.bfloat16()
    else:
        x = theirs_x = x[0]
    ours = MaxPool2d(3, 2, **kwargs)(x)
    theirs = torch.nn.MaxPool2d(3, 2, **kwargs)(theirs_x)
    for a, b in zip(ours if case == "indices" else [ours], theirs if case == "indices" else [theirs]):
        assert torch.equal(a, b)


def test_it_is_nn_maxpool2d_to_the_rest_of_the_code():
    m = MaxPool2d(3, 2, ceil_mode=True)
    assert isinstance(m, torch.nn.MaxPool2d) and repr(m) == repr(torch.nn.MaxPool2d(3, 2, ceil_mode=True))
    assert m.state_dict() == {}
    traced = torch.jit.trace(m, torch.randn(1, 2, 9, 9))  # tracing (ONNX export) takes torch's op
    assert "aten::max_pool2d" in str(traced.graph)
