"""A length-unaware serverless baseline: fixed functions per phase, round-robin prompts, platform keep-alive.

Each phase invokes a fixed number of GPUs' worth of function instances (by default the same split verl
uses: every GPU for each phase), prompts are spread round-robin over the rollout replicas, and the
platform's keep-alive decides what stays warm. It separates the gains of serverless billing alone from
those of a smarter serverless scheduler.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from sim.errors import PlanError
from sim.schedulers.base import Scheduler
from sim.schedulers.helpers import RolloutParams, all_slots
from sim.schedulers.plans import GenerationPlan, InferencePlan, ReplicaSpec, RolePlan, TrainingPlan
from sim.schedulers.registry import register
from sim.schedulers.views import ClusterView, InferenceWork, RolloutBatch, Slot, TrainingWork


class ServerlessParams(RolloutParams):
    generation_gpus: int | None = Field(None, ge=1, description="GPUs of rollout functions; default: all")
    inference_gpus: int | None = Field(None, ge=1, description="GPUs per inference role; default: all")
    training_gpus: int | None = Field(None, ge=1, description="GPUs of the trainer; default: all")
    roles_in_parallel: bool = Field(False, description="run inference roles at once on disjoint GPUs")


def first_slots(view: ClusterView, n: int | None) -> list[Slot]:
    slots = all_slots(view)
    if n is None:
        return slots
    if n > len(slots):
        raise PlanError(f"scheduler.params: asked for {n} GPUs; the cluster has {len(slots)}")
    return slots[:n]


@register
class Serverless(Scheduler[ServerlessParams]):
    name = "serverless"
    deployment = "serverless"
    observes_generation = False

    def plan_generation(self, view: ClusterView, batch: RolloutBatch) -> GenerationPlan:
        p = self.params
        tp = p.rollout_tp(view, batch)
        slots = first_slots(view, p.generation_gpus)
        per_node: dict[int, list[Slot]] = {}
        for s in slots:
            per_node.setdefault(s.node, []).append(s)
        replicas = []
        for node_slots in per_node.values():
            for k in range(0, len(node_slots) - tp + 1, tp):
                replicas.append(ReplicaSpec(tuple(node_slots[k : k + tp]), gpu_memory_utilization=p.gpu_memory_utilization))
        if not replicas:
            raise PlanError(f"scheduler.params.tp: no rollout replica of tp={tp} fits in {len(slots)} GPUs of a node")
        assignment = np.asarray(batch.sample_prompt, dtype=np.int64) % len(replicas)  # round-robin by prompt
        return GenerationPlan(replicas=tuple(replicas), assignment=assignment)

    def plan_inference(self, view: ClusterView, work: InferenceWork) -> InferencePlan:
        p = self.params
        slots = first_slots(view, p.inference_gpus)
        if p.roles_in_parallel:
            k = len(work.roles)
            share = max(1, len(slots) // k)
            groups = [tuple(slots[i * share : (i + 1) * share]) or tuple(slots[-1:]) for i in range(k)]
            return InferencePlan(roles=tuple(RolePlan(r, (g,)) for r, g in zip(work.roles, groups)), sequential=False)
        return InferencePlan(roles=tuple(RolePlan(r, (tuple(slots),)) for r in work.roles), sequential=True)

    def plan_training(self, view: ClusterView, work: TrainingWork) -> TrainingPlan:
        p = self.params
        group = tuple(first_slots(view, p.training_gpus))
        return TrainingPlan(groups={m: group for m in work.models}, sequential=True)
