"""Weight sync (sim/phases/weight_sync.py): the duration of each path against its formula from the
cluster's bandwidths and the actor's bytes, and the GPUs it keeps busy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sim.build import Run, build
from sim.catalog import load_catalog
from sim.phases.weight_sync import run_weight_sync
from sim.schedulers.base import GenerationPlan, ReplicaSpec, Slot, TrainingPlan

from helpers import experiment

INTRA = 200e9  # bytes/s, GPU <-> node switch
INTER = 20e9  # bytes/s, node <-> node
EFF = 0.8  # perf.network_efficiency
BASE = {
    "name": "t", "seed": 0, "iterations": 1, "model": "qwen2.5-3b",
    "workload": {"dataset": "gsm8k", "prompts_per_iteration": 4, "samples_per_prompt": 2, "max_response_tokens": 256},
    "cluster": {"nodes": 3, "gpus_per_node": 4, "gpu": "H100-SXM",
                "intra_node_bandwidth_bytes_per_s": INTRA, "inter_node_bandwidth_bytes_per_s": INTER},
    "perf": {"network_efficiency": EFF},
    "platform": {"kind": "serverful"},
    "scheduler": {"name": "verl"},
}  # fmt: skip


def built(**over) -> Run:
    return build(experiment(BASE, **over), Path("."), load_catalog())


def node(n: int, gpus: int = 4) -> tuple[Slot, ...]:
    return tuple(Slot(n, g) for g in range(gpus))


def sync(run: Run, tplan: TrainingPlan, gplan: GenerationPlan | None, rollout_tp: int = 1) -> float:
    """Run the weight sync alone on a fresh run; its duration."""
    env = run.ctx.env
    env.run(until=env.process(run_weight_sync(run.ctx, 0, tplan, gplan, rollout_tp)))
    return env.now


def plan_on(*replicas: tuple[Slot, ...]) -> GenerationPlan:
    return GenerationPlan(replicas=tuple(ReplicaSpec(r) for r in replicas), assignment=np.zeros(0, dtype=np.int64))


@pytest.mark.parametrize("tp", [1, 2, 4])
def test_colocated_reshard_gathers_each_tp_shard_over_the_ring_plus_the_mode_switch(tp):
    run = built()
    nbytes = run.ctx.actor.weight_bytes
    n = 4
    dur = sync(run, TrainingPlan({"actor": node(0)}, colocated_rollout=True, mode_switch_s=1.5), plan_on(node(0)), tp)
    assert dur == pytest.approx(1.5 + nbytes / tp * (n - 1) / n / (INTRA * EFF))
    busy = run.ctx.recorder.activities
    assert [(a.phase, a.slots) for a in busy] == [("weight_sync", node(0))]


def test_colocated_reshard_across_nodes_runs_at_the_inter_node_link():
    run = built()
    nbytes = run.ctx.actor.weight_bytes
    trainer = node(0) + node(1)
    dur = sync(run, TrainingPlan({"actor": trainer}, colocated_rollout=True), plan_on(node(0), node(1)), 2)
    assert dur == pytest.approx(nbytes / 2 * 7 / 8 / (min(INTRA, INTER) * EFF))


def test_colocated_on_one_gpu_costs_only_the_mode_switch():
    run = built()
    assert sync(run, TrainingPlan({"actor": node(0, 1)}, colocated_rollout=True, mode_switch_s=0.7), plan_on(node(0, 1)), 1) == 0.7


def test_separate_serverful_engines_get_one_copy_per_node_the_farthest_node_sets_the_time():
    run = built()
    nbytes = run.ctx.actor.weight_bytes
    # replicas beside the trainer only: a GPU-to-GPU copy inside the node
    assert sync(run, TrainingPlan({"actor": node(0, 2)}), plan_on(node(0)[2:])) == pytest.approx(nbytes / (INTRA * EFF))
    run = built()
    dur = sync(run, TrainingPlan({"actor": node(0, 2)}), plan_on(node(0)[2:], node(1), node(2)))
    assert dur == pytest.approx(nbytes / (min(INTRA, INTER) * EFF))
    # the busy GPUs: every replica's and the trainer's, once
    (act,) = run.ctx.recorder.activities
    assert len(act.slots) == len(set(act.slots)) and set(act.slots) == set(node(0) + node(1) + node(2))
    assert run.ctx.recorder.counters[(0, "weight_sync")]["bytes"] == nbytes


def test_serverless_learner_writes_host_memory_and_pushes_to_resident_instances():
    run = built(platform={"kind": "serverless"}, scheduler={"name": "serverless"})
    ctx = run.ctx
    nbytes = ctx.actor.weight_bytes
    host = ctx.gpu.host_to_gpu_bandwidth_bytes_per_s
    # nothing resident serves the actor's weights: only the write of each trainer GPU's shard to host memory
    trainer = node(0, 2)
    assert sync(run, TrainingPlan({"actor": trainer}), None) == pytest.approx(nbytes / 2 / (host * EFF))

    # a resident idle rollout instance on node 2 gets the weights pushed over the network
    run = built(platform={"kind": "serverless"}, scheduler={"name": "serverless"})
    ctx, env = run.ctx, run.ctx.env
    spec = ctx.roles.spec("rollout", 1, None, 0.9)
    lease = env.run(until=ctx.alloc.acquire(spec, (Slot(2, 0),)))
    ctx.alloc.end(lease)  # work done: resident, idle
    assert lease.node == 2
    t0 = env.now
    env.run(until=env.process(run_weight_sync(ctx, 0, TrainingPlan({"actor": trainer}), None, 1)))
    expected = max(nbytes / 2 / (host * EFF), nbytes / (min(INTRA, INTER) * EFF))
    assert env.now - t0 == pytest.approx(expected)
    owners = {a.owner for a in ctx.recorder.activities if a.phase == "weight_sync"}
    assert owners == {lease.owner}
