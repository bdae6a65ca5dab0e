"""The weight sync phase: the new actor weights reach the rollout engines before the next iteration.

Three paths (docs/model.md): colocated (hybrid engine) each GPU gathers its rollout tensor-parallel shard
from the FSDP shards of the group over the ring (plus the plan's mode switch); serverless, the learner
writes the weights to its node's host memory and pushes them to the resident instances that serve them
(sleeping ones fetch on wake); serverful on separate GPUs, one copy crosses the network to each replica
node and fans out inside it. Transfer times come from the cluster's topology (sim/hardware/cluster.py).
"""

from __future__ import annotations

from typing import Iterator

from sim.context import RunContext
from sim.schedulers.plans import TrainingPlan
from sim.schedulers.views import Slot


def run_weight_sync(ctx: RunContext, i: int, tplan: TrainingPlan, gplan, rollout_tp: int) -> Iterator:
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
