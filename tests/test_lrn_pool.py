"""The kernels' pool for large outputs (native_pool.h): same results, memory reused, bounded."""
import threading

import pytest
import torch

from lrn_cli.errors import UserError
from lrn_cli.lrn import canonical, reference
from lrn_cli.lrn.kernels import native
from lrn_cli.lrn.kernels.fused import _Eager, fused

pytestmark = pytest.mark.skipif(not native.available(), reason="no C compiler: the native kernels are not built")
MB = 1 << 20


def pooled(t: torch.Tensor) -> bool:
    return not t.untyped_storage().resizable()  # torch's own allocations are resizable, DLPack's not


@pytest.fixture
def pool():
    lib = native.load()
    native.release_pool()
    yield lib
    lib.pool_limit = native.pool_limit_mb() * MB
    lib.lrn_pool_set_limit(lib.pool_limit)
    native.release_pool()


def big(shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(dtype)


@pytest.mark.parametrize("region, shape", [("across", (2, 64, 140, 140)), ("within", (2, 40, 180, 180))])
def test_pooled_outputs_give_the_general_paths_bytes_and_are_reused(pool, region, shape):
    canon = canonical(5, 1e-2, 0.75, 1.0 if region == "within" else 2.0, region,
                      "caffe" if region == "within" else "torch")
    x = big(shape).requires_grad_()
    g = big(shape, seed=1)
    assert x.numel() * 4 >= native.POOL_MIN_BYTES
    y = fused(x, canon)
    (gx,) = torch.autograd.grad(y, x, g)
    assert pooled(y) and pooled(gx) and type(y.grad_fn).__name__ == "_NativeBackward"
    ye = _Eager.apply(x, canon, "auto")  # the general path allocates with torch
    (ge,) = torch.autograd.grad(ye, x, g)
    assert not pooled(ye) and torch.equal(y, ye) and torch.equal(gx, ge)
    torch.testing.assert_close(y, reference(x.double(), canon).float(), rtol=1e-5, atol=1e-6)

    where, nbytes, expect = y.data_ptr(), y.numel() * 4, ye
    del y
    assert native.pool_held() >= nbytes
    y2 = fused(x.detach(), canon)  # the same size takes the block back, pages already mapped
    assert y2.data_ptr() == where and torch.equal(y2, expect)


def test_small_outputs_come_from_torch():
    y = fused(big((2, 8, 5, 5)), canonical(5, 1e-3, 0.75, 2.0))
    assert not pooled(y)


@pytest.mark.parametrize("dtype, fmt", [(torch.bfloat16, torch.channels_last), (torch.float64, torch.contiguous_format),
                                        (torch.float32, torch.channels_last)])
def test_pooled_tensors_keep_dtype_shape_and_strides(pool, dtype, fmt):
    x = big((3, 96, 120, 130), dtype).contiguous(memory_format=fmt)
    e = native.empty_like(x)
    assert pooled(e) and e.dtype == dtype and e.shape == x.shape and e.stride() == x.stride()
    e.copy_(x)
    assert torch.equal(e, x)
    y = fused(x, canonical(5, 1e-2, 0.75, 2.0))
    assert pooled(y) and y.stride() == x.stride()


def test_the_pool_keeps_at_most_its_limit(pool):
    x = big((1, 64, 128, 128))  # 4 MB ...
    x = x.expand(3, -1, -1, -1).contiguous()  # ... 12 MB
    pool.pool_limit = 20 * MB
    pool.lrn_pool_set_limit(pool.pool_limit)
    a, b = native.empty_like(x), native.empty_like(x)
    del a
    assert native.pool_held() == x.numel() * 4
    del b  # would make 24 MB: freed instead
    assert native.pool_held() == x.numel() * 4
    pool.lrn_pool_set_limit(5 * MB)  # lowering the limit frees what is above it
    assert native.pool_held() == 0
    pool.pool_limit = 0  # LRN_POOL_MB=0: no pool at all
    assert not pooled(native.empty_like(x))


def test_a_block_freed_on_another_thread_returns_to_the_pool(pool):
    box = [native.empty_like(big((4, 64, 100, 100)))]
    t = threading.Thread(target=box.clear)
    t.start()
    t.join()
    assert native.pool_held() == 4 * 64 * 100 * 100 * 4
    native.release_pool()
    assert native.pool_held() == 0


def test_autograd_accumulates_into_a_pooled_gradient(pool):
    canon = canonical(3, 1e-2, 0.75, 1.0, "within", "caffe")
    x = big((2, 40, 180, 180)).requires_grad_()
    g = big(x.shape, seed=1)
    fused(x, canon).backward(g)
    first = x.grad.clone()
    assert pooled(x.grad)
    fused(x, canon).backward(g)
    assert torch.allclose(x.grad, 2 * first, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("text, mb", [(None, 1024), ("0", 0), ("256", 256)])
def test_pool_size_from_the_environment(monkeypatch, text, mb):
    if text is None:
        monkeypatch.delenv(native.POOL_MB, raising=False)
    else:
        monkeypatch.setenv(native.POOL_MB, text)
    assert native.pool_limit_mb() == mb


@pytest.mark.parametrize("text", ["lots", "-1", "1.5"])
def test_a_bad_pool_size_names_the_variable(monkeypatch, text):
    monkeypatch.setenv(native.POOL_MB, text)
    with pytest.raises(UserError, match="LRN_POOL_MB"):
        native.pool_limit_mb()
