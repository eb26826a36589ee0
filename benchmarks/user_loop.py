"""The fused layer in a user's own training loop against inside `lrn train`, paired.

    python benchmarks/user_loop.py [--rounds 6] [--repeats 7] [--json FILE]

`lrn train` and `lrn bench` tell glibc to keep freed memory (lrn_cli.perf.keep_freed_memory), so
that large tensors do not fault their pages in on every call; a user who puts
`lrn_cli.lrn.LocalResponseNorm` into a loop of their own does not get that. The fused kernels'
large outputs come from a pool of their own instead (lrn_cli/native_pool.h), so they should be
as fast either way. This measures it: each round starts two fresh processes one after the other,
one as `lrn train` runs (the tuning on) and one as a user's script runs (nothing called, the
pool only), in alternating order; each times, interleaved, the fused forward+backward and
torch's layer at issue 13's shapes, across channels and within (repeats, median), and the
cifar10_full train step at batch 128 with the fused LRN and with identity in its place. The
result per shape is the median over rounds of the user process's time over the tuned process's
of the same round (paired, so that the machine's drift cancels). torch's layer, which has no
pool, shows what the tuning is worth.

Goal (issue 13): the fused layer from a user's loop as fast as inside `lrn train`, i.e. a paired
ratio of at most 1.1 at every shape; exits 1 when one is over.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHAPES = [("across", (128, 32, 16, 16)), ("across", (64, 96, 55, 55)), ("across", (64, 256, 27, 27)),
          ("within", (128, 32, 16, 16)), ("within", (64, 96, 55, 55)), ("within", (64, 256, 27, 27)),
          ("within", (128, 32, 8, 8))]
GOAL = 1.1


def child(mode: str, repeats: int) -> dict[str, Any]:
    """One process's times: {"layers": {"region shape impl": ms}, "steps": {variant: ms}}."""
    import torch

    from lrn_cli import perf
    from lrn_cli.bench import STEP_NETS, _time, bench_train_steps, layers_for

    if mode == "tuned":
        assert perf.keep_freed_memory(), "the malloc tuning could not be applied here"
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    cpu = torch.device("cpu")
    layers: dict[str, float] = {}
    for region, shape in SHAPES:
        g = torch.Generator().manual_seed(0)
        x, grad = torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)
        both = {n: l for n, l in layers_for(region).items() if n in ("fused", "torch")}

        def step(layer: torch.nn.Module) -> None:
            xx = x.detach().requires_grad_()
            layer(xx).backward(grad)

        times: dict[str, list[float]] = {n: [] for n in both}
        for layer in both.values():
            step(layer)
        for _ in range(repeats):
            for n, layer in both.items():
                times[n].append(_time(lambda: step(layer), cpu))
        for n, t in times.items():
            layers[f"{region} {'x'.join(map(str, shape))} {n}"] = 1e3 * statistics.median(t)
    rows = bench_train_steps(cpu, 2 * repeats + 1, nets=[n for n in STEP_NETS if n[0] == "cifar10_full"])
    steps = {r["lrn"]: r["step_ms"] for r in rows if r["lrn"] in ("ours", "identity")}
    return {"mode": mode, "tuned": perf.applied(), "layers": layers, "steps": steps}


def run_child(mode: str, repeats: int) -> dict[str, Any]:
    env = dict(os.environ, LRN_MALLOC="1" if mode == "tuned" else "0")
    out = subprocess.run([sys.executable, __file__, "--child", mode, "--repeats", str(repeats)], env=env,
                         check=True, capture_output=True, text=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--child", choices=("tuned", "user"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.repeats)))
        return 0

    from lrn_cli.runs import environment

    rounds = []
    for i in range(a.rounds):
        order = ("tuned", "user") if i % 2 == 0 else ("user", "tuned")
        got = {m: run_child(m, a.repeats) for m in order}
        assert got["tuned"]["tuned"] and not got["user"]["tuned"], "a process ran with the wrong malloc setting"
        rounds.append(got)
        print(f"round {i + 1}/{a.rounds} done", file=sys.stderr)
    rows = []
    for key in rounds[0]["tuned"]["layers"]:
        tuned = [r["tuned"]["layers"][key] for r in rounds]
        user = [r["user"]["layers"][key] for r in rounds]
        region, shape, impl = key.split()
        rows.append({"region": region, "shape": [int(s) for s in shape.split("x")], "impl": impl,
                     "tuned_ms": statistics.median(tuned), "user_ms": statistics.median(user),
                     "paired_ratio": statistics.median(u / t for u, t in zip(user, tuned)),
                     "ratios": [u / t for u, t in zip(user, tuned)]})
    steps = {}
    for v in ("ours", "identity"):
        tuned = [r["tuned"]["steps"][v] for r in rounds]
        user = [r["user"]["steps"][v] for r in rounds]
        steps[v] = {"tuned_ms": statistics.median(tuned), "user_ms": statistics.median(user),
                    "paired_ratio": statistics.median(u / t for u, t in zip(user, tuned))}
    for mode in ("tuned", "user"):
        steps[f"lrn_overhead_{mode}"] = statistics.median(r[mode]["steps"]["ours"] / r[mode]["steps"]["identity"]
                                                          for r in rounds) - 1
    fused = [r for r in rows if r["impl"] == "fused"]
    met = all(r["paired_ratio"] <= GOAL for r in fused)
    result = {"env": environment(int(os.environ.get("THREADS", "2")), "cpu"), "rounds": a.rounds,
              "repeats": a.repeats, "goal": GOAL, "met": met, "layers": rows, "cifar10_full_step": steps}

    print(f"fused forward+backward and torch's layer: a user's loop (no malloc tuning) against lrn train's "
          f"process, {a.rounds} rounds of two fresh processes, paired ratio (median over rounds)")
    print(f"{'region':7} {'shape':16} {'impl':6} {'lrn train ms':>12} {'user ms':>9} {'user/train':>10}  per round")
    for r in rows:
        print(f"{r['region']:7} {'x'.join(map(str, r['shape'])):16} {r['impl']:6} {r['tuned_ms']:12.2f} "
              f"{r['user_ms']:9.2f} {r['paired_ratio']:9.2f}x  " + " ".join(f"{x:.2f}" for x in r["ratios"]))
    s = steps
    print(f"cifar10_full step (batch 128): lrn train {s['ours']['tuned_ms']:.1f} ms, user {s['ours']['user_ms']:.1f} ms "
          f"({s['ours']['paired_ratio']:.2f}x); LRN overhead over identity: lrn train "
          f"{100 * s['lrn_overhead_tuned']:+.1f}%, user {100 * s['lrn_overhead_user']:+.1f}%")
    print(f"goal: fused user/train <= {GOAL} at every shape: {'met' if met else 'MISSED'}")
    if a.json:
        a.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
