"""Plans that run groups at once (sim/schedulers/plans.py `InferencePlan.sequential`, `TrainingPlan.sequential`):
roles or models on disjoint GPUs run concurrently, so their phase lasts as long as the longest, not the sum.

Driven end to end through `simulate` (serverful, so nothing waits for a function to start) with a test
scheduler registered by `sim.schedulers.testing.registered`; every duration is read back from the run's
activities, never assumed.
"""

from __future__ import annotations

import pytest

from helpers import experiment
from sim.schedulers.base import InferencePlan, RolePlan, Slot, TrainingPlan
from sim.schedulers.testing import registered
from sim.schedulers.verl import Verl, VerlParams
from sim.simulation import simulate


class SplitParams(VerlParams):
    parallel: bool = False


class Split(Verl):
    """verl's rollout; inference roles and trained models each on their own GPUs (one after another, or at once)."""

    name = "test-split"
    Params = SplitParams
    params: SplitParams

    def _share(self, view, k: int, n: int) -> tuple[Slot, ...]:
        every = [Slot(node, g) for node in range(view.nodes) for g in range(view.gpus_per_node)]
        per = len(every) // n
        return tuple(every[k * per : (k + 1) * per])

    def plan_inference(self, view, work):
        roles = tuple(RolePlan(r, (self._share(view, k, len(work.roles)),)) for k, r in enumerate(work.roles))
        return InferencePlan(roles=roles, sequential=not self.params.parallel)

    def plan_training(self, view, work):
        groups = {m: self._share(view, k, len(work.models)) for k, m in enumerate(work.models)}
        return TrainingPlan(groups=groups, sequential=not self.params.parallel)


def run(parallel: bool):
    cfg = experiment({
        "name": "plans", "seed": 0, "iterations": 1, "model": "qwen2.5-0.5b",
        "workload": {"dataset": "gsm8k", "algorithm": "ppo", "prompts_per_iteration": 8, "samples_per_prompt": 2, "max_response_tokens": 256},
        "cluster": {"nodes": 1, "gpus_per_node": 4, "gpu": "L40S"},
        "scheduler": {"name": Split.name, "params": {"parallel": parallel, "tp": 1}},
    })  # fmt: skip
    with registered(Split):
        return simulate(cfg)


def spans(result, phase: str) -> tuple[float, dict[str, float]]:
    """(the phase's wall span, each role's own span) from the activities of one iteration."""
    rows = [a for a in result.activities if a["phase"] == phase]
    per: dict[str, tuple[float, float]] = {}
    for a in rows:
        lo, hi = per.get(a["role"], (a["start_s"], a["end_s"]))
        per[a["role"]] = (min(lo, a["start_s"]), max(hi, a["end_s"]))
    return max(a["end_s"] for a in rows) - min(a["start_s"] for a in rows), {r: hi - lo for r, (lo, hi) in per.items()}


@pytest.fixture(scope="module")
def both():
    return run(parallel=False), run(parallel=True)


@pytest.mark.parametrize("phase, roles", [("inference", {"actor_logprob", "reference", "critic"}), ("training", {"actor", "critic"})])
def test_groups_at_once_last_the_longest_and_one_after_another_the_sum(both, phase, roles):
    sequential, parallel = both
    seq_span, seq_roles = spans(sequential, phase)
    par_span, par_roles = spans(parallel, phase)
    assert set(seq_roles) >= roles and set(par_roles) == set(seq_roles)
    assert seq_span == pytest.approx(sum(seq_roles.values()), rel=1e-9)
    assert par_span == pytest.approx(max(par_roles.values()), rel=1e-9)
    # the same work on the same GPUs either way: each role takes as long alone as beside the others
    assert par_roles == pytest.approx(seq_roles, rel=1e-9)
    assert par_span < seq_span


def test_groups_at_once_never_share_a_gpu(both):
    _, parallel = both
    for phase in ("inference", "training"):
        by_role: dict[str, set[str]] = {}
        for a in parallel.activities:
            if a["phase"] == phase:
                by_role.setdefault(a["role"], set()).update(a["slots"].split(";"))
        gpus = [g for s in by_role.values() for g in s]
        assert len(gpus) == len(set(gpus)), by_role
