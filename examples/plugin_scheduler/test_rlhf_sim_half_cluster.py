"""Unit tests of the half_cluster plug-in, without the simulator: `pytest examples/plugin_scheduler`."""

import numpy as np
import pytest

from rlhf_sim_half_cluster import HalfCluster
from sim.schedulers.base import PlanError
from sim.schedulers.testing import cluster_view, inference_work, rollout_batch, scheduler, training_work


def test_rollout_runs_on_the_asked_share_of_the_gpus_and_groups_stay_together():
    view = cluster_view(nodes=2, gpus_per_node=8)  # 16 GPUs
    plan = scheduler(HalfCluster, rollout_fraction=0.25, tp=2).plan_generation(view, rollout_batch(prompts=8))
    assert [r.tp for r in plan.replicas] == [2, 2]  # 4 GPUs: two replicas of tp 2, on node 0
    assert {s.node for r in plan.replicas for s in r.slots} == {0}
    per_prompt = plan.assignment.reshape(8, -1)  # rollout_batch: each prompt's samples are adjacent
    assert (per_prompt == per_prompt[:, :1]).all()


def test_inference_and_training_use_every_gpu():
    view = cluster_view(nodes=2, gpus_per_node=4)
    sched = scheduler(HalfCluster)
    plan = sched.plan_inference(view, inference_work(roles=("actor_logprob", "reference")))
    assert [len(r.groups[0]) for r in plan.roles] == [8, 8]
    assert set(sched.plan_training(view, training_work()).groups) == {"actor"}


def test_a_tp_larger_than_a_node_is_refused_as_bad_input():
    with pytest.raises(PlanError, match="scheduler.params.tp: 16 exceeds"):
        scheduler(HalfCluster, tp=16).plan_generation(cluster_view(gpus_per_node=8), rollout_batch())


def test_unknown_params_are_refused():
    with pytest.raises(ValueError, match="rolout_fraction"):
        scheduler(HalfCluster, rolout_fraction=0.3)
    assert np.isclose(scheduler(HalfCluster).params.rollout_fraction, 0.5)
