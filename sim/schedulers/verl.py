"""verl (HybridFlow) colocated baseline: every phase in turn on the same GPUs, billed for the whole run.

Generation runs as data-parallel vLLM replicas over all GPUs, each getting an equal contiguous chunk of
the samples (verl's `DataProto.chunk`; a prompt's samples are adjacent, so groups mostly stay
together). The tensor-parallel degree defaults to the smallest power of two that holds the model and a
useful KV cache. Inference roles and training then run FSDP over all GPUs, one after another, and each
iteration pays a reshard of the actor weights from FSDP into the rollout engine.
"""

from __future__ import annotations

from pydantic import Field

from sim.errors import PlanError
from sim.schedulers.base import Scheduler
from sim.schedulers.helpers import RolloutParams, all_slots, choose_tp, contiguous_chunks  # noqa: F401 (choose_tp re-exported)
from sim.schedulers.plans import GenerationPlan, InferencePlan, ReplicaSpec, RolePlan, TrainingPlan
from sim.schedulers.registry import register
from sim.schedulers.views import ClusterView, InferenceWork, RolloutBatch, TrainingWork


class VerlParams(RolloutParams):
    # verl example examples/grpo_trainer/run_qwen2-7b.sh sets rollout gpu_memory_utilization=0.6
    # (calibration.md section 2.1): the rest of the GPU holds the colocated FSDP state.
    gpu_memory_utilization: float = Field(0.6, gt=0, le=1)
    # fixed per-iteration cost of switching the hybrid engine between trainer and rollout mode (vLLM
    # wake/sleep, cache re-allocation); no public figure found, assumption documented in docs/model.md
    mode_switch_s: float = Field(2.0, ge=0)


@register
class Verl(Scheduler[VerlParams]):
    name = "verl"
    deployment = "serverful"
    observes_generation = False

    def plan_generation(self, view: ClusterView, batch: RolloutBatch) -> GenerationPlan:
        p = self.params
        tp = p.rollout_tp(view, batch)
        if view.gpus_per_node % tp:
            raise PlanError(f"scheduler.params.tp: {tp} must divide gpus_per_node={view.gpus_per_node}")
        slots = all_slots(view)
        replicas = tuple(
            ReplicaSpec(tuple(slots[i : i + tp]), gpu_memory_utilization=p.gpu_memory_utilization)
            for i in range(0, len(slots), tp)
        )
        assignment = contiguous_chunks(batch.num_samples, len(replicas))
        return GenerationPlan(replicas=replicas, assignment=assignment, prefix_dedup=False)

    def plan_inference(self, view: ClusterView, work: InferenceWork) -> InferencePlan:
        group = tuple(all_slots(view))
        return InferencePlan(roles=tuple(RolePlan(role, (group,)) for role in work.roles), sequential=True)

    def plan_training(self, view: ClusterView, work: TrainingWork) -> TrainingPlan:
        group = tuple(all_slots(view))
        p = self.params
        return TrainingPlan(
            groups={m: group for m in work.models}, sequential=True, colocated_rollout=True, mode_switch_s=p.mode_switch_s
        )
