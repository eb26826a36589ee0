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
