"""A serverful job's start-up before iteration 0: container, reading each model file from storage, copying
FSDP shards to GPU memory, engine init (design.md section 1; docs/model.md).

Serverless start-ups are per function instance and live in the platform (sim/resources/platform.py).
"""

from __future__ import annotations

from typing import Iterator

from sim.context import RunContext


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
