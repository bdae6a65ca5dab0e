"""The training phase: `ppo_epochs x mini_batches` optimizer steps of each trained model (the actor, and
the critic for PPO), FSDP over the scheduler's GPUs, one function instance per node of a group.

Memory is checked before the phase (training state per GPU; with a colocated rollout engine, that state
stays resident beside the engine's weights and KV cache). A crash of any part of a group loses the step in
flight (sim/resources/leases.py `GroupHold`). The step time is the performance model's (sim/perf/).
"""

from __future__ import annotations

from typing import Iterator

import simpy

from sim.catalog import ModelSpec
from sim.context import RunContext
from sim.hardware.memory import check_generation, check_training, fsdp_state_bytes
from sim.resources.leases import GroupHold, by_node
from sim.schedulers.plans import TrainingPlan
from sim.schedulers.views import Slot, TrainingWork


def training_models(ctx: RunContext) -> dict[str, ModelSpec]:
    out = {"actor": ctx.actor}
    if ctx.critic is not None and ctx.recipe.critic:
        out["critic"] = ctx.critic
    return out


def check_training_memory(ctx: RunContext, tplan: TrainingPlan, gplan) -> None:
    tcfg = ctx.cfg.training
    models = training_models(ctx)
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


def run_training(ctx: RunContext, i: int, tplan: TrainingPlan, work: TrainingWork) -> Iterator:
    env, rec = ctx.env, ctx.recorder
    models = training_models(ctx)
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
            yield env.process(train_model(ctx, i, name, models[name], tplan.groups[name], steps, step_s[name], extra_s[name]))
    else:
        yield env.all_of([env.process(train_model(ctx, i, n, models[n], tplan.groups[n], steps, step_s[n], extra_s[n])) for n in order])
    rec.count(i, "training", tokens=float(work.tokens), optimizer_steps=float(steps * len(order)))


def train_model(ctx: RunContext, i: int, name: str, model: ModelSpec, slots: tuple[Slot, ...], steps: int, step_s: float, extra_s: float) -> Iterator:
    """FSDP training of one model: one instance per node of its group (`GroupHold`); a crash of any part
    loses the step in flight, which runs again once every part is held."""
    env, rec = ctx.env, ctx.recorder
    parts = by_node(slots)
    specs = [ctx.roles.spec(f"{name}_trainer", len(p), len(slots)) for p in parts]
    group = GroupHold(env, ctx.alloc, specs, parts)
    done = 0
    reloaded = False
    while done < steps or (extra_s and not reloaded):
        yield from group.wait()
        group.running = True
        start = env.now
        held = group.leases
        try:
            if extra_s and not reloaded:
                yield env.timeout(extra_s)
                reloaded = True
            while done < steps:
                yield env.timeout(step_s)
                done += 1
        except simpy.Interrupt:  # a part crashed: the step in flight is lost
            rec.count(i, "training", retries=1.0)
        group.running = False
        for lease in held:
            rec.busy(i, "training", name, lease.slots, start, env.now, lease.owner)
    group.end()
    if ctx.platform is not None and name == "critic":
        # the critic's new weights wait in the trainer node's host memory for the next value pass
        ctx.platform.publish("critic", model, parts[0][0].node, model.weight_bytes)
