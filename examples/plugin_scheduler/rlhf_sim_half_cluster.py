"""half_cluster: a serverless scheduler, shipped as a plug-in, that runs rollout on part of the cluster only."""

from __future__ import annotations

from pydantic import Field

from sim.schedulers.base import (
    ClusterView, GenerationPlan, InferencePlan, InferenceWork, PlanError, ReplicaSpec, RolePlan,
    RolloutBatch, Scheduler, SchedulerParams, Slot, TrainingPlan, TrainingWork,
)  # fmt: skip


class HalfClusterParams(SchedulerParams):  # SchedulerParams: unknown keys refused, immutable
    rollout_fraction: float = Field(0.5, gt=0, le=1, description="share of the GPUs that run rollout")
    tp: int = Field(1, ge=1, description="GPUs per rollout replica (tensor-parallel degree)")


class HalfCluster(Scheduler[HalfClusterParams]):
    """Rollout functions on the first `rollout_fraction` of the GPUs; inference and training on all of them."""

    name = "half_cluster"
    deployment = "serverless"
    observes_generation = False  # no on_generation_event: the plan is never changed mid-phase

    def plan_generation(self, view: ClusterView, batch: RolloutBatch) -> GenerationPlan:
        p = self.params  # a HalfClusterParams: Scheduler[HalfClusterParams] types it and sets Params
        per_node = view.gpus_per_node // p.tp  # replicas that fit on one node
        if per_node == 0:
            raise PlanError(f"scheduler.params.tp: {p.tp} exceeds cluster.gpus_per_node={view.gpus_per_node}")
        wanted = max(1, int(p.rollout_fraction * view.nodes * view.gpus_per_node) // p.tp)
        replicas = tuple(
            ReplicaSpec(tuple(Slot(k // per_node, (k % per_node) * p.tp + g) for g in range(p.tp)))
            for k in range(min(wanted, per_node * view.nodes))
        )
        assignment = batch.sample_prompt % len(replicas)  # round-robin by prompt: a GRPO group stays together
        return GenerationPlan(replicas=replicas, assignment=assignment)

    def plan_inference(self, view: ClusterView, work: InferenceWork) -> InferencePlan:
        every = tuple(Slot(n, g) for n in range(view.nodes) for g in range(view.gpus_per_node))
        return InferencePlan(roles=tuple(RolePlan(role, (every,)) for role in work.roles), sequential=True)

    def plan_training(self, view: ClusterView, work: TrainingWork) -> TrainingPlan:
        every = tuple(Slot(n, g) for n in range(view.nodes) for g in range(view.gpus_per_node))
        return TrainingPlan(groups={model: every for model in work.models}, sequential=True)
