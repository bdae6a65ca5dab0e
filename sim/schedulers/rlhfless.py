"""RLHFless (arXiv 2602.22718) on serverless functions, with each mechanism switchable for ablations.

1. Deduplicated prefill: a prefill actor on the learner's node computes shared prefixes once and ships
   their KV to the decode actors (`dedup_prefill`).
2. Length prediction and prompt assignment: a per-prompt EWMA of past response lengths ranks prompts;
   similar lengths go to the same decode actor, so short actors finish and stop being billed
   (`prompt_assignment`).
3. Cut-and-migrate: once a fraction `tau` of an actor's samples has finished, its unfinished samples move
   to actors with free slots and the actor is released (`cut_and_migrate`; local, per actor).
4. Cost-aware actor scaling: for each candidate number of decode actors N, predict time and cost from
   the predicted lengths, the assignment N would produce and the performance model; pick the N that
   minimises lambda * T/T_ref + (1 - lambda) * C/C_ref (`actor_scaling`).
5. Locality-aware placement: prefill actor and the longest decode actors on the learner's node, others
   nearest first (`locality`).
Where the paper is silent, the choice is a parameter; docs/schedulers.md lists each assumption.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from sim.schedulers.actions import Action, Migrate, Release
from sim.schedulers.base import Scheduler
from sim.schedulers.helpers import RolloutParams
from sim.schedulers.plans import GenerationPlan, InferencePlan, Prewarm, ReplicaSpec, RolePlan, TrainingPlan
from sim.schedulers.registry import register
from sim.schedulers.rlhfless_prediction import LengthPredictor, chunk_ranked, predict_decode_s, queue_slots
from sim.schedulers.views import (
    ClusterView,
    GenerationProgress,
    InferenceWork,
    IterationStats,
    RolloutBatch,
    Slot,
    StartCost,
    TrainingWork,
)

__all__ = ["LengthPredictor", "Oracle", "RLHFless", "RLHFlessParams", "chunk_ranked", "predict_decode_s", "queue_slots"]


class RLHFlessParams(RolloutParams):
    # EWMA weight of the newest observation; 1.0 = "window 1" (last epoch's length), the default of the
    # public third-party reimplementation (rlhfless.md section 0, [C])
    ewma_alpha: float = Field(1.0, gt=0, le=1)
    # cut threshold: fraction of an actor's samples finished before its tail is cut ([C]: 0.7)
    tau: float = Field(0.7, gt=0, le=1)
    # weight of time against cost in the scaling score (rlhfless.md section 8 item 7: assume 0.5)
    lam: float = Field(0.5, ge=0, le=1, alias="lambda")
    n_min: int = Field(1, ge=1, description="fewest decode actors considered")
    n_max: int | None = Field(None, ge=1, description="most decode actors considered; default: every GPU")
    dedup_prefill: bool = Field(True, description="mechanism 1: a prefill actor computes shared prefixes once and ships their KV to the decode actors")
    prompt_assignment: bool = Field(True, description="mechanism 2: prompts ranked by predicted length, similar lengths on the same actor; false: round-robin")
    actor_scaling: bool = Field(True, description="mechanism 4: choose the number of decode actors by predicted time and cost; false: the largest")
    cut_and_migrate: bool = Field(True, description="mechanism 3: once tau of an actor's samples are done, migrate its tail and release it")
    locality: bool = Field(True, description="mechanism 5: prefill and the longest decode actors on the learner's node, others nearest first")
    dedup_scope: Literal["prompt", "template"] = Field("prompt", description="what the prefill actor deduplicates: every distinct prompt, or only the shared template")
    # chunks of the length ranking: the same number of prompts per actor (the paper's figure), or the
    # same predicted decode work
    assignment: Literal["equal_count", "equal_work"] = "equal_count"
    # first-epoch prediction for prompts never seen: the running mean of observed lengths once there is
    # one, else the workload's prior mean (the paper is silent: rlhfless.md section 8 item 8)
    first_epoch: Literal["running_mean", "prior"] = "running_mean"
    release_idle: bool = Field(True, description="release a decode actor as soon as it has no work left")
    kv_headroom: float = Field(1.5, ge=1.0, description="receiver KV needed per migrated sample, x its context now")
    inference_gpus_per_role: int | None = Field(None, ge=1, description="default: all GPUs shared among the roles, which run at once")
    training_gpus: int | None = Field(None, ge=1, description="learner GPUs, from the learner node on; default: all")
    # pre-warm functions from the invocation history (rlhfless.md section 5): have each later phase's
    # functions loaded (woken or cold-started) shortly before the phase is predicted to begin, from the
    # predicted generation time and the last iteration's phase times
    prewarm: bool = True
    # start a pre-warm this share of the predicted wait early, on top of its predicted start-up, so that a
    # misprediction of that size still finds it ready. 0 aims at the (bias-corrected) prediction: a late
    # pre-warm delays its phase by at most the rest of its start-up, an early one bills its GPUs while they
    # wait, so neither side is favoured (docs/schedulers.md)
    prewarm_margin: float = Field(0.0, ge=0, le=1)
    # pre-wake sleeping functions too. Off: a pre-warm is worth it for a function that would cold-start
    # (tens of seconds); a sleeping one wakes on demand in well under a second or two (platform.wake_s + its
    # state over PCIe), less than a generation-time misprediction of several seconds would bill its GPUs
    prewarm_sleepers: bool = False
    # with memory sharing, put functions to sleep as soon as they are idle (not billed; woken before their
    # next phase by the pre-warms) instead of leaving them resident until their memory is needed
    sleep_idle: bool = True
    # run the inference roles on the GPUs the decode actors leave free, fed each sample as it finishes.
    # Whether the paper's preparation functions overlap generation is not stated, so it is off by default
    # (docs/reproduction.md shows both: streaming buys time and costs the idle GPU-seconds of functions
    # waiting for samples); it falls back to the barrier when too few GPUs are free
    stream_inference: bool = False
    # keep idle functions alive for the shortest step seen so far plus a buffer (rlhfless.md section 5:
    # "shortest step time plus a buffer"; the buffer is not published: assumption)
    keep_alive_from_history: bool = True
    # actor scaling charges each actor its start-up: nothing when resident, a wake when asleep (paid again
    # every iteration it sleeps), a cold start when new. A cold start is paid once for a function that then
    # stays alive (keep-alive from history): it is spread over this many steps; None = the steps left in the
    # run, as a training job knows its total steps (1: charge it all to this step)
    startup_horizon_steps: int | None = Field(None, ge=1)
    keep_alive_buffer_s: float = Field(30.0, ge=0, description="added to the shortest iteration seen so far to give the keep-alive (not published: assumption)")

    @model_validator(mode="after")
    def _range(self) -> "RLHFlessParams":
        if self.n_max is not None and self.n_max < self.n_min:
            raise ValueError("n_max must be >= n_min")
        return self


@register
class RLHFless(Scheduler[RLHFlessParams]):
    name = "rlhfless"
    deployment = "serverless"
    observes_generation = True

    def __init__(self, params: RLHFlessParams, rng: np.random.Generator):
        super().__init__(params, rng)
        self.predictor = LengthPredictor(params.ewma_alpha)
        self._cut: set[int] = set()
        self._released: set[int] = set()
        self.last_scores: dict[int, float] = {}
        self.last_n = 0
        self._rest = (0.0, 0.0)  # (seconds, GPU-seconds) of the last iteration's other phases
        self._last_phase_s: dict[str, float] = {}  # the last iteration's phase times (pre-warm timing)
        self._predicted_gen_s = 0.0
        self._gen_scale = 1.0  # actual / predicted generation time, last iteration
        self._shortest_step_s: float | None = None

    # ------------------------------------------------------------------ helpers
    @property
    def p(self) -> RLHFlessParams:
        return self.params

    def predictions(self, batch: RolloutBatch) -> np.ndarray:
        """Predicted mean response length per prompt of the batch."""
        if self.oracle and batch.true_response_tokens is not None:
            n = len(batch.prompt_ids)
            sums = np.bincount(batch.sample_prompt, weights=batch.true_response_tokens, minlength=n)
            counts = np.maximum(np.bincount(batch.sample_prompt, minlength=n), 1)
            return sums / counts
        return self.predictor.predict(batch.prompt_ids, batch.default_response_tokens, self.p.first_epoch)

    def node_order(self, view: ClusterView) -> list[int]:
        if self.p.locality:
            return view.nodes_by_distance(view.learner_node)
        return list(range(view.nodes))

    def place(self, view: ClusterView, n: int, tp: int, reserve_prefill: bool) -> tuple[list[ReplicaSpec], ReplicaSpec | None]:
        """Decode actors: with locality, filling the learner's node first (actor 0, the longest, there), then the
        nearest nodes; without, round-robin over nodes. The prefill actor, an engine of the same tensor-parallel
        degree (the model must fit it), takes the last GPUs of the learner's node."""
        mem = self.p.gpu_memory_utilization
        free = {node: list(range(view.gpus_per_node)) for node in range(view.nodes)}
        prefill = None
        if reserve_prefill:
            node = view.learner_node if self.p.locality else 0
            prefill = ReplicaSpec(tuple(sorted((Slot(node, free[node].pop()) for _ in range(tp)), key=lambda s: s.gpu)), mem)
        order = self.node_order(view)
        specs: list[ReplicaSpec] = []
        k = 0
        while len(specs) < n:
            if self.p.locality:
                node = next((m for m in order if len(free[m]) >= tp), None)
            else:
                candidates = [order[(k + j) % len(order)] for j in range(len(order))]
                node = next((m for m in candidates if len(free[m]) >= tp), None)
                k += 1
            if node is None:
                break
            specs.append(ReplicaSpec(tuple(Slot(node, free[node].pop(0)) for _ in range(tp)), mem))
        return specs, prefill

    def capacity_actors(self, view: ClusterView, tp: int, reserve_prefill: bool) -> int:
        per_node = view.gpus_per_node // tp
        total = per_node * view.nodes
        if reserve_prefill and view.gpus_per_node - per_node * tp < tp:
            total -= 1  # the prefill actor takes one actor's GPUs on the learner's node
        return total

    def assign(self, pred: np.ndarray, group_sizes: np.ndarray, n: int) -> np.ndarray:
        if self.p.prompt_assignment:
            return chunk_ranked(pred, group_sizes, n, self.p.assignment)
        return np.arange(len(pred)) % n  # length-unaware: round-robin by prompt

    def predict_cost(self, view: ClusterView, batch: RolloutBatch, pred: np.ndarray, group_sizes: np.ndarray, n: int, tp: int) -> tuple[float, float]:
        """(generation time, GPU-seconds) predicted for n decode actors, from predicted lengths only."""
        actor_of_prompt = self.assign(pred, group_sizes, n)
        rep = view.perf.replica(view.actor, tp)
        sample_actor = actor_of_prompt[batch.sample_prompt]
        sample_len = pred[batch.sample_prompt]
        sample_prompt_tokens = batch.prompt_tokens[batch.sample_prompt].astype(np.float64)
        # what the platform would charge each actor to start: 0 when resident, a wake when asleep, else a
        # cold start (one-off: spread over startup_horizon_steps); the longest-predicted actor (0) gets the cheapest
        horizon = self.p.startup_horizon_steps or max(1, view.iterations - view.iteration)
        starts = [c.seconds if c.kind != "cold" else c.seconds / horizon for c in view.start_s("rollout", tp, n, view.learner_node)]
        kv_tokens = view.kv_capacity_tokens(tp, self.p.gpu_memory_utilization) * (1 - view.kv_watermark)
        times = []
        for a in range(n):
            mask = sample_actor == a
            lengths, prompts = sample_len[mask], sample_prompt_tokens[mask]
            # continuous batching keeps at most `slots` sequences running (max_num_seqs, or the KV cache
            # at the sequences' mean final length); a slot serves its queue back to back
            mean_final = float(np.mean(lengths + prompts)) if len(lengths) else 1.0
            slots = int(max(1, min(view.max_num_seqs, kv_tokens // max(mean_final, 1.0))))
            if len(lengths) > slots:
                lengths, prompts = queue_slots(lengths, prompts, slots)
            times.append(starts[a] + predict_decode_s(rep, lengths, prompts))
        return max(times, default=0.0), tp * float(sum(times))

    # ------------------------------------------------------------------ plans
    def plan_generation(self, view: ClusterView, batch: RolloutBatch) -> GenerationPlan:
        p = self.p
        self._cut.clear()
        self._released.clear()
        tp = p.rollout_tp(view, batch)
        pred = self.predictions(batch)
        group_sizes = np.bincount(batch.sample_prompt, minlength=len(batch.prompt_ids)).astype(np.float64)
        dedup = p.dedup_prefill and self.capacity_actors(view, tp, True) >= 1 and view.nodes * view.gpus_per_node > tp
        n_cap = self.capacity_actors(view, tp, dedup)
        n_hi = max(1, min(p.n_max or n_cap, n_cap, max(len(batch.prompt_ids), 1)))
        n_lo = min(p.n_min, n_hi)
        n = n_hi
        self.last_scores = {}
        preds: dict[int, tuple[float, float]] = {}
        if p.actor_scaling and n_hi > n_lo:
            preds = {k: self.predict_cost(view, batch, pred, group_sizes, k, tp) for k in range(n_lo, n_hi + 1)}
            # T_total and C add the rest of the iteration, which does not depend on N (last iteration's)
            t_rest, c_rest = self._rest
            t_ref, c_ref = preds[n_hi][0] + t_rest, preds[n_hi][1] + c_rest
            for k, (t, c) in preds.items():
                self.last_scores[k] = p.lam * (t + t_rest) / max(t_ref, 1e-12) + (1 - p.lam) * (c + c_rest) / max(c_ref, 1e-12)
            n = min(self.last_scores, key=lambda k: (self.last_scores[k], k))
        self.last_n = n
        self._gpus_last = view.nodes * view.gpus_per_node
        actor_of_prompt = self.assign(pred, group_sizes, n)
        # actor 0 holds the longest predictions; with locality it goes first in node order (learner's node)
        specs, prefill = self.place(view, n, tp, dedup)
        assignment = actor_of_prompt[batch.sample_prompt]
        self._last_specs, self._last_prefill = specs, prefill
        roles = view.inference_roles
        # with dynamic sampling a sample trains only once its round is scored: inference waits for the barrier
        stream = self._stream_plan(view, specs, prefill, roles) if p.stream_inference and not view.dynamic_sampling else None
        prewarm: tuple = ()
        if p.prewarm and batch.round == 0:
            # the phases begin after the predicted generation (and, for the trainers, last iteration's inference).
            # Dynamic sampling: pre-warms go with a step's first round only; the history below covers its later rounds
            self._predicted_gen_s = (preds[n] if n in preds else self.predict_cost(view, batch, pred, group_sizes, n, tp))[0]
            # history corrects the time model's bias: last iteration's actual / predicted generation time
            t_gen = self._predicted_gen_s * self._gen_scale
            layout = [] if stream is not None else self._inference_layout(view, roles)
            train = self._training_slots(view)
            t_train = t_gen + self._last_phase_s.get("inference", 0.0)
            wanted = [(r, slots, t_gen) for r, slots in layout]
            wanted += [(f"{m}_trainer", train, t_train) for m in ("critic", "actor") if m in view.trained_models]
            prewarm = tuple(pw for r, slots, t in wanted if (pw := self._timed(view, r, slots, t)) is not None)
        keep = None
        if p.keep_alive_from_history and self._shortest_step_s is not None:
            keep = self._shortest_step_s + p.keep_alive_buffer_s
        return GenerationPlan(
            replicas=tuple(specs), assignment=assignment, prefix_dedup=dedup, prefill=prefill,
            dedup_scope=p.dedup_scope, prewarm=prewarm, keep_alive_s=keep, streaming_inference=stream,
            sleep_idle=True if (p.sleep_idle and view.gpu_sharing == "memory") else None,
        )  # fmt: skip

    def _timed(
        self, view: ClusterView, role: str, slots: tuple[Slot, ...], needed_in_s: float, fraction: float | None = None,
        cost: StartCost | None = None,
    ) -> Prewarm | None:  # fmt: skip
        """A pre-warm that should be ready `needed_in_s` from now: started its predicted start-up, plus a
        margin of that wait, ahead of time (at once when there is no prediction).

        None when there is nothing worth doing ahead: a resident function, or (unless `prewarm_sleepers`)
        a sleeping one, whose wake on demand costs less than waking it early by a misprediction would.
        """
        if cost is None:
            per_node: dict[int, int] = {}
            for s in slots:
                per_node[s.node] = per_node.get(s.node, 0) + 1
            node, gpus = max(per_node.items(), key=lambda kv: (kv[1], -kv[0])) if per_node else (view.learner_node, 1)
            cost = view.start_s(role, gpus, 1, node)[0]
        if cost.kind == "resident" or (cost.kind == "asleep" and not self.p.prewarm_sleepers):
            return None
        after = max(0.0, needed_in_s * (1.0 - self.p.prewarm_margin) - cost.seconds) if needed_in_s > 0 else 0.0
        return Prewarm(role, tuple(slots), after, fraction)

    def _stream_plan(self, view: ClusterView, specs: list[ReplicaSpec], prefill: ReplicaSpec | None, roles: tuple[str, ...]) -> InferencePlan | None:
        """The inference roles on the GPUs that decode actors and the prefill actor leave free, away from the
        learner's node first; one data-parallel group per node and role. None when too few GPUs are free."""
        used = {s for spec in specs for s in spec.slots} | (set(prefill.slots) if prefill is not None else set())
        free = [Slot(n, g) for n in reversed(self.node_order(view)) for g in range(view.gpus_per_node) if Slot(n, g) not in used]
        if not roles or len(free) < len(roles):
            return None
        per_role = len(free) // len(roles)
        plans = []
        for k, role in enumerate(roles):
            mine = free[k * per_role : (k + 1) * per_role]
            groups = tuple(tuple(s for s in mine if s.node == n) for n in sorted({s.node for s in mine}))
            plans.append(RolePlan(role, groups))
        return InferencePlan(roles=tuple(plans), sequential=False)

    def _inference_layout(self, view: ClusterView, roles: tuple[str, ...]) -> list[tuple[str, tuple[Slot, ...]]]:
        per_role = self.p.inference_gpus_per_role or max(1, view.nodes * view.gpus_per_node // max(len(roles), 1))
        nodes = list(reversed(self.node_order(view)))  # away from the learner's node
        slots = [Slot(n, g) for n in nodes for g in range(view.gpus_per_node)]
        out = []
        for k, role in enumerate(roles):
            start = (k * per_role) % len(slots)
            chunk = slots[start : start + per_role] or slots[:per_role]
            out.append((role, tuple(chunk)))
        return out

    def _training_slots(self, view: ClusterView) -> tuple[Slot, ...]:
        n = self.p.training_gpus or view.nodes * view.gpus_per_node
        return tuple([Slot(node, g) for node in self.node_order(view) for g in range(view.gpus_per_node)][:n])

    def on_generation_event(self, view: ClusterView, progress: GenerationProgress) -> list[Action]:
        p = self.p
        actions: list[Action] = []
        r = progress.replica
        if p.cut_and_migrate and r not in self._cut and progress.assigned[r]:
            if progress.done[r] / progress.assigned[r] >= p.tau:
                actions = self._cut_and_migrate(progress, r)
        if p.release_idle and not actions:
            if progress.running[r] == 0 and progress.waiting[r] == 0 and r not in self._released and not progress.released[r]:
                self._released.add(r)
                actions.append(Release(r))
        return actions

    def _cut_and_migrate(self, progress: GenerationProgress, r: int) -> list[Action]:
        unfinished = progress.unfinished(r)
        if not unfinished:
            return []
        contexts = [progress.context_tokens(s) for s in unfinished]
        need = self.p.kv_headroom * max(float(np.mean(contexts)), 1.0)
        capacity = {}
        for j in range(len(progress.assigned)):
            if j == r or j in self._cut or progress.released[j] or j in self._released:
                continue
            if progress.ready and not progress.ready[j]:
                continue
            if progress.running[j] == 0 and progress.waiting[j] == 0:
                continue  # finished actors exit; only running actors with free slots receive
            cap = min(progress.free_slots[j], int(progress.free_kv_tokens[j] // need))
            if cap > 0:
                capacity[j] = cap
        if sum(capacity.values()) < len(unfinished):
            return []  # not enough free slots yet: keep running and retry at a later completion
        actions: list[Action] = []
        order = sorted(capacity, key=lambda j: (-capacity[j], j))
        queue = list(unfinished)
        for j in order:
            take, queue = queue[: capacity[j]], queue[capacity[j] :]
            if take:
                actions.append(Migrate(r, j, tuple(take)))
            if not queue:
                break
        self._cut.add(r)
        self._released.add(r)
        actions.append(Release(r))
        return actions

    def plan_inference(self, view: ClusterView, work: InferenceWork) -> InferencePlan:
        layout = self._inference_layout(view, work.roles)
        plans = tuple(RolePlan(role, (slots,)) for role, slots in layout)
        used = [s for _, slots in layout for s in slots]
        return InferencePlan(roles=plans, sequential=len(set(used)) < len(used))

    def plan_training(self, view: ClusterView, work: TrainingWork) -> TrainingPlan:
        slots = self._training_slots(view)
        prewarm: tuple = ()
        if self.p.prewarm and getattr(self, "_last_specs", None):
            # the next iteration's decode actors (as many as this one used) and its prefill actor, ready
            # when this training (last iteration's duration) and the weight sync are over
            wait = self._last_phase_s.get("training", 0.0) + self._last_phase_s.get("weight_sync", 0.0)
            mem = self.p.gpu_memory_utilization
            specs = self._last_specs
            costs = view.start_s("rollout", specs[0].tp, len(specs), specs[0].node) if specs else ()
            timed = [self._timed(view, "rollout", spec.slots, wait, mem, cost) for spec, cost in zip(specs, costs)]
            if self._last_prefill is not None:
                timed.append(self._timed(view, "prefill", self._last_prefill.slots, wait, mem))
            prewarm = tuple(pw for pw in timed if pw is not None)
        return TrainingPlan(groups={m: slots for m in work.models}, sequential=True, prewarm=prewarm)

    def on_iteration_end(self, stats: IterationStats) -> None:
        rest_s = sum(v for k, v in stats.phase_s.items() if k != "generation")
        if self._shortest_step_s is None or stats.duration_s < self._shortest_step_s:
            self._shortest_step_s = stats.duration_s
        self._rest = (rest_s, rest_s * self._gpus_last)
        self._last_phase_s = dict(stats.phase_s)
        if self._predicted_gen_s > 0:
            self._gen_scale = stats.phase_s["generation"] / self._predicted_gen_s
        self.predictor.update(stats.prompt_ids, stats.sample_prompt, stats.response_tokens.astype(np.float64))


@register
class Oracle(RLHFless):
    """RLHFless fed the true response lengths: the upper bound for prediction."""

    name = "oracle"
    oracle = True
