"""The rollout phase of one iteration: replicas built from a scheduler's plan, work dispatched, actions applied.

Mechanism only: the plan and the actions come from the scheduler as data; this module checks them
(GPU double booking, memory), carries them out on `sim.engine.Replica` processes, pays KV transfers over
the topology, and fires `done` when the last sample has finished.
"""

from __future__ import annotations

import numpy as np
import simpy

from sim.engine import Replica, SchedulerActionError, SeqTable
from sim.memory import InfeasibleError, kv_capacity_tokens
from sim.runtime import RunContext
from sim.schedulers.base import (
    ClusterView,
    GenerationPlan,
    GenerationProgress,
    Migrate,
    Release,
    ReplicaSpec,
    ScaleOut,
    Scheduler,
)


class GenerationPhase:
    """Carries out one GenerationPlan; `done` succeeds when every sample has finished."""

    def __init__(
        self,
        ctx: RunContext,
        iteration: int,
        plan: GenerationPlan,
        table: SeqTable,
        scheduler: Scheduler,
        view_at: "callable[[], ClusterView]",
    ):
        self.ctx = ctx
        self.env = ctx.env
        self.iteration = iteration
        self.table = table
        self.scheduler = scheduler
        self.view_at = view_at
        self.observe = scheduler.observes_generation and type(scheduler).on_generation_event is not Scheduler.on_generation_event
        self.done = self.env.event()
        self.remaining = len(table)
        self.replicas: list[Replica] = []
        self.specs: list[ReplicaSpec] = []
        self.assigned: list[int] = []
        self.finished_on: list[int] = []
        self.max_seq_tokens = max((p + t for p, t in zip(table.prompt_tokens, table.target_tokens)), default=1)
        self.kv_transfer_bytes = 0.0
        if plan.prefix_dedup:
            raise NotImplementedError("deduplicated prefill (plan.prefix_dedup) is not implemented yet")
        assignment = np.asarray(plan.assignment, dtype=np.int64)
        if assignment.shape != (len(table),):
            raise SchedulerActionError(f"generation plan assigns {assignment.shape[0]} samples, the batch has {len(table)}")
        if len(table) and (assignment.min() < 0 or assignment.max() >= len(plan.replicas)):
            raise SchedulerActionError("generation plan assigns a sample to a replica that does not exist")
        for spec in plan.replicas:
            self._add_replica(spec)
        if self.remaining == 0:
            self.done.succeed()
            return
        order = np.argsort(assignment, kind="stable")
        bounds = np.searchsorted(assignment[order], np.arange(len(plan.replicas) + 1))
        for r, rep in enumerate(self.replicas):
            seqs = order[bounds[r] : bounds[r + 1]].tolist()
            if seqs:
                self.assigned[r] += len(seqs)
                rep.enqueue(seqs)

    # ------------------------------------------------------------------ replicas
    def _add_replica(self, spec: ReplicaSpec) -> Replica:
        ctx = self.ctx
        cfg = ctx.cfg.engine
        rid = len(self.replicas)
        if not spec.slots or len({s.node for s in spec.slots}) != 1:
            raise SchedulerActionError(f"replica {rid}: a tensor-parallel group must be one or more GPUs of one node")
        fraction = cfg.gpu_memory_utilization or spec.gpu_memory_utilization
        capacity = kv_capacity_tokens(ctx.actor, ctx.gpu, spec.tp, fraction)
        watermark = int(cfg.kv_watermark * max(capacity, 0))
        if capacity - watermark <= self.max_seq_tokens + 1:
            raise InfeasibleError(
                f"generation: a replica of {ctx.actor.name} on tp={spec.tp} x {ctx.gpu.name} at gpu_memory_utilization={fraction:g} "
                f"holds {max(capacity, 0)} KV tokens, but one sequence needs up to {self.max_seq_tokens} "
                f"(weights {ctx.actor.weight_bytes / 1e9:.1f} GB, KV {ctx.actor.kv_bytes_per_token / 1e3:.1f} kB/token); "
                f"use more GPUs per replica or a higher memory fraction"
            )
        ctx.pool.acquire(spec.slots, f"rollout replica {rid} (iteration {self.iteration})")
        rep = Replica(
            self.env,
            rid,
            ctx.perf.replica(ctx.actor, spec.tp),
            self.table,
            capacity,
            self,
            max_num_seqs=cfg.max_num_seqs,
            watermark_tokens=watermark,
            prefix_sharing=cfg.prefix_sharing,
            step_mode=cfg.mode == "step",
        )
        self.replicas.append(rep)
        self.specs.append(spec)
        self.assigned.append(0)
        self.finished_on.append(0)
        return rep

    # ------------------------------------------------------------------ listener callbacks (from replicas)
    def on_completed(self, replica: Replica, seqs: list[int]) -> None:
        self.remaining -= len(seqs)
        self.finished_on[replica.id] += len(seqs)
        if self.observe and self.remaining:
            self._consult(replica, seqs)
        if self.remaining == 0 and not self.done.triggered:
            self.done.succeed()

    def on_migrated_out(self, replica: Replica, seqs: list[int], kv_tokens: list[int], dst: Replica) -> None:
        nbytes = float(sum(kv_tokens)) * self.ctx.actor.kv_bytes_per_token
        self.kv_transfer_bytes += nbytes
        self.assigned[replica.id] -= len(seqs)
        self.assigned[dst.id] += len(seqs)
        delay = self.ctx.cluster.gpu_transfer_s(self.specs[replica.id].node, self.specs[dst.id].node, nbytes)
        if delay <= 0:
            dst.enqueue(seqs)
        else:
            self.env.timeout(delay).callbacks.append(lambda _ev, d=dst, s=seqs: d.enqueue(s))

    def on_idle(self, replica: Replica) -> None:
        if replica.released:
            self.ctx.pool.release(self.specs[replica.id].slots)

    # ------------------------------------------------------------------ scheduler actions
    def progress(self, replica: Replica, seqs: list[int]) -> GenerationProgress:
        reps = self.replicas
        return GenerationProgress(
            now_s=self.env.now,
            replica=replica.id,
            finished=tuple(seqs),
            assigned=tuple(self.assigned),
            done=tuple(self.finished_on),
            running=tuple(len(r.running) for r in reps),
            waiting=tuple(len(r.waiting) for r in reps),
            free_slots=tuple(max(0, r.max_num_seqs - len(r.running) - len(r.waiting)) for r in reps),
            released=tuple(r.released for r in reps),
        )

    def _consult(self, replica: Replica, seqs: list[int]) -> None:
        actions = self.scheduler.on_generation_event(self.view_at(), self.progress(replica, seqs))
        for action in actions or ():
            self.apply(action)

    def apply(self, action: object) -> None:
        reps = self.replicas
        if isinstance(action, Migrate):
            src, dst = self._replica(action.src), self._replica(action.dst)
            src.migrate_out(dst, list(action.samples) if action.samples is not None else None)
        elif isinstance(action, Release):
            self._replica(action.replica).release()
        elif isinstance(action, ScaleOut):
            new = self._add_replica(action.replica)
            by_src: dict[int, list[int]] = {}
            for s in action.samples:
                by_src.setdefault(self.table.replica_of[s], []).append(s)
            for src, group in by_src.items():
                reps[src].migrate_out(new, group)
        else:
            raise SchedulerActionError(f"unknown scheduler action {action!r}")

    def _replica(self, index: int) -> Replica:
        if not 0 <= index < len(self.replicas):
            raise SchedulerActionError(f"action names replica {index}; there are {len(self.replicas)}")
        return self.replicas[index]

    # ------------------------------------------------------------------ after the phase
    def finish(self) -> None:
        """Release GPUs still held and record each replica's busy intervals."""
        rec = self.ctx.recorder
        for rep, spec in zip(self.replicas, self.specs):
            for start, end in rep.busy_intervals:
                rec.busy(self.iteration, "generation", "rollout", spec.slots, start, end)
            rec.engine_events += rep.events
            if not rep.released:
                self.ctx.pool.release(spec.slots)
        t = self.table
        rec.count(
            self.iteration,
            "generation",
            tokens=float(sum(t.target_tokens)),
            prefill_tokens=float(sum(r.prefill_tokens for r in self.replicas)),
            preemptions=float(t.preemptions),
            recomputed_tokens=float(t.recomputed_tokens),
            migrations=float(t.migrations),
            kv_transfer_bytes=self.kv_transfer_bytes,
            replicas=float(len(self.replicas)),
        )
        row = rec.counters[(self.iteration, "generation")]
        row["rollout_tp"] = float(max((spec.tp for spec in self.specs), default=0))
