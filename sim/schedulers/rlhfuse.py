"""RLHFuse (Zhong et al., NSDI'25, arXiv 2409.13221) as RLHFless compares against it: serverful, verl-like
placement, with a *global* cut-and-migrate of the long tail and sample-level fusion of generation with
inference.

When the number of unfinished samples in the whole batch falls below `migration_threshold` of the batch,
every unfinished sample moves onto as few replicas as can hold them (those already holding the most
unfinished work first); the other replicas stop generating, and their GPUs start the inference of the
finished samples while the tail completes (fluid approximation: the GPU-seconds freed before the end of
generation are taken off the inference phase; docs/schedulers.md). The threshold RLHFuse uses is found
by profiling and is not published: 0.1 is an assumption.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from sim.schedulers.actions import Action, Migrate, Release
from sim.schedulers.plans import InferencePlan
from sim.schedulers.registry import register
from sim.schedulers.verl import Verl, VerlParams
from sim.schedulers.views import ClusterView, GenerationProgress, InferenceWork


class RLHFuseParams(VerlParams):
    # RLHFuse finds its threshold by profiling and does not publish it: 0.1 is an assumption
    migration_threshold: float = Field(0.1, gt=0, lt=1, description="fraction of the batch left unfinished that triggers the cut")
    min_tail_replicas: int = Field(1, ge=1, description="fewest replicas that keep the tail")
    # assumption: room for the migrated samples' contexts to grow while the tail finishes
    kv_headroom: float = Field(1.5, ge=1.0, description="free KV a receiver needs per migrated sample, as a multiple of the mean context now")
    fuse_inference: bool = Field(True, description="fluid fusion of the GPUs freed by the cut with inference")


@register
class RLHFuse(Verl):
    name = "rlhfuse"
    deployment = "serverful"
    Params = RLHFuseParams
    params: RLHFuseParams
    observes_generation = True

    def __init__(self, params: RLHFuseParams, rng: np.random.Generator):
        super().__init__(params, rng)
        self._migrated_iteration = -1

    def on_generation_event(self, view: ClusterView, progress: GenerationProgress) -> list[Action]:
        p = self.params
        if self._migrated_iteration == view.iteration:
            return []
        total = sum(progress.assigned)
        unfinished = total - sum(progress.done)
        if total == 0 or unfinished > p.migration_threshold * total:
            return []
        live = [j for j in range(len(progress.assigned)) if not progress.released[j] and (progress.running[j] or progress.waiting[j])]
        if len(live) <= p.min_tail_replicas:
            return []
        by_load = sorted(live, key=lambda j: (-(progress.running[j] + progress.waiting[j]), j))
        for k in range(p.min_tail_replicas, len(live)):
            tail, sources = by_load[:k], by_load[k:]
            moving = [s for j in sources for s in progress.unfinished(j)]
            need = p.kv_headroom * max(sum(progress.context_tokens(s) for s in moving) / max(len(moving), 1), 1.0)
            caps = {j: min(progress.free_slots[j], int(progress.free_kv_tokens[j] // need)) for j in tail}
            if sum(caps.values()) >= len(moving):
                break
        else:
            return []
        self._migrated_iteration = view.iteration
        actions: list[Action] = []
        for src in sources:
            queue = list(progress.unfinished(src))
            for j in tail:
                if not queue:
                    break
                take, queue = queue[: caps[j]], queue[caps[j] :]
                caps[j] -= len(take)
                if take:
                    actions.append(Migrate(src, j, tuple(take)))
            actions.append(Release(src))
        return actions

    def plan_inference(self, view: ClusterView, work: InferenceWork) -> InferencePlan:
        plan = super().plan_inference(view, work)
        return InferencePlan(roles=plan.roles, sequential=plan.sequential, fuse_with_generation=self.params.fuse_inference)
