"""sim.schedulers.testing: the builders give what a run gives, and keep their own inputs consistent.

The reference is a real run: a scheduler registered for the test records the ClusterView the simulator
hands it at the start of the first iteration, and `cluster_view()` with the same cluster must agree with it.
"""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from helpers import experiment
from sim.schedulers import registry
from sim.schedulers.base import StartCost
from sim.schedulers.rlhfless import RLHFless
from sim.schedulers.serverless import Serverless
from sim.schedulers.testing import (
    cluster_view,
    generation_progress,
    iteration_stats,
    registered,
    rollout_batch,
    scheduler,
)
from sim.simulation import simulate


class Records(Serverless):
    name = "test-records-view"
    views: list = []

    def plan_generation(self, view, batch):
        type(self).views.append(view)
        return super().plan_generation(view, batch)


@pytest.mark.parametrize("deployment", ["serverless", "serverful"])
def test_cluster_view_is_the_view_a_run_gives_on_a_bare_cluster(deployment):
    Records.views = []
    Records.deployment = deployment
    cfg = experiment({
        "name": "v", "seed": 0, "iterations": 1, "model": "qwen2.5-1.5b",
        "workload": {"dataset": "gsm8k", "prompts_per_iteration": 4, "samples_per_prompt": 2, "max_response_tokens": 64},
        "cluster": {"nodes": 2, "gpus_per_node": 4, "gpu": "H100-SXM"},
        "scheduler": {"name": Records.name},
    })  # fmt: skip
    try:
        with registered(Records):
            simulate(cfg)
    finally:
        Records.deployment = "serverless"
    real = Records.views[0]
    mine = cluster_view(nodes=2, gpus_per_node=4, gpu="H100-SXM", model="qwen2.5-1.5b", deployment=deployment)
    for name in ("nodes", "gpus_per_node", "gpu", "actor", "reference", "critic", "reward", "algorithm", "deployment",
                 "free_slots", "max_num_seqs", "kv_watermark", "learner_node", "inference_roles", "trained_models", "iteration",
                 "gpu_sharing", "startup_s", "iterations", "dynamic_sampling"):  # fmt: skip
        assert getattr(mine, name) == getattr(real, name), name
    for tp, fraction in ((1, 0.9), (2, 0.6), (4, 0.9)):
        assert mine.kv_capacity_tokens(tp, fraction) == real.kv_capacity_tokens(tp, fraction)
    assert mine.nodes_by_distance(1) == real.nodes_by_distance(1)
    assert mine.transfer_s(0, 1, 1e9) == real.transfer_s(0, 1, 1e9) and mine.transfer_s(0, 0, 1e9) == real.transfer_s(0, 0, 1e9)
    rep_mine, rep_real = mine.perf.replica(mine.actor, 2), real.perf.replica(real.actor, 2)
    assert rep_mine.decode_coeffs(8) == rep_real.decode_coeffs(8)


def test_start_costs_given_as_a_list_repeat_the_last():
    view = cluster_view(start_s=[StartCost(0.0, "resident"), StartCost(30.0, "cold")])
    assert [c.kind for c in view.start_s("rollout", 1, 4, None)] == ["resident", "cold", "cold", "cold"]
    assert cluster_view().start_s("rollout", 1, 2, None) == (StartCost(0.0, "resident"),) * 2


def test_rollout_batch_keeps_each_prompts_samples_adjacent_and_checks_lengths():
    batch = rollout_batch(prompts=3, samples_per_prompt=2, prompt_tokens=[10, 20, 30])
    assert batch.sample_prompt.tolist() == [0, 0, 1, 1, 2, 2] and batch.num_samples == 6
    assert batch.prompt_tokens[batch.sample_prompt].tolist() == [10, 10, 20, 20, 30, 30]
    assert batch.true_response_tokens is None
    with pytest.raises(ValueError, match="prompt_tokens: 2 entries for 3 prompts"):
        rollout_batch(prompts=3, prompt_tokens=[1, 2])
    with pytest.raises(ValueError, match="true_response_tokens: 1 entries for 8 samples"):
        rollout_batch(prompts=2, true_response_tokens=[5])


def test_generation_progress_defaults_are_consistent():
    p = generation_progress(queues=[(1, 2, 3), (), (7,)], done=[5, 8, 0], max_num_seqs=4)
    assert p.assigned == (8, 8, 1) and p.running == (3, 0, 1) and p.waiting == (0, 0, 0)
    assert p.free_slots == (1, 4, 3) and p.released == (False,) * 3 and p.ready == (True,) * 3
    assert p.unfinished(0) == (1, 2, 3) and p.unfinished(9) == () and p.context_tokens(7) == 100
    q = generation_progress(queues=[(1, 2, 3)], running=[1], contexts={1: 10, 2: 20, 3: 30})
    assert q.waiting == (2,) and [q.context_tokens(s) for s in q.unfinished(0)] == [10, 20, 30]
    with pytest.raises(ValueError, match="one entry per replica"):
        generation_progress(queues=[(1,), (2,)], done=[0])


def test_scheduler_validates_params_as_an_experiment_file_would():
    s = scheduler(RLHFless, tau=0.5, prewarm=False)
    assert s.params.tau == 0.5 and isinstance(s.rng, np.random.Generator)
    with pytest.raises(ValidationError, match="taau"):
        scheduler(RLHFless, taau=0.5)
    with pytest.raises(ValidationError, match="tau"):
        scheduler(RLHFless, tau=1.5)


def test_iteration_stats_feed_on_iteration_end():
    s = scheduler(RLHFless, prewarm=False)
    batch = rollout_batch(prompts=2, samples_per_prompt=2)
    s.plan_generation(cluster_view(), batch)
    s.on_iteration_end(iteration_stats(batch, [100, 300, 50, 50]))
    np.testing.assert_allclose(s.predictions(batch), [200.0, 50.0])
    with pytest.raises(ValueError, match="3 entries for 4 samples"):
        iteration_stats(batch, [1, 2, 3])


def test_registered_is_selectable_inside_the_block_only():
    assert registry.lookup(Records.name) is None
    with registered(Records):
        assert registry.lookup(Records.name) is Records
        assert registry.resolve(Records.name, "exp.yaml: scheduler.name") is Records
    assert registry.lookup(Records.name) is None
    with pytest.raises(Exception, match="exp.yaml: scheduler.name: unknown scheduler 'test-records-view'"):
        registry.resolve(Records.name, "exp.yaml: scheduler.name")
