"""One synchronous RL iteration (any recipe of sim/recipes.py) as SimPy processes: phases, barriers, weight sync.

Phases, in order, with a barrier between them (design.md section 1); a role the recipe does not have is
not run, not billed and not pre-warmed:
1. generation: the scheduler's replicas roll out every sample (`sim.rollout.phase`). With dynamic sampling
   (DAPO) the phase runs rounds: generate, score the round (a learned reward model on GPUs, or the
   rule-based reward on CPU), filter the groups whose rewards are all equal, and draw another round until
   the batch is full (`sim.rollout.dynamic_sampling`);
2. inference: forward passes over prompt + response of the training batch for each of the recipe's
   roles: the actor's old log-probs (unless skipped), the reference log-probs (when there is a KL term),
   the critic's values (PPO) and a learned reward model (if `reward_model` is set and the rounds did not
   score already; otherwise a rule-based reward on CPU);
3. training: `ppo_epochs x mini_batches` optimizer steps of the actor (and the critic for PPO), FSDP
   over the scheduler's GPUs;
4. weight sync: the new actor weights reach the rollout engines (an in-place reshard when colocated,
   a broadcast over the topology otherwise).
"""

from __future__ import annotations

from typing import Callable, Iterator

import simpy

import numpy as np

from sim.catalog import ModelSpec
from sim.rollout.replica import SeqTable
from sim.resources.leases import run_work
from sim.rollout.phase import GenerationPhase
from sim.hardware.memory import check_generation, check_training, fsdp_state_bytes
from sim.recording import RunContext
from sim.schedulers.base import (
    ClusterView,
    InferencePlan,
    InferenceWork,
    IterationStats,
    RolloutBatch,
    Scheduler,
    Slot,
    TrainingPlan,
    TrainingWork,
)
from sim.workload import RolloutSamples, Workload

#: rule-based reward (answer matching) per sample on a CPU worker, and the CPU workers doing it in
#: parallel; assumption (a regex/verifier call takes about a millisecond), docs/model.md
RULE_REWARD_S_PER_SAMPLE = 1e-3
RULE_REWARD_CPU_WORKERS = 32

PHASES = ("generation", "inference", "training", "weight_sync")


def inference_roles(ctx: RunContext) -> tuple[str, ...]:
    """The inference phase's roles: the recipe's (sim/recipes.py)."""
    return ctx.recipe.inference_roles


def role_model(ctx: RunContext, role: str) -> ModelSpec:
    return ctx.roles.model(role)


def start_prewarm(ctx: RunContext, specs) -> None:
    """Serverless: have the requested functions loaded for a later phase; serverful: nothing to do."""
    platform = ctx.platform
    if platform is None or not specs:
        return
    for want in specs:
        if want.role not in ctx.recipe.function_roles:
            raise ValueError(
                f"pre-warm of role {want.role!r}, which this run's recipe ({ctx.recipe.algorithm}) does not run; "
                f"its roles: {', '.join(ctx.recipe.function_roles)} (ClusterView.inference_roles, trained_models)"
            )
        for part in _by_node(tuple(want.slots)):
            fraction = want.gpu_memory_utilization or ctx.cfg.engine.gpu_memory_utilization or 0.9
            spec = ctx.roles.spec(want.role, len(part), len(want.slots), fraction)
            platform.prewarm(spec, part[0].node, part, want.after_s)


def startup_roles(ctx: RunContext) -> tuple[str, ...]:
    """The roles whose models a serverful job loads before its first iteration (the rollout engine takes
    its weights from the actor's FSDP module, and the actor's log-probs run on that module too)."""
    return ctx.recipe.startup_roles


def startup_s(ctx: RunContext) -> float:
    """A serverful job's start-up: container, each node reading every distinct model file once from the
    storage tier, each GPU copying its FSDP shards to GPU memory, then engine init (design.md section 1)."""
    cs, storage = ctx.cfg.platform.cold_start, ctx.cfg.platform.storage
    n = ctx.cluster.total_gpus
    specs = [ctx.roles.spec(role, 1, n) for role in startup_roles(ctx)]
    files = {spec.model.name: spec.model.weight_bytes for spec in specs}
    bandwidth = {"ssd": storage.ssd_bytes_per_s, "remote": storage.remote_bytes_per_s}.get(cs.weights_from)
    read = sum(files.values()) / bandwidth if bandwidth else 0.0  # weights_from dram: already in host memory
    copy = sum(spec.first_load_bytes for spec in specs) / ctx.cluster.host_bw
    return cs.container_s + read + copy + cs.engine_init_s


def run_startup(ctx: RunContext) -> Iterator:
    """Serverful: the start-up window before iteration 0 (every GPU held and billed, none busy)."""
    t0 = ctx.env.now
    duration = startup_s(ctx)
    if duration > 0:
        yield ctx.env.timeout(duration)
    ctx.recorder.windows.append((0, "startup", t0, ctx.env.now))


def split_even(n: int, parts: int) -> np.ndarray:
    """Part index per item for `parts` near-equal contiguous parts."""
    return (np.arange(n) * parts) // max(n, 1)


def run_iteration(
    ctx: RunContext, scheduler: Scheduler, workload: Workload, i: int, view_at: Callable[[int], ClusterView]
) -> Iterator:
    env, rec, recipe = ctx.env, ctx.recorder, ctx.recipe

    # ---------------------------------------------------------------- 1. generation (one round, or DAPO's rounds)
    t0 = env.now
    step = ctx.sampler.step(i) if ctx.sampler is not None else None
    rounds = step.rounds if step is not None else (workload.iteration(i),)
    roles = inference_roles(ctx)
    stream = None
    plan = None
    rollout_tp = 1
    finish, generated = [], []
    for r, samples in enumerate(rounds):
        plan, table, stream = yield from _generate(ctx, scheduler, workload, i, r, samples, roles, view_at)
        finish.append(np.asarray(table.finish_s))
        generated.append(np.asarray(table.generated, dtype=np.int64))
        rollout_tp = max(rollout_tp, max((s.tp for s in plan.replicas), default=1))
        if step is not None:  # the round's rewards decide which of its groups survive the filter
            yield from _score_round(ctx, scheduler, i, samples, view_at)
    t1 = env.now
    rec.windows.append((i, "generation", t0, t1))
    rec.completion_s.append(np.concatenate(finish))
    rec.generated.append(np.concatenate(generated))
    if step is not None:
        ctx.extras.pop("freed_gpus", None)  # kept samples are known only now: no inference ran early on them
        prompt_per_sample = np.concatenate([s.prompt_tokens[s.sample_prompt][u[s.sample_prompt]] for s, u in zip(rounds, step.used)])
        resp = np.concatenate([s.response_tokens[u[s.sample_prompt]] for s, u in zip(rounds, step.used)])
        rec.count(i, "generation", rounds=float(len(rounds)), samples=float(sum(s.response_tokens.size for s in rounds)),
                  groups_filtered=float(step.groups_filtered), short_steps=float(step.short))  # fmt: skip
    else:
        samples = rounds[0]
        prompt_per_sample = samples.prompt_tokens[samples.sample_prompt]
        resp = samples.response_tokens
    rec.count(i, "training", samples_trained=float(resp.size))

    # ---------------------------------------------------------------- 2. inference
    work = InferenceWork(i, roles, prompt_per_sample, resp)
    if stream is not None:  # started on each finished sample: drain what is left
        stream.close()
        yield stream.done
    elif roles:
        iplan = scheduler.plan_inference(view_at(i), work)
        yield from _run_inference(ctx, i, iplan, work)
    if not recipe.learned_reward and step is None:  # (dynamic sampling scored every round already)
        yield from _cpu_reward(ctx, i, len(resp))
    t2 = env.now
    rec.windows.append((i, "inference", t1, t2))

    # ---------------------------------------------------------------- 3. training
    seq_len = (prompt_per_sample + resp).astype(np.float64)
    twork = TrainingWork(
        iteration=i,
        models=recipe.trained_models,
        tokens=int(seq_len.sum()),
        attention_pairs=float((seq_len * seq_len / 2.0).sum()),
        ppo_epochs=ctx.cfg.workload.ppo_epochs,
        mini_batches=ctx.cfg.workload.mini_batches,
    )
    tplan = scheduler.plan_training(view_at(i), twork)
    _check_training_memory(ctx, tplan, plan)
    # after the trainer's instances took their GPUs (process start-up runs before a zero timeout)
    env.timeout(0).callbacks.append(lambda _e: start_prewarm(ctx, tplan.prewarm))
    yield from _run_training(ctx, i, tplan, twork)
    t3 = env.now
    rec.windows.append((i, "training", t2, t3))

    # ---------------------------------------------------------------- 4. weight sync
    yield from _run_weight_sync(ctx, i, tplan, plan, rollout_tp)
    t4 = env.now
    rec.windows.append((i, "weight_sync", t3, t4))

    offsets = np.cumsum([0] + [len(s.prompt_ids) for s in rounds])
    scheduler.on_iteration_end(
        IterationStats(
            iteration=i,
            epoch=rounds[0].epoch,
            prompt_ids=np.concatenate([s.prompt_ids for s in rounds]),
            sample_prompt=np.concatenate([s.sample_prompt + o for s, o in zip(rounds, offsets)]),
            response_tokens=np.concatenate([s.response_tokens for s in rounds]),
            duration_s=t4 - t0,
            phase_s={"generation": t1 - t0, "inference": t2 - t1, "training": t3 - t2, "weight_sync": t4 - t3},
            rounds=len(rounds),
        )
    )


def _generate(
    ctx: RunContext, scheduler: Scheduler, workload: Workload, i: int, r: int, samples: RolloutSamples,
    roles: tuple[str, ...], view_at: Callable[[int], ClusterView],
) -> Iterator:
    """One generation round: the scheduler's plan carried out until every sample has finished.

    Returns (plan, sequence table, streaming inference or None)."""  # fmt: skip
    prompt_per_sample = samples.prompt_tokens[samples.sample_prompt]
    resp = samples.response_tokens
    batch = RolloutBatch(
        iteration=i,
        epoch=samples.epoch,
        prompt_ids=samples.prompt_ids,
        prompt_tokens=samples.prompt_tokens,
        template_tokens=samples.template_tokens,
        sample_prompt=samples.sample_prompt,
        max_response_tokens=ctx.cfg.workload.max_response_tokens,
        default_response_tokens=workload.default_response_tokens,
        true_response_tokens=resp.copy() if scheduler.oracle else None,
        round=r,
    )
    ctx.extras["template_tokens"] = samples.template_tokens
    plan = scheduler.plan_generation(view_at(i), batch)
    if ctx.platform is not None:
        if plan.keep_alive_s is not None:
            ctx.platform.keep_alive_s = float(plan.keep_alive_s)
        if plan.sleep_idle is not None:
            ctx.platform.sleep_idle = bool(plan.sleep_idle)
    table = SeqTable(prompt_per_sample.tolist(), resp.tolist(), samples.sample_prompt.tolist())
    gen = GenerationPhase(ctx, i, plan, table, scheduler, lambda: view_at(i))
    stream = None
    # with dynamic sampling no sample is known to train before its round is scored: no streaming
    if plan.streaming_inference is not None and roles and ctx.sampler is None:
        from sim.phases.streaming import StreamingInference

        stream = gen.stream = StreamingInference(ctx, i, plan.streaming_inference, roles, prompt_per_sample + resp)
    start_prewarm(ctx, plan.prewarm)  # after the rollout functions took their GPUs
    yield gen.done
    gen.finish()
    return plan, table, stream


def _score_round(ctx: RunContext, scheduler: Scheduler, i: int, samples: RolloutSamples, view_at: Callable[[int], ClusterView]) -> Iterator:
    """Dynamic sampling: a round's rewards, before its groups are filtered (inside the generation window)."""
    resp = samples.response_tokens
    if ctx.recipe.scoring_roles:
        work = InferenceWork(i, ctx.recipe.scoring_roles, samples.prompt_tokens[samples.sample_prompt], resp)
        yield from _run_inference(ctx, i, scheduler.plan_inference(view_at(i), work), work, phase="generation")
    else:
        yield from _cpu_reward(ctx, i, len(resp), phase="generation")


# ------------------------------------------------------------------------------------------ inference
def _role_durations(ctx: RunContext, role: str, groups: tuple[tuple[Slot, ...], ...], assignment: np.ndarray | None, work: InferenceWork) -> list[tuple[tuple[Slot, ...], float]]:
    """(slots, busy seconds) per GPU for one role: samples split over groups, then evenly over each group's GPUs."""
    n = len(work.response_tokens)
    lengths = (work.prompt_tokens + work.response_tokens).astype(np.float64)
    if role == "reward" and ctx.reward is None:
        return []
    model = role_model(ctx, role)
    if assignment is None:
        assignment = split_even(n, len(groups))
    out = []
    for g, slots in enumerate(groups):
        mine = lengths[assignment == g]
        ring = ctx.cluster.ring_bandwidth_bytes_per_s(sorted({s.node for s in slots}))
        gather = ctx.perf.fsdp_allgather_s(model, len(slots), ring)
        part = split_even(len(mine), len(slots))
        tokens = np.bincount(part, weights=mine, minlength=len(slots))
        pairs = np.bincount(part, weights=mine * mine / 2.0, minlength=len(slots))
        for j, slot in enumerate(slots):
            compute = ctx.perf.forward_s(model, float(tokens[j]), float(pairs[j]), 1, float("inf"))
            out.append(((slot,), max(compute, gather)))
    return out


def _run_inference(ctx: RunContext, i: int, iplan: InferencePlan, work: InferenceWork, phase: str = "inference") -> Iterator:
    env, rec = ctx.env, ctx.recorder
    alloc = ctx.alloc
    planned = {rp.role for rp in iplan.roles}
    missing = [r for r in work.roles if r not in planned]
    if missing:
        raise ValueError(f"inference plan has no placement for role(s) {missing}")
    extra = sorted(planned - set(work.roles))
    if extra:
        raise ValueError(f"inference plan places role(s) {extra} that this work does not run (its roles: {list(work.roles)})")

    scale = 1.0
    freed = ctx.extras.pop("freed_gpus", [])
    if iplan.fuse_with_generation and freed and ctx.deployment == "serverful":
        # fluid approximation of sample-level fusion: GPU-seconds freed before generation ended are spent
        # on the inference of finished samples, and taken off this phase
        work_gpu_s = sum(d for rp in iplan.roles for _, d in _role_durations(ctx, rp.role, rp.groups, rp.assignment, work))
        freed_gpu_s = sum(len(slots) * (end - when) for slots, when, end, _ in freed)
        # only samples finished by the cut can be processed early
        done_at_cut = min(done for *_, done in freed)
        used = min(work_gpu_s * done_at_cut, freed_gpu_s)
        if work_gpu_s > 0:
            scale = 1.0 - used / work_gpu_s
            share = used / freed_gpu_s if freed_gpu_s else 0.0
            for slots, when, end, _ in freed:
                rec.busy(i, "generation", "fused_inference", slots, when, when + (end - when) * share)
    stages = [[rp] for rp in iplan.roles] if iplan.sequential else [list(iplan.roles)]
    for stage in stages:
        procs = []
        for rp in stage:
            per_gpu = _role_durations(ctx, rp.role, rp.groups, rp.assignment, work)
            k = 0
            for group in rp.groups:
                # a group runs as one unit (an FSDP group, or one function instance per node it spans)
                durs = [d * scale for _, d in per_gpu[k : k + len(group)]]
                k += len(group)
                for part in _by_node(group):
                    spec = ctx.roles.spec(rp.role, len(part), len(group))
                    dur = max(durs, default=0.0)
                    procs.append(env.process(run_work(env, alloc, rec, i, phase, spec, part, dur)))
        if procs:
            yield env.all_of(procs)


def _cpu_reward(ctx: RunContext, i: int, samples: int, phase: str = "inference") -> Iterator:
    """A rule-based reward (no reward model) is computed on CPU after the GPU roles, before the advantages."""
    cpu = samples * RULE_REWARD_S_PER_SAMPLE / RULE_REWARD_CPU_WORKERS
    ctx.recorder.count(i, phase, cpu_reward_s=cpu)
    if cpu > 0:
        yield ctx.env.timeout(cpu)


def _by_node(slots: tuple[Slot, ...]) -> list[tuple[Slot, ...]]:
    """Split a GPU group into per-node parts (a function instance never spans nodes)."""
    parts: dict[int, list[Slot]] = {}
    for s in slots:
        parts.setdefault(s.node, []).append(s)
    return [tuple(p) for p in parts.values()]


# ------------------------------------------------------------------------------------------ training
def _training_models(ctx: RunContext) -> dict[str, ModelSpec]:
    out = {"actor": ctx.actor}
    if ctx.critic is not None and ctx.recipe.critic:
        out["critic"] = ctx.critic
    return out


def _check_training_memory(ctx: RunContext, tplan: TrainingPlan, gplan) -> None:
    tcfg = ctx.cfg.training
    models = _training_models(ctx)
    per_slot: dict[Slot, float] = {}
    for name, slots in tplan.groups.items():
        model = models.get(name)
        if model is None:
            raise ValueError(f"training plan names model {name!r}; this run trains {sorted(models)}")
        need = check_training(model, ctx.gpu, len(slots), tcfg.micro_batch_tokens, tcfg.activation_checkpointing, tcfg.offload)
        if not need.fits:
            raise need.error()
        for s in slots:
            per_slot[s] = per_slot.get(s, 0.0) + (0.0 if tcfg.offload else fsdp_state_bytes(model, len(slots)))
    if tplan.colocated_rollout and not tcfg.offload:
        # colocated: training state (and the reference weights) stay resident while the rollout engine runs
        ref_bytes = ctx.reference.weight_bytes / max(len(next(iter(tplan.groups.values()))), 1) if ctx.reference is not None else 0.0
        for spec in gplan.replicas:
            resident = max(per_slot.get(s, 0.0) for s in spec.slots) + ref_bytes
            fraction = ctx.cfg.engine.gpu_memory_utilization or spec.gpu_memory_utilization
            need = check_generation(ctx.actor, ctx.gpu, spec.tp, fraction, 1, resident)
            if not need.fits:
                raise need.error()


def _run_training(ctx: RunContext, i: int, tplan: TrainingPlan, work: TrainingWork) -> Iterator:
    env, rec = ctx.env, ctx.recorder
    models = _training_models(ctx)
    order = [m for m in ("critic", "actor") if m in tplan.groups]  # verl updates the critic first
    missing = [m for m in work.models if m not in tplan.groups]
    if missing:
        raise ValueError(f"training plan has no GPUs for {missing}")
    steps = work.ppo_epochs * work.mini_batches
    tokens_step = work.tokens / work.mini_batches
    pairs_step = work.attention_pairs / work.mini_batches
    step_s, extra_s = {}, {}
    for name in order:
        slots = tplan.groups[name]
        model = models[name]
        ring = ctx.cluster.ring_bandwidth_bytes_per_s(sorted({s.node for s in slots}))
        step_s[name] = ctx.perf.train_step_s(model, tokens_step, pairs_step, len(slots), ring, ctx.cfg.training.activation_checkpointing)
        # offloaded states are reloaded before the update and offloaded after it
        extra_s[name] = 2 * ctx.cluster.host_to_gpu_s(fsdp_state_bytes(model, len(slots))) if ctx.cfg.training.offload else 0.0
    if tplan.sequential:
        for name in order:
            yield env.process(_train_model(ctx, i, name, models[name], tplan.groups[name], steps, step_s[name], extra_s[name]))
    else:
        yield env.all_of([env.process(_train_model(ctx, i, n, models[n], tplan.groups[n], steps, step_s[n], extra_s[n])) for n in order])
    rec.count(i, "training", tokens=float(work.tokens), optimizer_steps=float(steps * len(order)))


def _train_model(ctx: RunContext, i: int, name: str, model: ModelSpec, slots: tuple[Slot, ...], steps: int, step_s: float, extra_s: float) -> Iterator:
    """FSDP training of one model: one instance per node of its group; a crash of any part retries the step in flight.

    Each part's lease gets its crash handler the moment it is granted, and only crashed parts are
    requested again, so a part that crashes while another is still starting is replaced, never leaked.
    """
    env, rec = ctx.env, ctx.recorder
    alloc = ctx.alloc
    parts = _by_node(slots)
    specs = [ctx.roles.spec(f"{name}_trainer", len(p), len(slots)) for p in parts]
    leases: list = [None] * len(parts)
    pending: list = [None] * len(parts)
    me = env.active_process
    running = {"on": False}

    def granted(k: int, ev) -> None:
        pending[k] = None
        lease = ev.value
        leases[k] = lease
        alloc.on_crash(lease, lambda _inst, k=k: crashed(k))
        if all(x is not None for x in leases) and not running["on"] and me.is_alive and ctx.env.active_process is not me:
            me.interrupt("ready")

    def crashed(k: int) -> None:
        leases[k] = None
        request(k)
        if running["on"] and me.is_alive and ctx.env.active_process is not me:
            me.interrupt("crash")

    def request(k: int) -> None:
        if pending[k] is not None:
            return
        ev = pending[k] = alloc.acquire(specs[k], parts[k])
        if ev.triggered:
            granted(k, ev)
        else:
            ev.callbacks.append(lambda e, k=k: granted(k, e))

    for k in range(len(parts)):
        request(k)
    done = 0
    reloaded = False
    while done < steps or (extra_s and not reloaded):
        if any(x is None for x in leases):
            try:
                yield env.event()  # wait (interrupted when every part is granted)
            except simpy.Interrupt:
                pass
            continue
        running["on"] = True
        start = env.now
        held = list(leases)
        try:
            if extra_s and not reloaded:
                yield env.timeout(extra_s)
                reloaded = True
            while done < steps:
                yield env.timeout(step_s)
                done += 1
        except simpy.Interrupt:  # a part crashed: the step in flight is lost
            rec.count(i, "training", retries=1.0)
        running["on"] = False
        for lease in held:
            rec.busy(i, "training", name, lease.slots, start, env.now, lease.owner)
    for lease in leases:
        alloc.on_crash(lease, None)
        alloc.end(lease)
    if ctx.platform is not None and name == "critic":
        # the critic's new weights wait in the trainer node's host memory for the next value pass
        ctx.platform.publish("critic", model, parts[0][0].node, model.weight_bytes)


# ------------------------------------------------------------------------------------------ weight sync
def _run_weight_sync(ctx: RunContext, i: int, tplan: TrainingPlan, gplan, rollout_tp: int) -> Iterator:
    env, rec = ctx.env, ctx.recorder
    trainer = tplan.groups["actor"]
    actor_bytes = ctx.actor.weight_bytes
    src = trainer[0].node
    platform = ctx.platform
    owners: list[tuple[tuple[Slot, ...], str]] = []
    if tplan.colocated_rollout:
        # hybrid engine: each GPU gathers its rollout TP shard from the FSDP shards of the whole group
        ring = ctx.cluster.ring_bandwidth_bytes_per_s(sorted({s.node for s in trainer}))
        n = len(trainer)
        reshard = actor_bytes / rollout_tp * (n - 1) / n / (ring * ctx.cluster.network_efficiency) if n > 1 else 0.0
        dur = tplan.mode_switch_s + reshard
        owners = [(trainer, "")]
    elif platform is not None:
        # serverless: the learner writes the new weights to its node's host memory (later loads fetch
        # them from there) and pushes them to the resident instances that serve the actor's weights;
        # sleeping ones fetch them when they wake
        # the learner's first node gathers the full state dict (FSDP rank 0) and writes it to its host memory
        trainers = {inst.node for inst in platform.instances if inst.role == "actor_trainer" and inst.state != "released"}
        src = src if (src in trainers or not trainers) else min(trainers)
        platform.publish("actor", ctx.actor, src, actor_bytes)
        warm = platform.push("actor")
        dur = ctx.cluster.host_to_gpu_s(actor_bytes / max(len(trainer), 1))
        for node in sorted({inst.node for inst in warm}):
            dur = max(dur, ctx.cluster.gpu_transfer_s(src, node, actor_bytes))
        owners = [(inst.slots, inst.instance_id) for inst in warm]
    else:
        # one copy crosses the network to each replica node, then fans out inside the node
        nodes = sorted({s.node for spec in gplan.replicas for s in spec.slots})
        dur = 0.0
        for node in nodes:
            dur = max(dur, ctx.cluster.gpu_transfer_s(src, node, actor_bytes))
        owners = [(tuple(dict.fromkeys(tuple(s for spec in gplan.replicas for s in spec.slots) + tuple(trainer))), "")]
    if dur > 0:
        for slots, owner in owners:
            rec.busy(i, "weight_sync", "weight_sync", slots, env.now, env.now + dur, owner)
        yield env.timeout(dur)
    rec.count(i, "weight_sync", bytes=float(actor_bytes))
