"""Prefix dedup (RLHFless): one prefill actor computes the prompts' shared prefixes once, and each decode
replica receives their KV over the topology before it starts decoding.

`dedup_scope` "template" shares only the chat template every prompt starts with; "prompt" shares each
distinct prompt of a GRPO group (its samples repeat it). The replicas skip the cached prefix of their
samples (`SeqTable.cached_prefix`); a replica that crashes loses the KV shipped to it and prefills those
samples again itself. A crash of the prefill actor redoes the prefill on a new instance. Left out: the
attention-pair savings of overlapping (non-identical) prompt prefixes beyond the template.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import numpy as np
import simpy

from sim.resources.leases import Hold
from sim.schedulers.plans import GenerationPlan

if TYPE_CHECKING:
    from sim.rollout.phase import GenerationPhase


class DedupPrefill:
    """The prefill actor of one generation round: asks for its GPUs when built, then runs as a process."""

    def __init__(self, phase: GenerationPhase, plan: GenerationPlan, per_replica: list[np.ndarray]):
        self.phase = phase
        self.tokens = 0  # prompt tokens the prefill actor prefilled
        self.would: int | None = None  # prompt tokens the replicas would have prefilled without dedup (set when done)
        spec = plan.prefill
        assert spec is not None
        fraction = phase.ctx.cfg.engine.gpu_memory_utilization or spec.gpu_memory_utilization
        self.hold = Hold(phase.alloc, phase.ctx.roles.spec("prefill", spec.tp, None, fraction), spec.slots, on_crash=self._crashed)
        self.hold.request()
        self.process = phase.env.process(self._run(plan, per_replica))

    def _crashed(self, _lease) -> None:
        if self.process.is_alive:
            self.process.interrupt("crash")

    def _run(self, plan: GenerationPlan, per_replica: list[np.ndarray]) -> Iterator:
        """Compute the shared prefixes once; each decode replica receives their KV, then starts."""
        phase = self.phase
        ctx, table, env, hold = phase.ctx, phase.table, phase.env, self.hold
        template = phase.template_tokens
        prompts = np.asarray(table.prompt_tokens, dtype=np.int64)
        groups = np.asarray(table.group, dtype=np.int64)
        # what the decode replicas would prefill without dedup: each distinct prompt once per replica
        would = 0
        for idx in per_replica:
            if len(idx):
                _, first = np.unique(groups[idx], return_index=True)
                would += int(prompts[idx][first].sum())
        _, first_all = np.unique(groups, return_index=True)
        distinct = prompts[first_all]
        if plan.dedup_scope == "template":
            shared = np.minimum(prompts, template)
            tokens, pairs = float(template), template * template / 2.0
        else:
            shared = prompts
            rest = np.maximum(distinct - template, 0).astype(np.float64)
            tokens = float((min(template, int(distinct.min())) if len(distinct) else 0) + rest.sum())
            pairs = template * template / 2.0 + float((rest * (template + rest / 2.0)).sum())
        for s_idx, v in enumerate(shared.tolist()):
            table.cached_prefix[s_idx] = int(v)
        compute_s = ctx.perf.replica(ctx.actor, plan.prefill.tp).prefill_s(tokens, pairs)  # type: ignore[union-attr]
        while True:  # a crash of the prefill actor redoes the prefill on a new instance
            lease = yield hold.request()
            start = env.now
            try:
                yield env.timeout(compute_s)
                break
            except simpy.Interrupt:
                ctx.recorder.busy(phase.iteration, "generation", "prefill", lease.slots, start, env.now, lease.owner)
                ctx.recorder.count(phase.iteration, "generation", retries=1.0)
        hold.ignore_crashes()  # the prefix KV is computed: a crash now loses nothing the replicas need
        done_at = env.now
        last = done_at
        kvb = ctx.actor.kv_bytes_per_token
        for rid, idx in enumerate(per_replica):
            if not len(idx):
                phase._kv_arrived(rid)
                continue
            _, first = np.unique(groups[idx], return_index=True)
            nbytes = float(shared[idx][first].sum()) * kvb
            phase.kv_transfer_bytes += nbytes
            dst_node = phase.node_of.get(rid, phase.specs[rid].node)  # placed node, or planned if still starting
            delay = ctx.cluster.gpu_transfer_s(lease.node, dst_node, nbytes)
            last = max(last, done_at + delay)
            env.timeout(delay).callbacks.append(lambda _e, r=rid: phase._kv_arrived(r))
        if last > env.now:
            yield env.timeout(last - env.now)
        ctx.recorder.busy(phase.iteration, "generation", "prefill", lease.slots, start, env.now, lease.owner)
        hold.end()
        self.tokens = int(tokens)
        self.would = would
