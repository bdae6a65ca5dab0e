"""Helpers the built-in schedulers share, and plug-ins may use: every GPU of the cluster, a rollout tp that
fits, contiguous chunks, and the rollout-engine parameters (`RolloutParams`).

Pure functions of a `ClusterView` and plain numbers. Left out: any policy; each scheduler decides where
things go.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from sim.schedulers.base import SchedulerParams
from sim.schedulers.views import ClusterView, RolloutBatch, Slot


class RolloutParams(SchedulerParams):
    """Rollout-engine parameters shared by the built-in schedulers (each sets its own memory default)."""

    tp: int | None = Field(None, ge=1, description="rollout tensor-parallel degree; default: smallest that fits")
    # a dedicated rollout engine uses vLLM's default memory fraction (vLLM EngineArgs: 0.9)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    # "useful" KV cache when choosing tp: room for this many full-length sequences (assumption)
    min_kv_sequences: int = Field(16, ge=1)

    def rollout_tp(self, view: ClusterView, batch: RolloutBatch) -> int:
        """The configured tp, or the smallest that holds the model and a useful KV cache."""
        seq_len = int(batch.prompt_tokens.max(initial=0)) + batch.max_response_tokens
        return self.tp or choose_tp(view, self.gpu_memory_utilization, self.min_kv_sequences * seq_len)


def all_slots(view: ClusterView) -> list[Slot]:
    """Every GPU of the cluster, node by node."""
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
