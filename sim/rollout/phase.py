"""The rollout phase of one iteration: replicas built from a scheduler's plan, work dispatched, actions applied.

Mechanism only: the plan and the actions come from the scheduler as data; this module checks them
(GPU double booking, memory), carries them out on `sim.rollout.replica.Replica` processes, pays KV transfers over
the topology, and fires `done` when the last sample has finished.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, NamedTuple

import numpy as np

from sim.rollout.progress import LiveDetail
from sim.rollout.replica import Replica, SchedulerActionError, SeqTable
from sim.hardware.memory import InfeasibleError, kv_capacity_tokens
from sim.context import RunContext
from sim.resources.leases import Hold
from sim.rollout.dedup_prefill import DedupPrefill
from sim.schedulers.actions import Migrate, Release, ScaleOut
from sim.schedulers.base import Scheduler
from sim.schedulers.plans import GenerationPlan, ReplicaSpec
from sim.schedulers.views import ClusterView, GenerationProgress, Slot

if TYPE_CHECKING:
    from sim.phases.streaming import StreamingInference


class FreedGpus(NamedTuple):
    """GPUs a scheduler released before generation ended (RLHFuse's cut), free from `when_s` to `end_s`."""

    slots: tuple[Slot, ...]
    when_s: float
    end_s: float  # the end of the generation round
    done_fraction: float  # share of the round's samples finished at `when_s`


@dataclass(frozen=True)
class GenerationResult:
    """What one finished generation round hands to the phases after it."""

    freed: tuple[FreedGpus, ...]  # early releases, in order (fused inference spends them)


class GenerationPhase:
    """Carries out one GenerationPlan; `done` succeeds when every sample has finished."""

    def __init__(
        self,
        ctx: RunContext,
        iteration: int,
        plan: GenerationPlan,
        table: SeqTable,
        scheduler: Scheduler,
        view_at: Callable[[], ClusterView],
        template_tokens: int = 0,
        stream: Callable[[], StreamingInference] | None = None,
    ):
        """`template_tokens`: the round's shared chat-template prefix (dedup prefill reads it); `stream`
        builds the streaming inference fed with finished samples, last, once the replicas (and the prefill
        actor) have asked for their GPUs, so that its groups ask after them."""
        self.ctx = ctx
        self.template_tokens = int(template_tokens)
        self.env = ctx.env
        self.iteration = iteration
        self.table = table
        self.scheduler = scheduler
        self.view_at = view_at
        self.observe = scheduler.observes_generation and type(scheduler).on_generation_event is not Scheduler.on_generation_event
        self.done = self.env.event()
        self.remaining = len(table)
        self.alloc = ctx.alloc
        self.replicas: list[Replica | None] = []  # None while its instance is starting
        self.specs: list[ReplicaSpec] = []
        self.leases: list = []
        self.node_of: dict[int, int] = {}
        self.slots_of: dict[int, tuple] = {}
        self.owner_of: dict[int, str] = {}
        self.assigned: list[int] = []
        self.finished_on: list[int] = []
        self.backlog: dict[int, list[int]] = {}  # replica index -> samples waiting for it to start
        self.lost_tokens = 0
        self.failures = 0
        self.stream: StreamingInference | None = None  # built at the end of this constructor
        self.freed: list[tuple[tuple, float, float]] = []  # (GPUs, when, fraction of samples done) per early release
        self.gated: set[int] = set()  # replicas waiting for their prefix KV from the prefill actor
        self.dedup: DedupPrefill | None = None  # the shared-prefix prefill actor, with plan.prefix_dedup
        self.max_seq_tokens = max((p + t for p, t in zip(table.prompt_tokens, table.target_tokens)), default=1)
        self.kv_transfer_bytes = 0.0
        assignment = np.asarray(plan.assignment, dtype=np.int64)
        if assignment.shape != (len(table),):
            raise SchedulerActionError(f"generation plan assigns {assignment.shape[0]} samples, the batch has {len(table)}")
        if len(table) and (assignment.min() < 0 or assignment.max() >= len(plan.replicas)):
            raise SchedulerActionError("generation plan assigns a sample to a replica that does not exist")
        if self.remaining == 0:
            self.done.succeed()
        else:
            self._start(plan, assignment)
        if stream is not None:
            self.stream = stream()

    def _start(self, plan: GenerationPlan, assignment: np.ndarray) -> None:
        """Ask for every replica's GPUs (and the prefill actor's, with prefix dedup), in plan order."""
        order = np.argsort(assignment, kind="stable")
        bounds = np.searchsorted(assignment[order], np.arange(len(plan.replicas) + 1))
        if plan.prefix_dedup:
            self.gated = set(range(len(plan.replicas)))
        for r, spec in enumerate(plan.replicas):
            seqs = order[bounds[r] : bounds[r + 1]].tolist()
            self._add_replica(spec, seqs)
        if plan.prefix_dedup:
            if plan.prefill is None:
                raise SchedulerActionError("prefix_dedup needs a prefill actor placement (plan.prefill)")
            per_replica = [order[bounds[r] : bounds[r + 1]] for r in range(len(plan.replicas))]
            self.dedup = DedupPrefill(self, plan, per_replica)  # asks for the prefill actor now, before any pre-warm

    # ------------------------------------------------------------------ replicas
    def _capacity(self, spec: ReplicaSpec) -> tuple[int, int, float]:
        ctx = self.ctx
        cfg = ctx.cfg.engine
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
        return capacity, watermark, fraction

    def _add_replica(self, spec: ReplicaSpec, seqs: list[int]) -> int:
        """Ask for the replica's GPUs; it starts (and takes `seqs`) when its lease is granted."""
        rid = len(self.specs)
        if not spec.slots or len({s.node for s in spec.slots}) != 1:
            raise SchedulerActionError(f"replica {rid}: a tensor-parallel group must be one or more GPUs of one node")
        capacity, watermark, _ = self._capacity(spec)
        self.replicas.append(None)
        self.specs.append(spec)
        self.leases.append(None)
        self.assigned.append(len(seqs))
        self.finished_on.append(0)
        self.backlog[rid] = list(seqs)
        fraction = self.ctx.cfg.engine.gpu_memory_utilization or spec.gpu_memory_utilization
        # a crash restarts the replica's unfinished samples on a new replica (`_crashed`)
        Hold(
            self.alloc, self.ctx.roles.spec("rollout", spec.tp, None, fraction), spec.slots,
            on_crash=lambda _lease, r=rid: self._crashed(r),
            on_grant=lambda lease, r=rid, c=capacity, w=watermark: self._start_replica(r, lease, c, w),
        ).request()  # fmt: skip
        return rid

    def _start_replica(self, rid: int, lease, capacity: int, watermark: int) -> None:
        ctx = self.ctx
        cfg = ctx.cfg.engine
        spec = self.specs[rid]
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
            reserve_tokens=ctx.cfg.workload.max_response_tokens if cfg.admission == "reserve_max" else 0,
        )
        self.replicas[rid] = rep
        self.leases[rid] = lease
        self.node_of[rid] = lease.node  # where the platform actually placed it
        self.slots_of[rid] = lease.slots
        self.owner_of[rid] = lease.owner
        if rid in self.gated:  # its prefix KV has not arrived yet
            return
        self._hand_backlog(rid)

    def _hand_backlog(self, rid: int) -> None:
        """Give a started replica its samples; one with none returns its function at once."""
        rep = self.replicas[rid]
        seqs = self.backlog.pop(rid, [])
        if seqs and rep.released:  # it ended before its samples could start (a crash)
            self._deliver(seqs, rep)
        elif seqs:
            rep.enqueue(seqs)
        elif self.remaining == 0 or self.done.triggered or self.alloc.serverless:
            rep.released = True
            self._retire(rid)

    def _kv_arrived(self, rid: int) -> None:
        self.gated.discard(rid)
        if self.replicas[rid] is not None:
            self._hand_backlog(rid)

    def _crashed(self, rid: int) -> None:
        """The replica's instance crashed: its unfinished samples restart from scratch on a replacement."""
        rep = self.replicas[rid]
        lost, tokens = rep.fail()
        lost += self.backlog.pop(rid, [])  # samples still waiting for their prefix KV to arrive here
        self.gated.discard(rid)
        for s in lost:  # a prefix KV shipped to the dead replica is lost too: prefill it again
            self.table.cached_prefix[s] = 0
        self.lost_tokens += tokens
        self.failures += 1
        self.assigned[rid] -= len(lost)
        self._record_replica(rid)
        if lost:
            self._add_replica(self.specs[rid], lost)

    def _retire(self, rid: int) -> None:
        lease = self.leases[rid]
        if lease is not None:
            self.alloc.end(lease)
            self.leases[rid] = None

    # ------------------------------------------------------------------ listener callbacks (from replicas)
    @property
    def watching(self) -> bool:
        """Whether anything may act on or read a replica mid-batch (sim.rollout.replica.ReplicaListener): a scheduler
        that observes generation, streaming inference fed each finished sample, or instances that can crash."""
        return self.observe or self.stream is not None or (self.alloc.serverless and bool(self.ctx.cfg.platform.failures.mtbf_s))

    def on_completed(self, replica: Replica, seqs: list[int]) -> None:
        if self.stream is not None:
            self.stream.finished(seqs)
        self.remaining -= len(seqs)
        self.finished_on[replica.id] += len(seqs)
        if self.observe and self.remaining:
            self._consult(replica, seqs)
        if self.remaining == 0 and not self.done.triggered:
            self.done.succeed()

    def on_migrated_out(self, replica: Replica, seqs: list[int], kv_tokens: list[int], dst: Replica) -> None:  # noqa: D401
        nbytes = float(sum(kv_tokens)) * self.ctx.actor.kv_bytes_per_token
        self.kv_transfer_bytes += nbytes
        self.assigned[replica.id] -= len(seqs)
        self.assigned[dst.id] += len(seqs)
        delay = self.ctx.cluster.gpu_transfer_s(self.node_of[replica.id], self.node_of[dst.id], nbytes)
        if delay <= 0:
            self._deliver(seqs, dst)
        else:
            self.env.timeout(delay).callbacks.append(lambda _ev, d=dst, s=seqs: self._deliver(s, d))

    def _deliver(self, seqs: list[int], dst: Replica) -> None:
        """Hand migrated samples to their destination; if it has ended meanwhile (its batch finished, or it
        crashed), to the live replica with the most room, re-prefilled there, or else to a new replica."""
        if not dst.released:
            dst.enqueue(seqs)
            return
        for s in seqs:  # their KV went to a replica that is gone
            self.table.kv_ready[s] = False
        self.assigned[dst.id] -= len(seqs)
        live = [r for r in self.replicas if r is not None and not r.released]
        if live:
            target = max(live, key=lambda r: (r.max_num_seqs - len(r.running) - len(r.waiting), -r.id))
            self.assigned[target.id] += len(seqs)
            target.enqueue(seqs)
        else:
            self._add_replica(self.specs[dst.id], seqs)

    def on_idle(self, replica: Replica) -> None:
        lease = self.leases[replica.id]
        if lease is None:
            return
        if replica.released:  # released by the scheduler: no keep-alive
            self.alloc.release(lease)
            self.leases[replica.id] = None
            self.freed.append((lease.slots, self.env.now, 1.0 - self.remaining / max(len(self.table), 1)))
        elif self.alloc.serverless:
            # a function's invocation returns when its batch is done: the instance goes warm idle
            # (billed under the platform's keep-alive rules) and this replica takes no more work
            replica.released = True
            self.alloc.end(lease)
            self.leases[replica.id] = None

    # ------------------------------------------------------------------ scheduler actions
    def progress(self, replica: Replica, seqs: list[int]) -> GenerationProgress:
        # one pass per field in comprehensions: this runs at every completion an observing scheduler sees;
        # the per-sample detail reads the live replicas during the call and is copied only if kept (_consult)
        reps, backlog = self.replicas, self.backlog
        running = tuple([len(r.running) if r is not None else 0 for r in reps])
        waiting = tuple([len(r.waiting) if r is not None else len(backlog.get(i, ())) for i, r in enumerate(reps)])
        free_slots = tuple(
            [(f if (f := r.max_num_seqs - nr - nw) > 0 else 0) if r is not None else 0 for r, nr, nw in zip(reps, running, waiting)]
        )
        released = tuple([r.released if r is not None else False for r in reps])
        ready = tuple([r is not None for r in reps])
        free_kv = tuple([(f if (f := r.cap - r.mem) > 0 else 0) if r is not None else 0 for r in reps])
        return GenerationProgress(
            now_s=self.env.now,
            replica=replica.id,
            finished=tuple(seqs),
            assigned=tuple(self.assigned),
            done=tuple(self.finished_on),
            running=running,
            waiting=waiting,
            free_slots=free_slots,
            released=released,
            ready=ready,
            free_kv_tokens=free_kv,
            detail=LiveDetail(reps, backlog, self.table),
        )

    def _consult(self, replica: Replica, seqs: list[int]) -> None:
        progress = self.progress(replica, seqs)
        held = weakref.ref(progress.detail)
        actions = self.scheduler.on_generation_event(self.view_at(), progress)
        del progress
        if (detail := held()) is not None:  # the scheduler still holds the detail (in any form): copy it now
            detail.freeze()
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
            new = self._add_replica(action.replica, [])
            by_src: dict[int, list[int]] = {}
            for s in action.samples:
                by_src.setdefault(self.table.replica_of[s], []).append(s)
            for src, group in by_src.items():
                target = self.replicas[new]
                if target is None:
                    raise SchedulerActionError("ScaleOut with samples needs a replica that starts at once (serverful)")
                reps[src].migrate_out(target, group)
        else:
            raise SchedulerActionError(f"unknown scheduler action {action!r}")

    def _replica(self, index: int) -> Replica:
        if not 0 <= index < len(self.replicas):
            raise SchedulerActionError(f"action names replica {index}; there are {len(self.replicas)}")
        rep = self.replicas[index]
        if rep is None:
            raise SchedulerActionError(f"action names replica {index}, which is still starting")
        return rep

    # ------------------------------------------------------------------ after the phase
    def _record_replica(self, rid: int) -> None:
        rep = self.replicas[rid]
        if rep is None:
            return
        slots = self.slots_of[rid]  # the GPUs it actually ran on (its lease may already be returned)
        for start, end in rep.busy_intervals:
            self.ctx.recorder.busy(self.iteration, "generation", "rollout", slots, start, end, self.owner_of[rid])
        rep.busy_intervals = []
        self.ctx.recorder.engine_events += rep.events
        rep.events = 0

    def finish(self) -> GenerationResult:
        """Hand GPUs back (keep-alive when serverless), record each replica's busy intervals, and return
        what the later phases need from this round."""
        rec = self.ctx.recorder
        for rid in range(len(self.replicas)):
            self._record_replica(rid)
            self._retire(rid)
        t = self.table
        live = [r for r in self.replicas if r is not None]
        row = rec.counters.setdefault((self.iteration, "generation"), {})
        rec.count(
            self.iteration,
            "generation",
            tokens=float(sum(t.target_tokens)),
            prefill_tokens=float(sum(r.prefill_tokens for r in live)),
            preemptions=float(t.preemptions),
            recomputed_tokens=float(t.recomputed_tokens),
            migrations=float(t.migrations),
            kv_transfer_bytes=self.kv_transfer_bytes,
            replicas=float(len(self.replicas)),
            failures=float(self.failures),
            lost_tokens=float(self.lost_tokens),
            decode_steps=float(sum(r.steps for r in live)),
        )
        # (a dynamic-sampling step runs several rounds: the iteration's figures are the largest of its rounds)
        row["peak_decode_batch"] = max(row.get("peak_decode_batch", 0.0), float(max((r.peak_batch for r in live), default=0)))
        ee = self.ctx.perf.early_exit
        if ee is not None:  # executed depth of the steps as run (docs/metrics.md, early_exit_depth_*)
            steps_by_batch: dict[int, int] = {}
            for r in live:
                for b, k in r.batch_steps.items():
                    steps_by_batch[b] = steps_by_batch.get(b, 0) + k
            depth_steps, depth_tokens = ee.depth_sums(steps_by_batch)
            rec.count(self.iteration, "generation", early_exit_depth_steps=depth_steps, early_exit_depth_tokens=depth_tokens,
                      early_exit_step_tokens=float(sum(b * k for b, k in steps_by_batch.items())))  # fmt: skip
        if self.dedup is not None and self.dedup.would is not None:
            replica_prompt_prefill = sum(r.prefill_tokens for r in live) - t.recomputed_tokens
            rec.count(
                self.iteration,
                "generation",
                prefill_tokens=float(self.dedup.tokens),
                prefill_tokens_saved=float(self.dedup.would - self.dedup.tokens - replica_prompt_prefill),
            )
        row["rollout_tp"] = max(row.get("rollout_tp", 0.0), float(max((spec.tp for spec in self.specs), default=0)))
        return GenerationResult(tuple(FreedGpus(slots, when, self.env.now, done) for slots, when, done in self.freed))
