"""Scheduler actions during generation (sim/schedulers/actions.py), here `ScaleOut`: a replica started mid-phase
takes the waiting samples handed to it, computes them, and no sample is lost or generated twice.

A test scheduler (serverful, verl's placement on half the GPUs) scales out once onto the idle half, with
the queued samples of the busiest replica; the run is compared with the same scheduler never scaling out.
"""

from __future__ import annotations

import numpy as np
import pytest

from helpers import experiment
from sim.schedulers.base import GenerationPlan, ReplicaSpec, ScaleOut, Slot
from sim.schedulers.testing import registered
from sim.schedulers.verl import Verl, VerlParams
from sim.simulation import simulate


class GrowParams(VerlParams):
    scale_out: bool = True


class Grow(Verl):
    """Rollout on GPU 0 only; at the first completion, a replica on GPU 1 takes half of GPU 0's queue."""

    name = "test-grow"
    Params = GrowParams
    params: GrowParams
    observes_generation = True

    def __init__(self, params: GrowParams, rng: np.random.Generator):
        super().__init__(params, rng)
        self.moved: tuple[int, ...] = ()
        self.replicas_seen: list[int] = []

    def plan_generation(self, view, batch):
        spec = ReplicaSpec((Slot(0, 0),), gpu_memory_utilization=self.params.gpu_memory_utilization)
        return GenerationPlan(replicas=(spec,), assignment=np.zeros(batch.num_samples, dtype=np.int64))

    def on_generation_event(self, view, progress):
        self.replicas_seen.append(len(progress.assigned))
        if not self.params.scale_out or self.moved:
            return []
        queued = progress.unfinished(0)[progress.running[0] :]  # the waiting ones, after the running ones
        self.moved = queued[len(queued) // 2 :]
        spec = ReplicaSpec((Slot(0, 1),), gpu_memory_utilization=self.params.gpu_memory_utilization)
        return [ScaleOut(spec, self.moved)]


def run(scale_out: bool, trace):
    cfg = experiment({
        "name": "grow", "seed": 0, "iterations": 1, "model": "qwen2.5-0.5b",
        "workload": {"trace": str(trace), "samples_per_prompt": 4, "max_response_tokens": 512},
        "cluster": {"nodes": 1, "gpus_per_node": 2, "gpu": "L40S"},
        "engine": {"max_num_seqs": 4},  # a short batch: most samples wait in the queue
        "scheduler": {"name": Grow.name, "params": {"scale_out": scale_out, "tp": 1}},
    })  # fmt: skip
    schedulers = []
    orig = Grow.__init__

    def keep(self, *a):
        orig(self, *a)
        schedulers.append(self)

    with registered(Grow), pytest.MonkeyPatch.context() as mp:
        mp.setattr(Grow, "__init__", keep)
        result = simulate(cfg)
    return result, schedulers[-1]


LENGTHS = [40 + 13 * k for k in range(24)]  # 6 prompts x 4 samples, all different


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    path = tmp_path_factory.mktemp("grow") / "trace.csv"
    rows = ["iteration,prompt_id,sample_id,prompt_tokens,response_tokens"]
    rows += [f"0,{k // 4},{k % 4},100,{n}" for k, n in enumerate(LENGTHS)]
    path.write_text("\n".join(rows) + "\n")
    return run(True, path), run(False, path)


def test_a_scaled_out_replica_takes_the_samples_it_was_given_and_computes_them(runs):
    (grown, sched), _ = runs
    assert len(sched.moved) > 0
    gpu1 = [a for a in grown.activities if a["role"] == "rollout" and a["slots"] == "n0g1"]
    assert gpu1, "the new replica computed nothing"
    assert grown.summary["rollout_replicas"] == 2
    # it appears in later progress snapshots as replica 1
    assert sched.replicas_seen[0] == 1 and max(sched.replicas_seen) == 2
    # the moved samples finished after the new replica started, while it was computing
    start = min(a["start_s"] for a in gpu1)
    end = max(a["end_s"] for a in gpu1)
    finish = grown.completion_s[0]
    assert all(start <= finish[s] <= end + 1e-9 for s in sched.moved)


def test_scale_out_conserves_the_work_and_shortens_generation(runs):
    (grown, _), (alone, _) = runs
    for result in (grown, alone):
        np.testing.assert_array_equal(result.generated[0], LENGTHS)  # every sample generated once, in full
        assert np.isfinite(result.completion_s[0]).all()
    assert max(grown.completion_s[0]) < max(alone.completion_s[0])
