"""`lrn bench`: the tables are complete and the memory figures are what the implementations hold."""
import json

import torch

from lrn_cli.bench import AvgPoolWithin, held_for_backward, layers_for
from lrn_cli.lrn import LocalResponseNorm

from conftest import run_cli


def test_quick_bench_writes_every_row(tmp_path):
    out = tmp_path / "bench.json"
    res = run_cli("bench", "--quick", "--repeats", "1", "--json", str(out))
    assert res.returncode == 0, res.stderr
    result = json.loads(out.read_text())
    rows = result["layers"]
    assert {(r["region"], r["impl"]) for r in rows} == {(g, i) for g in ("across", "within")
                                                        for i in ("torch", "reference", "fused")}
    for r in rows:
        assert r["fwd_bwd_ms"] > 0 and r["forward_ms"] > 0 and r["copy_gbytes_per_s"] > 0
        if r["impl"] == "fused":
            assert r["held_mb"] == 0  # only the input is kept
        if r["impl"] == "torch":
            assert r["held_mb"] > 0 and r["speedup"] == 1
    assert "speed-up" in res.stdout and "fused" in res.stdout
    (inter,) = result["interleaved"]
    assert inter["region"] == "within" and all(inter[k] > 0 for k in ("alone_ms", "after_conv_ms", "after_torch_ms", "after_flush_ms"))
    assert inter["after_conv_vs_alone"] == inter["after_conv_ms"] / inter["alone_ms"]
    assert inter["control_alone_ms"] > 0 and inter["control_after_torch_vs_alone"] == \
        inter["control_after_torch_ms"] / inter["control_alone_ms"]
    assert abs(inter["after_torch_vs_control"] * inter["control_after_torch_vs_alone"] -
               inter["after_torch_vs_alone"]) < 1e-9
    assert "Interleaved" in res.stdout
    (pool,) = result["max_pool"]
    assert pool["lrn_forward_ms"] > 0 and pool["speedup_fwd_bwd"] == pool["torch_fwd_bwd_ms"] / pool["lrn_fwd_bwd_ms"]


def test_train_step_rows_carry_the_evaluation_throughput(monkeypatch):
    """Small nets stand in for the presets: every variant gets its step time, overhead over the
    identity step, and evaluation against training images/s at the same thread count."""
    import lrn_cli.bench as bench

    monkeypatch.setattr(bench, "EVAL_BATCH", 4)
    rows = bench.bench_train_steps(torch.device("cpu"), repeats=1, nets=[
        ("tiny", {"preset": "cifar10_quick", "norm": {"type": "lrn"}}, 16, 2)])
    assert [r["lrn"] for r in rows] == ["torch", "ours", "identity"]
    for r in rows:
        assert r["eval_images_per_s"] > 0 and r["train_images_per_s"] > 0
        assert abs(r["eval_vs_train"] - r["eval_images_per_s"] / r["train_images_per_s"]) < 1e-9
    assert rows[2]["overhead"] == 0


def test_memory_held_for_backward():
    x = torch.randn(4, 16, 8, 8)
    mb = x.numel() * 4
    assert held_for_backward(LocalResponseNorm(5), x) == 0
    assert held_for_backward(torch.nn.LocalResponseNorm(5), x) >= 2 * mb  # torch keeps several copies
    assert held_for_backward(LocalResponseNorm(5, impl="reference"), x) >= mb


def test_avg_pool_formulation_is_caffes_within_channel_lrn():
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64)
    ours = layers_for("within")["reference"]
    assert torch.allclose(AvgPoolWithin(3, 5e-5, 0.75)(x), ours(x), atol=1e-14)
