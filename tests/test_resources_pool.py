"""The serverful GPU pool (sim/resources/pool.py): a GPU is held by one piece of work at a time; double
booking, unknown GPUs and a GPU listed twice are refused with an error naming the work and the GPU."""

from __future__ import annotations

import pytest

from sim.errors import DoubleBookingError, InternalError
from sim.resources.pool import GpuPool
from sim.schedulers.base import Slot

from helpers import experiment

SLOTS = [Slot(n, g) for n in range(2) for g in range(2)]


def test_a_held_gpu_is_refused_to_other_work_naming_both():
    pool = GpuPool(SLOTS)
    pool.acquire((Slot(0, 0), Slot(0, 1)), "rollout")
    with pytest.raises(DoubleBookingError, match=r"actor_trainer: GPU n0g1 is already held by rollout"):
        pool.acquire((Slot(1, 0), Slot(0, 1)), "actor_trainer")
    # the refused request took nothing
    assert pool.holder[Slot(1, 0)] is None and pool.free() == (Slot(1, 0), Slot(1, 1))


def test_release_makes_gpus_free_again():
    pool = GpuPool(SLOTS)
    pool.acquire((Slot(1, 1),), "reference")
    assert Slot(1, 1) not in pool.free()
    pool.release((Slot(1, 1),))
    assert pool.free() == tuple(SLOTS)
    pool.acquire((Slot(1, 1),), "critic")
    assert pool.holder[Slot(1, 1)] == "critic"


def test_unknown_and_repeated_gpus_are_refused():
    pool = GpuPool(SLOTS)
    with pytest.raises(DoubleBookingError, match="does not exist"):
        pool.acquire((Slot(2, 0),), "rollout")
    with pytest.raises(DoubleBookingError, match="listed twice"):
        pool.acquire((Slot(0, 0), Slot(0, 0)), "rollout")
    assert pool.free() == tuple(SLOTS)
    assert issubclass(DoubleBookingError, InternalError)  # a scheduler bug, not the user's input: exit 1


def test_a_scheduler_plan_that_double_books_fails_the_run_with_the_gpu_named(monkeypatch):
    """End to end: verl's generation plan with two replicas on one GPU is refused by the pool."""
    import numpy as np

    from sim.schedulers.base import GenerationPlan, ReplicaSpec
    from sim.schedulers.verl import Verl
    from sim.simulation import simulate

    def clash(self, view, batch):
        n = len(batch.sample_prompt)
        rep = ReplicaSpec((Slot(0, 0),))
        return GenerationPlan(replicas=(rep, rep), assignment=np.arange(n) % 2)

    monkeypatch.setattr(Verl, "plan_generation", clash)
    cfg = experiment({
        "name": "t", "seed": 0, "iterations": 1, "model": "qwen2.5-0.5b",
        "workload": {"dataset": "gsm8k", "prompts_per_iteration": 2, "samples_per_prompt": 2, "max_response_tokens": 64},
        "cluster": {"nodes": 1, "gpus_per_node": 2, "gpu": "L40S"}, "platform": {"kind": "serverful"}, "scheduler": {"name": "verl"},
    })  # fmt: skip
    with pytest.raises(DoubleBookingError, match="n0g0 is already held by rollout"):
        simulate(cfg)
