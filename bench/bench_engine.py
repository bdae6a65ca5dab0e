"""Engine benchmark: prints figures, asserts nothing about time (targets are in the closing notes).

1. SimPy's raw timeout rate on this machine (so every figure can be read as a ratio).
2. Analytic vs step mode on the same rollout: sequences per wall-second, SimPy events, identical times.
3. One whole iteration (all phases) at paper scale: 20 nodes x 8 H100, a 70B model, 1,024 prompts x 8
   samples; and ten times that (200 nodes, 10,240 prompts): wall time and peak memory (tracemalloc).
4. The whole `python -m sim.run` process for the paper-scale experiment, imports included.

Run: python bench/bench_engine.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import simpy

from sim.catalog import load_catalog
from sim.config import load_config
from sim.engine import Replica, SeqTable
from sim.perf.roofline import RooflineModel
from sim.runner import simulate

ROOT = Path(__file__).resolve().parent.parent
LARGE = ROOT / "experiments" / "paper" / "large_scale_verl.yaml"


def simpy_timeout_rate(n: int = 300_000) -> float:
    env = simpy.Environment()

    def proc():
        for _ in range(n):
            yield env.timeout(1)

    env.process(proc())
    t = time.perf_counter()
    env.run()
    return n / (time.perf_counter() - t)


class _Listener:
    def on_completed(self, replica, seqs):
        pass

    def on_migrated_out(self, replica, seqs, kv, dst):
        dst.enqueue(seqs)

    def on_idle(self, replica):
        pass


def rollout(mode: str, n_seqs: int, n_replicas: int, seed: int = 0) -> tuple[float, int, np.ndarray]:
    cat = load_catalog()
    perf = RooflineModel(cat.gpu("H100-SXM")).replica(cat.model("qwen2.5-7b"), 1)
    rng = np.random.default_rng(seed)
    targets = np.minimum(rng.lognormal(np.log(250), 0.7, n_seqs).astype(int) + 1, 2048).tolist()
    prompts = rng.integers(60, 200, n_seqs // 8 + 1)
    groups = [i // 8 for i in range(n_seqs)]
    table = SeqTable([int(prompts[g]) for g in groups], targets, groups)
    env = simpy.Environment()
    reps = [Replica(env, r, perf, table, 400_000, _Listener(), max_num_seqs=1024, step_mode=(mode == "step")) for r in range(n_replicas)]
    chunk = (np.arange(n_seqs) * n_replicas) // n_seqs
    t = time.perf_counter()
    for r, rep in enumerate(reps):
        rep.enqueue(np.flatnonzero(chunk == r).tolist())
    env.run()
    wall = time.perf_counter() - t
    return wall, sum(r.events for r in reps), np.array(table.finish_s)


def one_iteration(prompts: int, nodes: int) -> tuple[float, float, int, int]:
    """Best of three wall times (no tracing), then one traced run for peak Python memory."""
    overrides = [f"workload.prompts_per_iteration={prompts}", f"cluster.nodes={nodes}"]
    pool = load_catalog().dataset("gsm8k").get("num_prompts", 0)
    if prompts > pool:  # a larger pool with GSM8K's length model, so one iteration holds each prompt once
        entry = dict(load_catalog().dataset("gsm8k"), num_prompts=prompts)
        overrides.append("workload.dataset=" + json.dumps(entry))
    cfg = load_config(LARGE, overrides)
    walls = []
    for _ in range(3):
        t = time.perf_counter()
        result = simulate(cfg, LARGE.parent)
        walls.append(time.perf_counter() - t)
    tracemalloc.start()
    simulate(cfg, LARGE.parent)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return min(walls), peak / 1e6, result.summary["engine_events"], int(sum(len(g) for g in result.generated))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="skip the 10x run and the process timing")
    args = ap.parse_args()
    rate = simpy_timeout_rate()
    print(f"SimPy raw timeouts: {rate:,.0f} /s")

    n, reps = 8192, 16
    wa, ea, fa = rollout("analytic", n, reps)
    ws, es, fs = rollout("step", n, reps)
    same = np.allclose(fa, fs, rtol=1e-9, atol=0)
    print(f"rollout {n} seqs on {reps} replicas (qwen2.5-7b, H100):")
    print(f"  analytic: {wa * 1e3:8.1f} ms  {n / wa:12,.0f} seq/s  {ea:9,} events ({ea / n:.2f}/seq)")
    print(f"  step:     {ws * 1e3:8.1f} ms  {n / ws:12,.0f} seq/s  {es:9,} events ({es / n:.2f}/seq)")
    print(f"  ratios: step/analytic wall {ws / wa:.1f}x, events {es / ea:.1f}x; completion times identical to 1e-9: {same}")
    print(f"  analytic events per second of wall time: {ea / wa:,.0f} ({ea / wa / rate:.2f} of raw SimPy rate)")

    for label, prompts, nodes in [("paper scale", 1024, 20)] + ([] if args.quick else [("10x", 10240, 200)]):
        wall, peak_mb, events, seqs = one_iteration(prompts, nodes)
        print(f"one iteration, {label}: {seqs:,} sequences on {nodes * 8:,} GPUs: {wall:.3f} s in-process, "
              f"peak traced memory {peak_mb:.0f} MB, {events:,} engine events ({events / seqs:.2f}/seq)")

    if not args.quick:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "sim.run", str(LARGE), "--out", "/tmp/bench_results", "--quiet"], check=True)
        print(f"python -m sim.run {LARGE.relative_to(ROOT)} (whole process, imports included): {time.perf_counter() - t:.2f} s, "
              f"peak RSS of the child processes {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.0f} MB")
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import sim.run, sim.runner, sim.results"], check=True)
        print(f"  of which imports alone: {time.perf_counter() - t:.2f} s")


if __name__ == "__main__":
    main()
