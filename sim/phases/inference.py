"""The inference phase: forward passes of each of the recipe's roles over the training batch, on the
scheduler's groups, plus the rule-based reward on CPU; optionally fused into GPUs generation freed early.

The samples are split evenly over a role's groups (or by the plan's assignment) and over each group's
GPUs; a group runs as one unit (an FSDP group, one function instance per node it spans) and its parts
retry after a crash (sim/resources/leases.py `run_work`). Inference that starts on each finished sample
during generation is sim/phases/streaming.py.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from sim.catalog import ModelSpec
from sim.context import RunContext
from sim.resources.leases import by_node, run_work
from sim.rollout.phase import FreedGpus
from sim.schedulers.plans import InferencePlan
from sim.schedulers.views import InferenceWork, Slot

#: rule-based reward (answer matching) per sample on a CPU worker, and the CPU workers doing it in
#: parallel; assumption (a regex/verifier call takes about a millisecond), docs/model.md
RULE_REWARD_S_PER_SAMPLE = 1e-3
RULE_REWARD_CPU_WORKERS = 32



def inference_roles(ctx: RunContext) -> tuple[str, ...]:
    """The inference phase's roles: the recipe's (sim/recipes.py)."""
    return ctx.recipe.inference_roles


def role_model(ctx: RunContext, role: str) -> ModelSpec:
    return ctx.roles.model(role)


def split_even(n: int, parts: int) -> np.ndarray:
    """Part index per item for `parts` near-equal contiguous parts."""
    return (np.arange(n) * parts) // max(n, 1)


def role_durations(ctx: RunContext, role: str, groups: tuple[tuple[Slot, ...], ...], assignment: np.ndarray | None, work: InferenceWork) -> list[tuple[tuple[Slot, ...], float]]:
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


def run_inference(
    ctx: RunContext, i: int, iplan: InferencePlan, work: InferenceWork, freed: tuple[FreedGpus, ...] = (), phase: str = "inference"
) -> Iterator:
    """The inference plan's roles on their groups; `freed`: GPUs the last generation round released early
    (fused into with `fuse_with_generation`, serverful only)."""
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
    if iplan.fuse_with_generation and freed and ctx.deployment == "serverful":
        # fluid approximation of sample-level fusion: GPU-seconds freed before generation ended are spent
        # on the inference of finished samples, and taken off this phase
        work_gpu_s = sum(d for rp in iplan.roles for _, d in role_durations(ctx, rp.role, rp.groups, rp.assignment, work))
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
            per_gpu = role_durations(ctx, rp.role, rp.groups, rp.assignment, work)
            k = 0
            for group in rp.groups:
                # a group runs as one unit (an FSDP group, or one function instance per node it spans)
                durs = [d * scale for _, d in per_gpu[k : k + len(group)]]
                k += len(group)
                for part in by_node(group):
                    spec = ctx.roles.spec(rp.role, len(part), len(group))
                    dur = max(durs, default=0.0)
                    procs.append(env.process(run_work(env, alloc, rec, i, phase, spec, part, dur)))
        if procs:
            yield env.all_of(procs)


def cpu_reward(ctx: RunContext, i: int, samples: int, phase: str = "inference") -> Iterator:
    """A rule-based reward (no reward model) is computed on CPU after the GPU roles, before the advantages."""
    cpu = samples * RULE_REWARD_S_PER_SAMPLE / RULE_REWARD_CPU_WORKERS
    ctx.recorder.count(i, phase, cpu_reward_s=cpu)
    if cpu > 0:
        yield ctx.env.timeout(cpu)
