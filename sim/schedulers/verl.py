"""verl (HybridFlow) colocated baseline: every phase in turn on the same GPUs, billed for the whole run.

Generation runs as data-parallel vLLM replicas over all GPUs, each getting an equal contiguous chunk of
the samples (verl's `DataProto.chunk`; a prompt's samples are adjacent, so groups mostly stay
together). The tensor-parallel degree defaults to the smallest power of two that holds the model and a
useful KV cache. Inference roles and training then run FSDP over all GPUs, one after another, and each
iteration pays a reshard of the actor weights from FSDP into the rollout engine.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from sim.schedulers.base import (
    ClusterView,
    GenerationPlan,
    InferencePlan,
    PlanError,
    InferenceWork,
    RolePlan,
    RolloutBatch,
    ReplicaSpec,
    Scheduler,
    Slot,
    TrainingPlan,
    TrainingWork,
    register,
)


class RolloutParams(BaseModel):
    """Rollout-engine parameters shared by the built-in schedulers (each sets its own memory default)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False)  # no .inf/.nan

    tp: int | None = Field(None, ge=1, description="rollout tensor-parallel degree; default: smallest that fits")
    # a dedicated rollout engine uses vLLM's default memory fraction (vLLM EngineArgs: 0.9)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    # "useful" KV cache when choosing tp: room for this many full-length sequences (assumption)
    min_kv_sequences: int = Field(16, ge=1)

    def rollout_tp(self, view: ClusterView, batch: RolloutBatch) -> int:
        """The configured tp, or the smallest that holds the model and a useful KV cache."""
        seq_len = int(batch.prompt_tokens.max(initial=0)) + batch.max_response_tokens
        return self.tp or choose_tp(view, self.gpu_memory_utilization, self.min_kv_sequences * seq_len)


class VerlParams(RolloutParams):
    # verl example examples/grpo_trainer/run_qwen2-7b.sh sets rollout gpu_memory_utilization=0.6
    # (calibration.md section 2.1): the rest of the GPU holds the colocated FSDP state.
    gpu_memory_utilization: float = Field(0.6, gt=0, le=1)
    # fixed per-iteration cost of switching the hybrid engine between trainer and rollout mode (vLLM
    # wake/sleep, cache re-allocation); no public figure found, assumption documented in docs/model.md
    mode_switch_s: float = Field(2.0, ge=0)


def all_slots(view: ClusterView) -> list[Slot]:
    return [Slot(n, g) for n in range(view.nodes) for g in range(view.gpus_per_node)]


def choose_tp(view: ClusterView, memory_fraction: float, min_tokens: int) -> int:
    """Smallest power-of-two tp (dividing the node) whose replica holds the model and min_tokens of KV."""
    tp = 1
    while tp <= view.gpus_per_node:
        if view.gpus_per_node % tp == 0 and view.kv_capacity_tokens(tp, memory_fraction) >= min_tokens:
            return tp
        tp *= 2
    return view.gpus_per_node


def contiguous_chunks(n_items: int, n_chunks: int) -> np.ndarray:
    """Chunk index per item for n_chunks near-equal contiguous chunks (numpy.array_split order)."""
    return (np.arange(n_items) * n_chunks) // max(n_items, 1) if n_items else np.zeros(0, dtype=np.int64)


@register
class Verl(Scheduler):
    name = "verl"
    deployment = "serverful"
    Params = VerlParams
    observes_generation = False

    def plan_generation(self, view: ClusterView, batch: RolloutBatch) -> GenerationPlan:
        p: VerlParams = self.params  # type: ignore[assignment]
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
        p: VerlParams = self.params  # type: ignore[assignment]
        return TrainingPlan(
            groups={m: group for m in work.models}, sequential=True, colocated_rollout=True, mode_switch_s=p.mode_switch_s
        )
