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

This module holds the order and the barriers; each phase's mechanism is its own module
(sim/phases/{startup,inference,streaming,training,weight_sync}.py, sim/rollout/phase.py).
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from sim.context import RunContext
from sim.phases.inference import cpu_reward, inference_roles, run_inference
from sim.phases.training import check_training_memory, run_training
from sim.phases.weight_sync import run_weight_sync
from sim.resources.leases import by_node
from sim.rollout.phase import FreedGpus, GenerationPhase
from sim.rollout.replica import SeqTable
from sim.schedulers.base import Scheduler
from sim.schedulers.views import ClusterView, InferenceWork, IterationStats, RolloutBatch, TrainingWork
from sim.workload import RolloutSamples, Workload

PHASES = ("generation", "inference", "training", "weight_sync")


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
        for part in by_node(tuple(want.slots)):
            fraction = want.gpu_memory_utilization or ctx.cfg.engine.gpu_memory_utilization or 0.9
            spec = ctx.roles.spec(want.role, len(part), len(want.slots), fraction)
            platform.prewarm(spec, part[0].node, part, want.after_s)


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
    freed: tuple[FreedGpus, ...] = ()
    for r, samples in enumerate(rounds):
        plan, table, stream, result = yield from _generate(ctx, scheduler, workload, i, r, samples, roles, view_at)
        freed = result.freed
        finish.append(np.asarray(table.finish_s))
        generated.append(np.asarray(table.generated, dtype=np.int64))
        rollout_tp = max(rollout_tp, max((s.tp for s in plan.replicas), default=1))
        if step is not None:  # the round's rewards decide which of its groups survive the filter
            yield from _score_round(ctx, scheduler, i, samples, view_at, freed)
    t1 = env.now
    rec.windows.append((i, "generation", t0, t1))
    rec.completion_s.append(np.concatenate(finish))
    rec.generated.append(np.concatenate(generated))
    if step is not None:
        freed = ()  # kept samples are known only now: no inference ran early on them
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
    elif roles and resp.size:  # (a dynamic-sampling step that kept no group has nothing to score)
        iplan = scheduler.plan_inference(view_at(i), work)
        yield from run_inference(ctx, i, iplan, work, freed)
    if not recipe.learned_reward and step is None:  # (dynamic sampling scored every round already)
        yield from cpu_reward(ctx, i, len(resp))
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
    check_training_memory(ctx, tplan, plan)
    # pre-warm after the trainer's instances asked for their GPUs: the trainers' processes start (their
    # first step asks) on SimPy's URGENT Initialize events, which run before this NORMAL zero timeout at
    # the same instant (simpy.events: events are ordered by time, then priority, then creation)
    env.timeout(0).callbacks.append(lambda _e: start_prewarm(ctx, tplan.prewarm))
    yield from run_training(ctx, i, tplan, twork)
    t3 = env.now
    rec.windows.append((i, "training", t2, t3))

    # ---------------------------------------------------------------- 4. weight sync
    yield from run_weight_sync(ctx, i, tplan, plan, rollout_tp)
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

    Returns (plan, sequence table, streaming inference or None, the round's GenerationResult)."""  # fmt: skip
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
    plan = scheduler.plan_generation(view_at(i), batch)
    if ctx.platform is not None:
        if plan.keep_alive_s is not None:
            ctx.platform.keep_alive_s = float(plan.keep_alive_s)
        if plan.sleep_idle is not None:
            ctx.platform.sleep_idle = bool(plan.sleep_idle)
    table = SeqTable(prompt_per_sample.tolist(), resp.tolist(), samples.sample_prompt.tolist())
    make_stream = None
    # with dynamic sampling no sample is known to train before its round is scored: no streaming
    if plan.streaming_inference is not None and roles and ctx.sampler is None:
        from sim.phases.streaming import StreamingInference

        splan, lengths = plan.streaming_inference, prompt_per_sample + resp
        make_stream = lambda: StreamingInference(ctx, i, splan, roles, lengths)  # noqa: E731
    gen = GenerationPhase(ctx, i, plan, table, scheduler, lambda: view_at(i), int(samples.template_tokens), make_stream)
    start_prewarm(ctx, plan.prewarm)  # after the rollout functions took their GPUs
    yield gen.done
    result = gen.finish()
    return plan, table, gen.stream, result


def _score_round(
    ctx: RunContext, scheduler: Scheduler, i: int, samples: RolloutSamples, view_at: Callable[[int], ClusterView], freed: tuple[FreedGpus, ...]
) -> Iterator:
    """Dynamic sampling: a round's rewards, before its groups are filtered (inside the generation window);
    a learned reward may be fused into the GPUs the round freed early."""
    resp = samples.response_tokens
    if ctx.recipe.scoring_roles:
        work = InferenceWork(i, ctx.recipe.scoring_roles, samples.prompt_tokens[samples.sample_prompt], resp)
        yield from run_inference(ctx, i, scheduler.plan_inference(view_at(i), work), work, freed, phase="generation")
    else:
        yield from cpu_reward(ctx, i, len(resp), phase="generation")
